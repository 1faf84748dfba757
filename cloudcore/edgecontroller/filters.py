"""Rewrites of objects on their way to edge nodes (pure).

`default/kubernetes` EndpointSlice: edge pods with in-cluster config must reach the edge's MetaServer,
not an API server the edge may not route to. As upstream's defaultMaster filter: only the first endpoint
with its first address is kept, the address becomes 127.0.0.1 and the port named `https` 10550 (the
MetaServer's). The Endpoints object is left as it is, as upstream does. Applied on both paths to the
edge: the edgecontroller's pushes and the dynamiccontroller's answers and watch events (as upstream's
dynamiccontroller filter does). The node-group endpoint filter (endpointfilter.py) runs before this one,
per receiving node; this rewrite is the same for every node, so the last result is kept per
resourceVersion instead of copied again for each node.
"""

from __future__ import annotations

import copy
from typing import Final

from cloudcore.edgecontroller.kinds import ENDPOINTSLICE, Kind, Object, name_of, namespace_of

METASERVER_ADDRESS: Final = "127.0.0.1"
METASERVER_PORT: Final = 10550
_MASTER: Final = ("default", "kubernetes")


_last_rewrite: list[tuple[Object, Object]] = []  # (input, rewritten) of the last master rewrite


def for_edge(kind: Kind, obj: Object) -> Object:
    """The object as edge nodes should receive it (the same object when nothing applies)."""
    if kind.plural == ENDPOINTSLICE.plural and kind.group == ENDPOINTSLICE.group and \
            (namespace_of(obj), name_of(obj)) == _MASTER:
        if _last_rewrite and _last_rewrite[0][0] is obj:
            return _last_rewrite[0][1]
        rewritten = _to_metaserver(obj)
        _last_rewrite[:] = [(obj, rewritten)]
        return rewritten
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
