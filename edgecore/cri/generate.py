"""Compile edgecore/cri/proto/api.proto on first use and load the CRI message classes from the result.

The compiled form is a protobuf *descriptor set* (what protoc's `--descriptor_set_out` writes), not
generated `*_pb2.py` modules. The message classes are then built at run time in a private descriptor
pool, which is exactly what a generated `_pb2.py` does when imported. Doing it this way means:

- nothing generated is committed, and nothing is generated at install time, so `pip install -e .`
  needs no build hook and an edited .proto takes effect on the next start;
- no generated module has to be put on `sys.path` or imported by name, no gencode/runtime version check
  can fail after a protobuf upgrade, and the file name `api.proto` never clashes with another
  `api.proto` in protobuf's global pool.

The output file name holds a hash of the .proto bytes, so "stale" simply means "not there": a changed
.proto gets a new file and the old ones are pruned. protoc (grpcio-tools) writes into a private
temporary directory next to the target, and the file is renamed into place, so parallel processes
(pytest-xdist workers, an edgecore and a test) never read a half-written file; when several compile at
once, each rename installs identical bytes.

`python -m edgecore.cri.generate` compiles ahead of time (for instance in an image whose package
directory is read-only at run time) and prints the path.
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
PACKAGE: Final = "runtime.v1"
SERVICES: Final = ("RuntimeService", "ImageService")
PROTOC_TIMEOUT: Final = 60.0
# Part of the cache key: bump it when the way the descriptor set is produced changes.
_FORMAT: Final = b"kubeedge-py cri descriptor set v1"
_PROTO_NAME: Final = "api.proto"
_PREFIX: Final = "api-"
_SUFFIX: Final = ".binpb"
_WORK_PREFIX: Final = ".protoc-"
# A work directory this old belongs to a process that died mid-compile (protoc takes ~0.1 s).
_STALE_WORK_AGE: Final = 3600.0


class CRIProtoError(KubeEdgeError):
    """The CRI proto could not be compiled or loaded; the text says why and what to do."""


def proto_key(source: bytes) -> str:
    """The cache key of a .proto's bytes (16 hex digits)."""
    return hashlib.sha256(_FORMAT + b"\0" + source).hexdigest()[:16]


def descriptor_file_name(source: bytes) -> str:
    return f"{_PREFIX}{proto_key(source)}{_SUFFIX}"


def default_cache_dirs() -> list[Path]:
    """Where compiled descriptor sets live, in order of preference.

    The package's own `_generated/` directory comes first (the source tree in an editable install;
    git-ignored). The per-user cache is the fallback when the package directory is read-only.
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    user_cache = Path(xdg) if xdg else Path.home() / ".cache"
    return [Path(__file__).resolve().parent / "_generated", user_cache / "kubeedge-py" / "cri"]


def ensure_descriptor_set(proto: Path = PROTO, cache_dirs: Sequence[Path] | None = None) -> Path:
    """The path of the compiled descriptor set for `proto`'s current bytes, compiling it if missing."""
    try:
        source = proto.read_bytes()
    except OSError as exc:
        raise CRIProtoError(f"cannot read the CRI proto {proto}: {exc}") from exc
    name = descriptor_file_name(source)
    dirs = list(cache_dirs) if cache_dirs is not None else default_cache_dirs()
    for directory in dirs:
        if (directory / name).is_file():
            return directory / name
    failures = []
    for directory in dirs:
        try:
            return _compile(source, directory, name)
        except OSError as exc:
            # An unwritable directory: try the next one. protoc failures are CRIProtoError and propagate.
            failures.append(f"{directory}: {exc}")
    raise CRIProtoError("cannot write the compiled CRI proto anywhere: " + "; ".join(failures))


def _protoc_argv(work: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={work}",
            f"--descriptor_set_out={out}", _PROTO_NAME]


def _compile(source: bytes, directory: Path, name: str) -> Path:
    if importlib.util.find_spec("grpc_tools") is None:
        raise CRIProtoError(
            "grpcio-tools is needed to compile edgecore/cri/proto/api.proto on first use "
            "(it is a dependency of kubeedge-py: reinstall with `pip install -e .`), "
            "or run `python -m edgecore.cri.generate` where it is installed"
        )
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    with tempfile.TemporaryDirectory(dir=directory, prefix=_WORK_PREFIX) as work_dir:
        work = Path(work_dir)
        # protoc compiles a private copy, so the key always matches the bytes compiled even if the
        # .proto is edited meanwhile.
        (work / _PROTO_NAME).write_bytes(source)
        out = work / "out.binpb"
        try:
            done = subprocess.run(_protoc_argv(work, out), capture_output=True, text=True,
                                  timeout=PROTOC_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise CRIProtoError(f"protoc did not finish within {PROTOC_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise CRIProtoError(f"protoc failed on the CRI proto (rc {done.returncode}): "
                                f"{(done.stderr or done.stdout).strip()}")
        _check(out.read_bytes())
        # Same directory, so the rename is atomic: readers see no file or the whole file.
        os.replace(out, target)
    _prune(directory, keep=name)
    return target


def _check(data: bytes) -> descriptor_pb2.FileDescriptorSet:
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(data)
    except DecodeError as exc:
        raise CRIProtoError(f"the compiled CRI proto is not a descriptor set: {exc}") from exc
    packages = [f.package for f in files.file]
    if packages != [PACKAGE]:
        raise CRIProtoError(f"the CRI proto must be one file in package {PACKAGE}, got packages {packages}")
    return files


def _prune(directory: Path, keep: str) -> None:
    """Remove descriptor sets of other .proto versions and work directories of dead compiles.

    Best effort: a file another process removes first, or one we may not remove, is left alone.
    """
    now = time.time()
    for entry in directory.iterdir():
        with contextlib.suppress(OSError):
            if entry.name.startswith(_PREFIX) and entry.name.endswith(_SUFFIX) and entry.name != keep:
                entry.unlink()
            elif entry.name.startswith(_WORK_PREFIX) and now - entry.stat().st_mtime > _STALE_WORK_AGE:
                shutil.rmtree(entry, ignore_errors=True)


@dataclass(frozen=True)
class Method:
    """One CRI RPC: its gRPC path and the classes of its request and response."""

    service: str
    name: str
    path: str
    request: Any
    response: Any


@dataclass(frozen=True)
class CRIProto:
    """The loaded CRI proto: message classes by short name and the RPCs of both services."""

    messages: dict[str, Any]
    methods: dict[str, Method]

    def message(self, name: str) -> Any:
        try:
            return self.messages[name]
        except KeyError:
            raise CRIProtoError(f"message {PACKAGE}.{name} is not in edgecore/cri/proto/api.proto") from None


def build_protocol(data: bytes) -> CRIProto:
    """Message classes and RPCs from a serialized descriptor set, in a private descriptor pool."""
    files = _check(data)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.AddSerializedFile(file.SerializeToString())
    messages = {}
    for file in files.file:
        for message in file.message_type:
            descriptor = pool.FindMessageTypeByName(f"{PACKAGE}.{message.name}")
            messages[message.name] = message_factory.GetMessageClass(descriptor)
    methods = {}
    for service in SERVICES:
        try:
            service_descriptor = pool.FindServiceByName(f"{PACKAGE}.{service}")
        except KeyError:
            raise CRIProtoError(f"service {PACKAGE}.{service} is missing from the CRI proto") from None
        for method in service_descriptor.methods:
            methods[method.name] = Method(
                service=service, name=method.name, path=f"/{PACKAGE}.{service}/{method.name}",
                request=messages[method.input_type.name], response=messages[method.output_type.name])
    return CRIProto(messages=messages, methods=methods)


@functools.cache
def load_protocol() -> CRIProto:
    """The CRI protocol of this installation, compiled on the first call of the process."""
    path = ensure_descriptor_set()
    try:
        return build_protocol(path.read_bytes())
    except (CRIProtoError, OSError):
        # A damaged or vanished cache file: compile again once, then let the error through.
        with contextlib.suppress(OSError):
            path.unlink()
        return build_protocol(ensure_descriptor_set().read_bytes())


def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        print("usage: python -m edgecore.cri.generate   (compiles the CRI proto, prints the path)",
              file=sys.stderr)
        return 2
    try:
        path = ensure_descriptor_set()
        build_protocol(path.read_bytes())
    except CRIProtoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
