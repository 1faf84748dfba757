"""The stdlib OCI builder: reproducible busybox layer, manifest/index shape, annotations, applet links.

Reads the host's /bin/busybox (busybox-static), which the builder packs into the layer.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from common.hostsvc.ociimage import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    BUSYBOX_REF,
    MEDIA_CONFIG,
    MEDIA_LAYER,
    MEDIA_MANIFEST,
    PAUSE_ENTRYPOINT,
    PAUSE_REF,
    BuiltImage,
    build_busybox_image,
    build_image,
    build_pause_image,
    busybox_layer,
    ref_tag,
)
from common.hostsvc.process import HostServiceError
from tests.fixtures.paths import require_binary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _host_busybox() -> None:
    require_binary("busybox")


def _read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _blob(files: dict[str, bytes], digest: str) -> bytes:
    data = files[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def _image_parts(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bytes]:
    """(index, manifest, config, layer) of an archive, each blob checked against its digest."""
    files = _read_archive(path)
    index = json.loads(files["index.json"])
    manifest = json.loads(_blob(files, index["manifests"][0]["digest"]))
    config = json.loads(_blob(files, manifest["config"]["digest"]))
    layer = _blob(files, manifest["layers"][0]["digest"])
    return index, manifest, config, layer


def test_layer_digest_is_reproducible_across_processes() -> None:
    script = "from common.hostsvc.ociimage import busybox_layer; import hashlib; "
    script += "print(hashlib.sha256(busybox_layer()).hexdigest())"
    other = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    uncached = busybox_layer.__wrapped__()
    assert hashlib.sha256(uncached).hexdigest() == other
    assert busybox_layer() == uncached


def test_archives_are_byte_identical_when_rebuilt(tmp_path: Path) -> None:
    first = build_busybox_image(tmp_path / "a.tar")
    second = build_busybox_image(tmp_path / "b.tar")
    assert first.manifest_digest == second.manifest_digest
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_archive_has_oci_layout_index_and_every_blob(tmp_path: Path) -> None:
    image = build_busybox_image(tmp_path / "busybox.oci.tar")
    files = _read_archive(image.path)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    blobs = {name for name in files if name.startswith("blobs/sha256/")}
    digests = {image.manifest_digest, image.config_digest, image.layer_digest}
    assert blobs == {f"blobs/sha256/{d.removeprefix('sha256:')}" for d in digests}


def test_index_entry_carries_platform_and_both_name_annotations(tmp_path: Path) -> None:
    image = build_busybox_image(tmp_path / "busybox.oci.tar")
    index, _, _, _ = _image_parts(image.path)
    assert index["schemaVersion"] == 2
    (entry,) = index["manifests"]
    assert entry["mediaType"] == MEDIA_MANIFEST
    assert entry["digest"] == image.manifest_digest
    assert entry["platform"]["os"] == "linux"
    assert entry["platform"]["architecture"] in ("amd64", "arm64")
    assert entry["annotations"] == {ANNOTATION_IMAGE_NAME: BUSYBOX_REF, ANNOTATION_REF_NAME: "1.0"}


def test_manifest_and_config_describe_one_uncompressed_layer(tmp_path: Path) -> None:
    image = build_busybox_image(tmp_path / "busybox.oci.tar")
    _, manifest, config, layer = _image_parts(image.path)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == MEDIA_MANIFEST
    assert manifest["config"]["mediaType"] == MEDIA_CONFIG
    (layer_desc,) = manifest["layers"]
    assert layer_desc == {"mediaType": MEDIA_LAYER, "digest": image.layer_digest, "size": len(layer)}
    assert config["os"] == "linux"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [image.layer_digest]}
    assert config["config"]["Cmd"] == ["sh"]
    assert "Entrypoint" not in config["config"]
    assert config["config"]["WorkingDir"] == "/"
    assert any(e.startswith("PATH=") and "/bin" in e for e in config["config"]["Env"])


def test_pause_image_shares_the_layer_and_sleeps_until_term(tmp_path: Path) -> None:
    busybox = build_busybox_image(tmp_path / "busybox.oci.tar")
    pause = build_pause_image(tmp_path / "pause.oci.tar")
    index, _, config, _ = _image_parts(pause.path)
    assert pause.layer_digest == busybox.layer_digest
    assert pause.manifest_digest != busybox.manifest_digest
    assert config["config"]["Entrypoint"] == list(PAUSE_ENTRYPOINT)
    assert "trap 'exit 0' TERM INT" in config["config"]["Entrypoint"][2]
    assert index["manifests"][0]["annotations"][ANNOTATION_IMAGE_NAME] == PAUSE_REF


def test_layer_holds_busybox_dirs_accounts_and_applet_symlinks() -> None:
    with tarfile.open(fileobj=io.BytesIO(busybox_layer())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        busybox = tar.extractfile(members["bin/busybox"])
        assert busybox is not None
        assert busybox.read() == Path("/bin/busybox").read_bytes()
        passwd = tar.extractfile(members["etc/passwd"])
        assert passwd is not None
        assert passwd.read().startswith(b"root:x:0:0:")
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members.values())
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert members["root"].mode == 0o700
    assert "etc/group" in members
    links = {name: m for name, m in members.items() if m.issym()}
    applets = subprocess.run(
        ["/bin/busybox", "--list-full"], capture_output=True, text=True, timeout=10, check=True
    ).stdout.split()
    assert set(links) == set(applets) - {"bin/busybox"}  # the binary itself, not a link to itself
    assert {"bin/sh", "usr/bin/env", "bin/ping"} <= set(links)
    assert {m.linkname for m in links.values()} == {"/bin/busybox"}


def test_generic_build_image_sets_entrypoint_cmd_env_workdir(tmp_path: Path) -> None:
    image: BuiltImage = build_image(
        tmp_path / "app.tar",
        "docker.io/local/app",
        entrypoint=["/bin/sh", "-c"],
        cmd=["echo hi"],
        env=["PATH=/bin", "MODE=test"],
        workdir="/tmp",
    )
    index, _, config, _ = _image_parts(image.path)
    assert config["config"] == {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hi"],
        "Env": ["PATH=/bin", "MODE=test"],
        "WorkingDir": "/tmp",
    }
    assert index["manifests"][0]["annotations"][ANNOTATION_REF_NAME] == "latest"


@pytest.mark.parametrize(
    ("ref", "tag"),
    [("docker.io/local/busybox:1.0", "1.0"), ("localhost:5000/app", "latest"), ("app:v2", "v2")],
)
def test_ref_tag(ref: str, tag: str) -> None:
    assert ref_tag(ref) == tag


def test_dynamic_busybox_is_refused() -> None:
    with pytest.raises(HostServiceError, match="not a static"):
        busybox_layer.__wrapped__(sys.executable)
