"""Compile edgecore/cri/proto/api.proto on first use and load the CRI message classes from the result.

The machinery, and the why of it, is edgecore/protoc.py: protoc from grpcio-tools writes a descriptor set
named by a hash of the .proto bytes into `edgecore/cri/_generated/` (or `~/.cache/kubeedge-py/cri/` when the
package directory is read-only), renamed into place so parallel processes never read half a file; the classes
are built in a private descriptor pool. `python -m edgecore.cri.generate` compiles ahead of time (for instance
in an image whose package directory is read-only at run time) and prints the path.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Final

from common.errors import KubeEdgeError
from edgecore.protoc import PROTOC_TIMEOUT, LoadedProto, Method, ProtoLoader

__all__ = ["PACKAGE", "PROTO", "PROTOC_TIMEOUT", "SERVICES", "CRIProto", "CRIProtoError", "Method",
           "build_protocol", "default_cache_dirs", "descriptor_file_name", "ensure_descriptor_set",
           "load_protocol", "main", "proto_key"]

PROTO: Final = Path(__file__).resolve().parent / "proto" / "api.proto"
PACKAGE: Final = "runtime.v1"
SERVICES: Final = ("RuntimeService", "ImageService")


class CRIProtoError(KubeEdgeError):
    """The CRI proto could not be compiled or loaded; the text says why and what to do."""


class CRIProto(LoadedProto):
    """The loaded CRI proto: message classes by short name and the RPCs of both services."""


_LOADER: Final = ProtoLoader(name="cri", proto=PROTO, package=PACKAGE, services=SERVICES,
                             format_tag=b"kubeedge-py cri descriptor set v1", error=CRIProtoError, protocol=CRIProto)

proto_key = _LOADER.proto_key
descriptor_file_name = _LOADER.descriptor_file_name
default_cache_dirs = _LOADER.default_cache_dirs
ensure_descriptor_set = _LOADER.ensure_descriptor_set
build_protocol = _LOADER.build_protocol
load_protocol = functools.cache(_LOADER.load_protocol)  # compiled on the first call of the process
main = _LOADER.main

if __name__ == "__main__":
    sys.exit(main())
