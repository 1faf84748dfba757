"""Compile edgecore/dmi/proto/api.proto on first use and load the DMI message classes and RPCs from it.

The machinery, and the why of it, is edgecore/protoc.py: protoc from grpcio-tools writes a descriptor set
(here with `--include_imports`, for google/protobuf/any.proto) named by a hash of the .proto bytes into
`edgecore/dmi/_generated/` (or `~/.cache/kubeedge-py/dmi/` when the package directory is read-only), renamed
into place so parallel processes never read half a file; the classes are built in a private descriptor pool.
Nothing generated is committed or built at install time: `_generated/` ignores itself in git (it writes its
own `.gitignore`). `python -m edgecore.dmi.generate` compiles ahead of time and prints the path. This module
never opens a socket; edgecore/dmi/server.py and pusher.py use what it loads.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Final

from common.errors import KubeEdgeError
from edgecore.protoc import PROTOC_TIMEOUT, LoadedProto, Method, ProtoLoader

__all__ = ["MANAGER_SERVICE", "MAPPER_SERVICE", "PACKAGE", "PROTO", "PROTOC_TIMEOUT", "SERVICES", "DMIProto",
           "DMIProtoError", "Method", "build_protocol", "default_cache_dirs", "descriptor_file_name",
           "ensure_descriptor_set", "load_protocol", "main"]

PROTO: Final = Path(__file__).resolve().parent / "proto" / "api.proto"
PACKAGE: Final = "v1beta1"
MANAGER_SERVICE: Final = "DeviceManagerService"  # served by edgecore
MAPPER_SERVICE: Final = "DeviceMapperService"  # served by each mapper
SERVICES: Final = (MANAGER_SERVICE, MAPPER_SERVICE)


class DMIProtoError(KubeEdgeError):
    """The DMI proto could not be compiled or loaded; the text says why and what to do."""


class DMIProto(LoadedProto):
    """The loaded DMI proto: message classes by short name (and "Any"), and the RPCs of both services by name."""


_LOADER: Final = ProtoLoader(name="dmi", proto=PROTO, package=PACKAGE, services=SERVICES,
                             format_tag=b"kubeedge-py dmi descriptor set v1", error=DMIProtoError, protocol=DMIProto,
                             include_imports=True, imported_packages=frozenset({"google.protobuf"}),
                             extra_messages=(("Any", "google.protobuf.Any"),), gitignore=True)

descriptor_file_name = _LOADER.descriptor_file_name
default_cache_dirs = _LOADER.default_cache_dirs
ensure_descriptor_set = _LOADER.ensure_descriptor_set
build_protocol = _LOADER.build_protocol
load_protocol = functools.cache(_LOADER.load_protocol)  # compiled on the first call of the process
main = _LOADER.main

if __name__ == "__main__":
    sys.exit(main())
