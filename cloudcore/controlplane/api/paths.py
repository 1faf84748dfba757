"""Resource paths as Kubernetes lays them out (pure), shared by the control plane and the edge's MetaServer.

After `/api/<v>` or `/apis/<g>/<v>`: `[watch/][namespaces/<ns>/]<resource>[/<name>[/<subresource>]]`.
`namespaces/<ns>/...` is a namespace scope only when the resource after it is namespaced (otherwise
`namespaces/<name>` is the Namespace object itself). Unknown resources and subresources are 404s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.resources import ResourceInfo

R = TypeVar("R")

NOT_FOUND = "the server could not find the requested resource"


@dataclass(frozen=True, slots=True)
class ResourcePath(Generic[R]):
    resource: R
    namespace: str
    name: str
    subresource: str
    watch_path: bool


def parse(rest: list[str], lookup: Callable[[str], R | None], info_of: Callable[[R], ResourceInfo]) -> ResourcePath[R]:
    """The path segments after the group version; `lookup(plural)` finds what serves a resource."""
    watch_path = bool(rest) and rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        candidate = lookup(rest[2])
        if candidate is not None and info_of(candidate).namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise APIError(404, "NotFound", NOT_FOUND)
    resource = lookup(rest[0])
    if resource is None:
        raise APIError(404, "NotFound", NOT_FOUND)
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if subresource and subresource not in info_of(resource).subresources:
        raise APIError(404, "NotFound", NOT_FOUND)
    return ResourcePath(resource, namespace, name, subresource, watch_path)
