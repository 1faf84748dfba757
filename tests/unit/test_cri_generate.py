"""edgecore.cri.generate: the CRI proto compiled once per content, atomically, and loaded in a private pool."""

from __future__ import annotations

import importlib.util
import multiprocessing
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edgecore.cri import generate
from edgecore.cri.generate import (
    PROTO,
    CRIProtoError,
    build_protocol,
    descriptor_file_name,
    ensure_descriptor_set,
    load_protocol,
)


@pytest.fixture
def proto(tmp_path: Path) -> Path:
    copy = tmp_path / "src" / "api.proto"
    copy.parent.mkdir()
    copy.write_bytes(PROTO.read_bytes())
    return copy


def cache_listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_compiles_once_into_a_file_named_by_the_content(proto: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    path = ensure_descriptor_set(proto, [cache])
    assert path == cache / descriptor_file_name(proto.read_bytes())
    assert cache_listing(cache) == [path.name]  # no work directory left behind
    assert "RunPodSandboxRequest" in build_protocol(path.read_bytes()).messages

    def no_protoc(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("protoc must not run again for an unchanged proto")

    monkeypatch.setattr(subprocess, "run", no_protoc)
    assert ensure_descriptor_set(proto, [cache]) == path


def test_a_changed_proto_gets_a_new_file_and_the_old_is_pruned(proto: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = ensure_descriptor_set(proto, [cache])
    proto.write_text(proto.read_text() + "\nmessage Extra {\n    string note = 1;\n}\n")
    new = ensure_descriptor_set(proto, [cache])
    assert new != old and cache_listing(cache) == [new.name]
    assert "Extra" in build_protocol(new.read_bytes()).messages


def test_an_unwritable_cache_falls_back_to_the_next(proto: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = ensure_descriptor_set(proto, [blocker / "cache", tmp_path / "second"])
    assert path.parent == tmp_path / "second"


def test_no_writable_cache_is_a_clear_error(proto: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CRIProtoError, match="cannot write the compiled CRI proto"):
        ensure_descriptor_set(proto, [blocker / "one", blocker / "two"])


def test_a_broken_proto_reports_protoc_and_leaves_nothing(proto: Path, tmp_path: Path) -> None:
    proto.write_text(proto.read_text() + "\nmessage Broken { strin oops = 1; }\n")
    cache = tmp_path / "cache"
    with pytest.raises(CRIProtoError, match=r"protoc failed.*strin"):
        ensure_descriptor_set(proto, [cache])
    assert cache_listing(cache) == []


def test_a_missing_proto_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CRIProtoError, match="cannot read the CRI proto"):
        ensure_descriptor_set(tmp_path / "nope.proto", [tmp_path])


def test_without_grpcio_tools_the_error_says_what_to_install(
    proto: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grpc_tools" else real(name, *a))
    with pytest.raises(CRIProtoError, match="grpcio-tools"):
        ensure_descriptor_set(proto, [tmp_path / "cache"])


def test_parallel_processes_all_get_the_one_complete_file(proto: Path, tmp_path: Path) -> None:
    """What pytest-xdist workers do on a fresh checkout: compile at the same moment into one directory."""
    cache = tmp_path / "cache"
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = list(pool.map(ensure_descriptor_set, [proto] * 8, [[cache]] * 8))
    assert len(set(paths)) == 1
    assert cache_listing(cache) == [paths[0].name]
    assert "ExecSyncResponse" in build_protocol(paths[0].read_bytes()).messages


def test_a_descriptor_of_another_package_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "src" / "api.proto"
    other.parent.mkdir()
    other.write_text('syntax = "proto3";\npackage other.v1;\nmessage M { string s = 1; }\n')
    with pytest.raises(CRIProtoError, match=r"package runtime\.v1"):
        ensure_descriptor_set(other, [tmp_path / "cache"])  # protoc is happy; the check is not
    assert cache_listing(tmp_path / "cache") == []
    with pytest.raises(CRIProtoError, match="not a descriptor set"):
        build_protocol(b"\xff\xff\xff")


def test_the_installed_protocol_loads_in_a_private_pool() -> None:
    from google.protobuf import descriptor_pool

    proto = load_protocol()
    assert load_protocol() is proto  # once per process
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("runtime.v1.PodSandboxConfig")
    with pytest.raises(CRIProtoError, match=r"not in edgecore/cri/proto/api\.proto"):
        proto.message("UpdateContainerResourcesRequest")


def test_the_command_line_prints_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main([]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.name == descriptor_file_name(PROTO.read_bytes()) and printed.is_file()
    assert generate.main(["--bogus"]) == 2
