"""Compile edgecore/dmi/proto/api.proto on first use and load the DMI message classes and RPCs from it.

The same approach as edgecore/cri/generate.py (read its docstring for the why): protoc from grpcio-tools
writes a descriptor set (here with `--include_imports`, for google/protobuf/any.proto) named by a hash of
the .proto bytes into `edgecore/dmi/_generated/` (or `~/.cache/kubeedge-py/dmi/` when the package directory
is read-only), renamed into place so parallel processes never read half a file; the classes are built in a
private descriptor pool. Nothing generated is committed or built at install time: `_generated/` ignores itself
in git (it writes its own `.gitignore`). `python -m edgecore.dmi.generate` compiles ahead of time.

This module never opens a socket; edgecore/dmi/server.py and pusher.py use what it loads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from common.errors import KubeEdgeError

PROTO: Final = Path(__file__).resolve().parent / "proto" / "api.proto"
PACKAGE: Final = "v1beta1"
MANAGER_SERVICE: Final = "DeviceManagerService"  # served by edgecore
MAPPER_SERVICE: Final = "DeviceMapperService"  # served by each mapper
SERVICES: Final = (MANAGER_SERVICE, MAPPER_SERVICE)
PROTOC_TIMEOUT: Final = 60.0
# Part of the cache key: bump it when the way the descriptor set is produced changes.
_FORMAT: Final = b"kubeedge-py dmi descriptor set v1"
_PROTO_NAME: Final = "api.proto"
_IMPORTED_PACKAGES: Final = frozenset({"google.protobuf"})
_PREFIX: Final = "api-"
_SUFFIX: Final = ".binpb"
_WORK_PREFIX: Final = ".protoc-"
_STALE_WORK_AGE: Final = 3600.0  # a work directory this old belongs to a process that died mid-compile


class DMIProtoError(KubeEdgeError):
    """The DMI proto could not be compiled or loaded; the text says why and what to do."""


def descriptor_file_name(source: bytes) -> str:
    key = hashlib.sha256(_FORMAT + b"\0" + source).hexdigest()[:16]
    return f"{_PREFIX}{key}{_SUFFIX}"


def default_cache_dirs() -> list[Path]:
    xdg = os.environ.get("XDG_CACHE_HOME")
    user_cache = Path(xdg) if xdg else Path.home() / ".cache"
    return [Path(__file__).resolve().parent / "_generated", user_cache / "kubeedge-py" / "dmi"]


def ensure_descriptor_set(proto: Path = PROTO, cache_dirs: Sequence[Path] | None = None) -> Path:
    """The compiled descriptor set for `proto`'s current bytes, compiling it if missing."""
    try:
        source = proto.read_bytes()
    except OSError as exc:
        raise DMIProtoError(f"cannot read the DMI proto {proto}: {exc}") from exc
    name = descriptor_file_name(source)
    dirs = list(cache_dirs) if cache_dirs is not None else default_cache_dirs()
    for directory in dirs:
        if (directory / name).is_file():
            return directory / name
    failures = []
    for directory in dirs:
        try:
            return _compile(source, directory, name)
        except OSError as exc:  # unwritable: try the next directory; protoc failures propagate
            failures.append(f"{directory}: {exc}")
    raise DMIProtoError("cannot write the compiled DMI proto anywhere: " + "; ".join(failures))


def _compile(source: bytes, directory: Path, name: str) -> Path:
    if importlib.util.find_spec("grpc_tools") is None:
        raise DMIProtoError("grpcio-tools is needed to compile edgecore/dmi/proto/api.proto on first use "
                            "(a dependency of kubeedge-py: reinstall with `pip install -e .`)")
    directory.mkdir(parents=True, exist_ok=True)
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    with tempfile.TemporaryDirectory(dir=directory, prefix=_WORK_PREFIX) as work_dir:
        work = Path(work_dir)
        (work / _PROTO_NAME).write_bytes(source)  # a private copy: the key always matches what was compiled
        out = work / "out.binpb"
        # `python -m grpc_tools.protoc` adds the include path of the well-known protos (any.proto) itself.
        argv = [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={work}", "--include_imports",
                f"--descriptor_set_out={out}", _PROTO_NAME]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROTOC_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise DMIProtoError(f"protoc did not finish within {PROTOC_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise DMIProtoError(f"protoc failed on the DMI proto (rc {done.returncode}): "
                                f"{(done.stderr or done.stdout).strip()}")
        _check(out.read_bytes())
        os.replace(out, directory / name)  # same directory: atomic
    _prune(directory, keep=name)
    return directory / name


def _check(data: bytes) -> descriptor_pb2.FileDescriptorSet:
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(data)
    except DecodeError as exc:
        raise DMIProtoError(f"the compiled DMI proto is not a descriptor set: {exc}") from exc
    own = [f.package for f in files.file if f.package not in _IMPORTED_PACKAGES]
    if own != [PACKAGE]:
        raise DMIProtoError(f"the DMI proto must be one file in package {PACKAGE}, got packages {own}")
    return files


def _prune(directory: Path, keep: str) -> None:
    """Remove descriptor sets of other .proto versions and work directories of dead compiles (best effort)."""
    now = time.time()
    for entry in directory.iterdir():
        with contextlib.suppress(OSError):
            if entry.name.startswith(_PREFIX) and entry.name.endswith(_SUFFIX) and entry.name != keep:
                entry.unlink()
            elif entry.name.startswith(_WORK_PREFIX) and now - entry.stat().st_mtime > _STALE_WORK_AGE:
                shutil.rmtree(entry, ignore_errors=True)


@dataclass(frozen=True)
class Method:
    """One DMI RPC: its service, gRPC path and the classes of its request and response."""

    service: str
    name: str
    path: str
    request: Any
    response: Any


@dataclass(frozen=True)
class DMIProto:
    """The loaded DMI proto: message classes by short name, and the RPCs of both services by name."""

    messages: dict[str, Any]
    methods: dict[str, Method]

    def message(self, name: str) -> Any:
        try:
            return self.messages[name]
        except KeyError:
            raise DMIProtoError(f"message {PACKAGE}.{name} is not in edgecore/dmi/proto/api.proto") from None

    def service_methods(self, service: str) -> list[Method]:
        return [m for m in self.methods.values() if m.service == service]


def build_protocol(data: bytes) -> DMIProto:
    """Message classes and RPCs from a serialized descriptor set, in a private descriptor pool."""
    files = _check(data)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:  # --include_imports lists dependencies first
        pool.AddSerializedFile(file.SerializeToString())
    messages = {}
    for file in files.file:
        if file.package != PACKAGE:
            continue
        for message in file.message_type:
            descriptor = pool.FindMessageTypeByName(f"{PACKAGE}.{message.name}")
            messages[message.name] = message_factory.GetMessageClass(descriptor)
    messages["Any"] = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.protobuf.Any"))
    methods = {}
    for service in SERVICES:
        try:
            service_descriptor = pool.FindServiceByName(f"{PACKAGE}.{service}")
        except KeyError:
            raise DMIProtoError(f"service {PACKAGE}.{service} is missing from the DMI proto") from None
        for method in service_descriptor.methods:
            methods[method.name] = Method(
                service=service, name=method.name, path=f"/{PACKAGE}.{service}/{method.name}",
                request=messages[method.input_type.name], response=messages[method.output_type.name])
    return DMIProto(messages=messages, methods=methods)


@functools.cache
def load_protocol() -> DMIProto:
    """The DMI protocol of this installation, compiled on the first call of the process."""
    path = ensure_descriptor_set()
    try:
        return build_protocol(path.read_bytes())
    except (DMIProtoError, OSError):
        with contextlib.suppress(OSError):  # a damaged or vanished cache file: compile once more
            path.unlink()
        return build_protocol(ensure_descriptor_set().read_bytes())


def main(argv: Iterable[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv):
        print("usage: python -m edgecore.dmi.generate   (compiles the DMI proto, prints the path)", file=sys.stderr)
        return 2
    try:
        path = ensure_descriptor_set()
        build_protocol(path.read_bytes())
    except DMIProtoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
