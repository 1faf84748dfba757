"""Compile a .proto on first use with protoc and load its message classes and RPCs from the result.

edgecore/cri/generate.py (CRI) and edgecore/dmi/generate.py (DMI) each describe their proto with one
`ProtoLoader` and expose its methods under their own names.

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
once, each rename installs identical bytes. The file goes to the package's `_generated/` directory (the
source tree in an editable install), or to `~/.cache/kubeedge-py/<name>/` when that is read-only.

`python -m edgecore.<name>.generate` compiles ahead of time (for instance in an image whose package
directory is read-only at run time) and prints the path. This module never opens a socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from common.errors import KubeEdgeError

PROTOC_TIMEOUT: Final = 60.0
_PROTO_NAME: Final = "api.proto"
_PREFIX: Final = "api-"
_SUFFIX: Final = ".binpb"
_WORK_PREFIX: Final = ".protoc-"
# A work directory this old belongs to a process that died mid-compile (protoc takes ~0.1 s).
_STALE_WORK_AGE: Final = 3600.0


@dataclass(frozen=True)
class Method:
    """One RPC: its service, gRPC path and the classes of its request and response."""

    service: str
    name: str
    path: str
    request: Any
    response: Any


@dataclass(frozen=True)
class LoadedProto:
    """A loaded proto: message classes by short name, and the RPCs of its services by name."""

    messages: dict[str, Any]
    methods: dict[str, Method]
    loader: ProtoLoader[Any] = field(repr=False, compare=False)

    def message(self, name: str) -> Any:
        try:
            return self.messages[name]
        except KeyError:
            raise self.loader.error(f"message {self.loader.package}.{name} is not in {self.loader.label}") from None

    def service_methods(self, service: str) -> list[Method]:
        return [m for m in self.methods.values() if m.service == service]


P = TypeVar("P", bound=LoadedProto)


@dataclass(frozen=True)
class ProtoLoader(Generic[P]):
    """How to compile and load one .proto; `name` ("cri", "dmi") is its package under edgecore/.

    `proto` lives in `<package>/proto/`; the first cache directory is `<package>/_generated/`.

    `include_imports` puts the imported files (e.g. google/protobuf/any.proto) into the descriptor set;
    their packages are listed in `imported_packages`, and `extra_messages` (short name, full name) adds
    message classes of theirs to `messages`. `gitignore` writes a `.gitignore` of `*` into each cache
    directory. Bump `format_tag` (part of the cache key) when the way the descriptor set is produced changes.
    """

    name: str
    proto: Path
    package: str
    services: tuple[str, ...]
    format_tag: bytes
    error: type[KubeEdgeError]
    protocol: type[P]
    include_imports: bool = False
    imported_packages: frozenset[str] = frozenset()
    extra_messages: tuple[tuple[str, str], ...] = ()
    gitignore: bool = False

    @property
    def label(self) -> str:
        return f"edgecore/{self.name}/proto/api.proto"

    @property
    def what(self) -> str:
        return f"the {self.name.upper()} proto"

    @property
    def command(self) -> str:
        return f"python -m edgecore.{self.name}.generate"

    def proto_key(self, source: bytes) -> str:
        """The cache key of a .proto's bytes (16 hex digits)."""
        return hashlib.sha256(self.format_tag + b"\0" + source).hexdigest()[:16]

    def descriptor_file_name(self, source: bytes) -> str:
        return f"{_PREFIX}{self.proto_key(source)}{_SUFFIX}"

    def default_cache_dirs(self) -> list[Path]:
        """Where compiled descriptor sets live, in order of preference.

        The package's own `_generated/` directory comes first (the source tree in an editable install;
        git-ignored). The per-user cache is the fallback when the package directory is read-only.
        """
        xdg = os.environ.get("XDG_CACHE_HOME")
        user_cache = Path(xdg) if xdg else Path.home() / ".cache"
        return [self.proto.parent.parent / "_generated", user_cache / "kubeedge-py" / self.name]

    def ensure_descriptor_set(self, proto: Path | None = None, cache_dirs: Sequence[Path] | None = None) -> Path:
        """The path of the compiled descriptor set for `proto`'s current bytes, compiling it if missing."""
        proto = self.proto if proto is None else proto
        try:
            source = proto.read_bytes()
        except OSError as exc:
            raise self.error(f"cannot read {self.what} {proto}: {exc}") from exc
        name = self.descriptor_file_name(source)
        dirs = list(cache_dirs) if cache_dirs is not None else self.default_cache_dirs()
        for directory in dirs:
            if (directory / name).is_file():
                return directory / name
        failures = []
        for directory in dirs:
            try:
                return self._compile(source, directory, name)
            except OSError as exc:
                # An unwritable directory: try the next one. protoc failures are self.error and propagate.
                failures.append(f"{directory}: {exc}")
        raise self.error(f"cannot write the compiled {self.name.upper()} proto anywhere: " + "; ".join(failures))

    def _protoc_argv(self, work: Path, out: Path) -> list[str]:
        # `python -m grpc_tools.protoc` adds the include path of the well-known protos (any.proto) itself.
        imports = ["--include_imports"] if self.include_imports else []
        return [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={work}", *imports,
                f"--descriptor_set_out={out}", _PROTO_NAME]

    def _compile(self, source: bytes, directory: Path, name: str) -> Path:
        if importlib.util.find_spec("grpc_tools") is None:
            raise self.error(
                f"grpcio-tools is needed to compile {self.label} on first use "
                "(it is a dependency of kubeedge-py: reinstall with `pip install -e .`), "
                f"or run `{self.command}` where it is installed"
            )
        directory.mkdir(parents=True, exist_ok=True)
        if self.gitignore and not (directory / ".gitignore").exists():
            (directory / ".gitignore").write_text("*\n")
        target = directory / name
        with tempfile.TemporaryDirectory(dir=directory, prefix=_WORK_PREFIX) as work_dir:
            work = Path(work_dir)
            # protoc compiles a private copy, so the key always matches the bytes compiled even if the
            # .proto is edited meanwhile.
            (work / _PROTO_NAME).write_bytes(source)
            out = work / "out.binpb"
            try:
                done = subprocess.run(self._protoc_argv(work, out), capture_output=True, text=True,
                                      timeout=PROTOC_TIMEOUT, check=False)
            except subprocess.TimeoutExpired:
                raise self.error(f"protoc did not finish within {PROTOC_TIMEOUT:.0f} s") from None
            if done.returncode != 0:
                raise self.error(f"protoc failed on {self.what} (rc {done.returncode}): "
                                 f"{(done.stderr or done.stdout).strip()}")
            self._check(out.read_bytes())
            # Same directory, so the rename is atomic: readers see no file or the whole file.
            os.replace(out, target)
        _prune(directory, keep=name)
        return target

    def _check(self, data: bytes) -> descriptor_pb2.FileDescriptorSet:
        try:
            files = descriptor_pb2.FileDescriptorSet.FromString(data)
        except DecodeError as exc:
            raise self.error(f"the compiled {self.name.upper()} proto is not a descriptor set: {exc}") from exc
        own = [f.package for f in files.file if f.package not in self.imported_packages]
        if own != [self.package]:
            raise self.error(f"{self.what} must be one file in package {self.package}, got packages {own}")
        return files

    def build_protocol(self, data: bytes) -> P:
        """Message classes and RPCs from a serialized descriptor set, in a private descriptor pool."""
        files = self._check(data)
        pool = descriptor_pool.DescriptorPool()
        for file in files.file:  # --include_imports lists dependencies first
            pool.AddSerializedFile(file.SerializeToString())
        messages = {}
        for file in files.file:
            if file.package != self.package:
                continue
            for message in file.message_type:
                descriptor = pool.FindMessageTypeByName(f"{self.package}.{message.name}")
                messages[message.name] = message_factory.GetMessageClass(descriptor)
        for short, full in self.extra_messages:
            messages[short] = message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
        methods = {}
        for service in self.services:
            try:
                service_descriptor = pool.FindServiceByName(f"{self.package}.{service}")
            except KeyError:
                raise self.error(f"service {self.package}.{service} is missing from {self.what}") from None
            for method in service_descriptor.methods:
                methods[method.name] = Method(
                    service=service, name=method.name, path=f"/{self.package}.{service}/{method.name}",
                    request=messages[method.input_type.name], response=messages[method.output_type.name])
        return self.protocol(messages=messages, methods=methods, loader=self)

    def load_protocol(self) -> P:
        """The protocol of this installation, compiling it if missing (the callers cache it per process)."""
        path = self.ensure_descriptor_set()
        try:
            return self.build_protocol(path.read_bytes())
        except (self.error, OSError):
            # A damaged or vanished cache file: compile again once, then let the error through.
            with contextlib.suppress(OSError):
                path.unlink()
            return self.build_protocol(self.ensure_descriptor_set().read_bytes())

    def main(self, argv: Iterable[str] | None = None) -> int:
        """`python -m edgecore.<name>.generate`: compile ahead of time and print the path."""
        if list(sys.argv[1:] if argv is None else argv):
            print(f"usage: {self.command}   (compiles {self.what}, prints the path)", file=sys.stderr)
            return 2
        try:
            path = self.ensure_descriptor_set()
            self.build_protocol(path.read_bytes())
        except self.error as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(path)
        return 0


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
