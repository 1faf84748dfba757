"""Rewrites of objects on their way to edge nodes (pure).

`default/kubernetes` EndpointSlice: edge pods with in-cluster config must reach the edge's MetaServer,
not an API server the edge may not route to. As upstream's defaultMaster filter: only the first endpoint
with its first address is kept, the address becomes 127.0.0.1 and the port named `https` 10550 (the
MetaServer's). The Endpoints object is left as it is, as upstream does.
"""

from __future__ import annotations

import copy
from typing import Final

from cloudcore.edgecontroller.kinds import ENDPOINTSLICE, Kind, Object, name_of, namespace_of

METASERVER_ADDRESS: Final = "127.0.0.1"
METASERVER_PORT: Final = 10550
_MASTER: Final = ("default", "kubernetes")


def for_edge(kind: Kind, obj: Object) -> Object:
    """The object as edge nodes should receive it (the same object when nothing applies)."""
    if kind is ENDPOINTSLICE and (namespace_of(obj), name_of(obj)) == _MASTER:
        return _to_metaserver(obj)
    return obj


def _to_metaserver(slice_: Object) -> Object:
    rewritten = copy.deepcopy(slice_)
    endpoints = rewritten.get("endpoints") or []
    if endpoints:
        first = endpoints[0]
        first["addresses"] = [METASERVER_ADDRESS]
        rewritten["endpoints"] = [first]
    for port in rewritten.get("ports") or []:
        if port.get("name") == "https":
            port["port"] = METASERVER_PORT
    return rewritten
