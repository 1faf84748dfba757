"""Resource strings: how a message names the object it carries (ref/protocol.md section 2.1).

Inside cloudcore: `node/<node>/<namespace>/<type>[/<name>]` (devices: `node/<node>/<type>[/<id>]`).
On the wire the cloud strips `node/<node>/`, so the edge sees `<namespace>/<type>[/<name>]`; going up,
the edge sends that short form and the cloud adds the prefix from the connection's node identity.
Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from common.errors import ResourceError

NODE_PREFIX: Final = "node"
_SEP: Final = "/"


@dataclass(frozen=True, slots=True)
class EdgeResource:
    """`<namespace>/<type>[/<name>]`, as the edge sends and receives it."""

    namespace: str
    type: str
    name: str = ""

    def __str__(self) -> str:
        return build_edge_resource(self.namespace, self.type, self.name)


@dataclass(frozen=True, slots=True)
class CloudResource:
    """`node/<node>/<namespace>/<type>[/<name>]`, as modules inside cloudcore address it."""

    node: str
    namespace: str
    type: str
    name: str = ""

    def __str__(self) -> str:
        return build_resource(self.node, self.namespace, self.type, self.name)

    def edge_form(self) -> EdgeResource:
        return EdgeResource(self.namespace, self.type, self.name)


def build_resource(node: str, namespace: str, resource_type: str, name: str = "") -> str:
    """Cloud-internal resource for an object of `node` (upstream BuildResource)."""
    for label, value in (("node", node), ("namespace", namespace), ("type", resource_type)):
        if not value:
            raise ResourceError(f"cannot build a resource with an empty {label}")
    tail = f"/{name}" if name else ""
    return f"{NODE_PREFIX}/{node}/{namespace}/{resource_type}{tail}"


def build_device_resource(node: str, resource_type: str, device_id: str = "") -> str:
    """`node/<node>/<type>[/<id>]` (upstream BuildResourceForDevice)."""
    if not node or not resource_type:
        raise ResourceError("cannot build a device resource with an empty node or type")
    tail = f"/{device_id}" if device_id else ""
    return f"{NODE_PREFIX}/{node}/{resource_type}{tail}"


def build_edge_resource(namespace: str, resource_type: str, name: str = "") -> str:
    if not namespace or not resource_type:
        raise ResourceError("cannot build an edge resource with an empty namespace or type")
    return f"{namespace}/{resource_type}/{name}" if name else f"{namespace}/{resource_type}"


def parse_resource(resource: str) -> CloudResource:
    """Split a cloud-internal resource; tokens 1..4 are node, namespace, type, name."""
    parts = resource.split(_SEP, 4)
    if len(parts) < 4 or parts[0] != NODE_PREFIX or not all(parts[1:4]):
        raise ResourceError(
            f"resource {resource!r}: expected node/<node>/<namespace>/<type>[/<name>]")
    return CloudResource(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else "")


def parse_edge_resource(resource: str) -> EdgeResource:
    """Split `<namespace>/<type>[/<name>]`; a name may itself hold slashes (e.g. `k8s/ca.crt` types)."""
    parts = resource.split(_SEP, 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ResourceError(f"resource {resource!r}: expected <namespace>/<type>[/<name>]")
    return EdgeResource(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def node_of(resource: str) -> str:
    """The node token of a cloud-internal resource (`node/<node>/...`)."""
    parts = resource.split(_SEP, 2)
    if len(parts) < 3 or parts[0] != NODE_PREFIX or not parts[1]:
        raise ResourceError(f"resource {resource!r} does not start with node/<node>/")
    return parts[1]


def trim_node_prefix(resource: str) -> str:
    """Cloud to wire: drop `node/<node>/` (upstream TrimMessage); other resources pass unchanged."""
    if not resource.startswith(NODE_PREFIX + _SEP):
        return resource
    parts = resource.split(_SEP, 2)
    return parts[2] if len(parts) == 3 else resource


def add_node_prefix(node: str, resource: str) -> str:
    """Wire to cloud: prefix `node/<node>/` taken from the connection's verified identity."""
    if not node:
        raise ResourceError("cannot prefix a resource with an empty node")
    return f"{NODE_PREFIX}/{node}/{resource}"
