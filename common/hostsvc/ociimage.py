"""Stdlib-only builder of the local OCI image archives that containerd imports (no registry needed).

This module owns the image format: one reproducible, uncompressed busybox layer (PAX tar, mtime 0,
uid/gid 0, the host's static /bin/busybox plus one symlink per applet), an image config, an OCI v1
manifest, and an `oci-layout` + `index.json` archive whose annotations make `ctr images import`
create the full reference (`io.containerd.image.name`). It never uses the network or a registry, and
never lets host details (times, owners, file order) into the bytes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import platform
import struct
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.hostsvc.process import HostServiceError

BUSYBOX_REF = "docker.io/local/busybox:1.0"
PAUSE_REF = "docker.io/local/pause:1.0"
HOST_BUSYBOX = "/bin/busybox"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PAUSE_ENTRYPOINT = ("/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done")

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

_DIRS: tuple[tuple[str, int], ...] = (
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("root", 0o700),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("run", 0o755),
    ("proc", 0o755),
    ("sys", 0o755),
    ("dev", 0o755),
)
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnobody:x:65534:\n"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class BuiltImage:
    """Where an archive was written and the digests it holds."""

    ref: str
    path: Path
    manifest_digest: str
    config_digest: str
    layer_digest: str


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _is_static_elf(data: bytes) -> bool:
    """True for an ELF64 little-endian executable without a PT_INTERP (dynamic loader) header."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    pt_interp = 3
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != pt_interp for i in range(phnum))


def _applets(busybox: str) -> list[str]:
    try:
        out = subprocess.run(
            [busybox, "--list-full"], capture_output=True, check=True, timeout=10, text=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise HostServiceError(f"`{busybox} --list-full` failed: {exc}") from exc
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()} - {"bin/busybox"})


def _tar_member(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


@functools.cache
def busybox_layer(busybox: str = HOST_BUSYBOX) -> bytes:
    """The uncompressed rootfs layer; byte-identical for the same host busybox (cached per process)."""
    binary = Path(busybox).read_bytes()
    if not _is_static_elf(binary):
        raise HostServiceError(f"{busybox} is not a static ELF64 binary: install busybox-static")
    applets = _applets(busybox)
    dirs = dict(_DIRS)
    for applet in applets:
        parent = os.path.dirname(applet)
        while parent and parent not in dirs:
            dirs[parent] = 0o755
            parent = os.path.dirname(parent)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs):
            tar.addfile(_tar_member(name, tarfile.DIRTYPE, dirs[name]))
        tar.addfile(_tar_member("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), io.BytesIO(binary))
        for name, content in (("etc/passwd", _PASSWD), ("etc/group", _GROUP)):
            tar.addfile(_tar_member(name, tarfile.REGTYPE, 0o644, len(content)), io.BytesIO(content))
        for applet in applets:
            tar.addfile(_tar_member(applet, tarfile.SYMTYPE, 0o777, linkname="/bin/busybox"))
    return buf.getvalue()


def ref_tag(ref: str) -> str:
    """The tag of an image reference (`docker.io/local/busybox:1.0` -> `1.0`), `latest` if none."""
    name = ref.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[1] if ":" in name else "latest"


def _write_archive(out: Path, blobs: dict[str, bytes], index: bytes) -> None:
    """Write the OCI layout tar atomically (temp file + rename), reproducibly (sorted, mtime 0)."""
    entries = [("oci-layout", _canonical_json({"imageLayoutVersion": "1.0.0"})), ("index.json", index)]
    entries += [(f"blobs/sha256/{digest.split(':', 1)[1]}", data) for digest, data in sorted(blobs.items())]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in ("blobs", "blobs/sha256"):
                tar.addfile(_tar_member(name, tarfile.DIRTYPE, 0o755))
            for name, data in entries:
                tar.addfile(_tar_member(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def build_image(
    out: Path,
    ref: str,
    *,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Sequence[str] = (DEFAULT_PATH_ENV,),
    workdir: str = "/",
) -> BuiltImage:
    """Write an OCI archive of the busybox layer with the given process config to `out`."""
    layer = busybox_layer()
    layer_digest = _digest(layer)
    arch = _ARCH.get(platform.machine(), platform.machine())
    process: dict[str, Any] = {"Env": list(env), "WorkingDir": workdir}
    if entrypoint is not None:
        process["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        process["Cmd"] = list(cmd)
    config = _canonical_json(
        {
            "architecture": arch,
            "os": "linux",
            "config": process,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    )
    manifest = _canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
    )
    index = _canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {ANNOTATION_IMAGE_NAME: ref, ANNOTATION_REF_NAME: ref_tag(ref)},
                }
            ],
        }
    )
    blobs = {layer_digest: layer, _digest(config): config, _digest(manifest): manifest}
    _write_archive(out, blobs, index)
    return BuiltImage(
        ref=ref,
        path=out,
        manifest_digest=_digest(manifest),
        config_digest=_digest(config),
        layer_digest=layer_digest,
    )


def build_busybox_image(out_path: Path, ref: str = BUSYBOX_REF) -> BuiltImage:
    """The general-purpose image: `sh` as Cmd."""
    return build_image(out_path, ref, cmd=["sh"])


def build_pause_image(out_path: Path, ref: str = PAUSE_REF) -> BuiltImage:
    """The sandbox (pause) image: same layer, an entrypoint that sleeps until TERM/INT."""
    return build_image(out_path, ref, entrypoint=PAUSE_ENTRYPOINT)
