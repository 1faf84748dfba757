"""Node-group traffic closure: the EndpointSlice/Endpoints an edge node receives (pure, no I/O).

Rules (ref/devices-groups.md 6.4): when the owning Service (an EndpointSlice's label
`kubernetes.io/service-name`, an Endpoints object's own name) is annotated
`apps.kubeedge.io/service-topology: range-nodegroup`, a node receives only the endpoints (slices:
`endpoints[]`; Endpoints: `subsets[].addresses[]` and `notReadyAddresses[]`) whose `nodeName` is a
node of its own group. Endpoints without a nodeName are dropped; an Endpoints subset left with no
address at all is dropped too. A node without a group receives the endpoints on nodes without a group
(upstream compares the label values, "" == ""). Unannotated Services pass unchanged; every view
carries the Service's resourceVersion floor (topology.py) when that is newer than the object's own.

Cost: a view is computed once per (object version, receiving group, group generation, floor) and kept
(`EndpointViews`, at most `MAX_CACHED` objects, least recently used dropped), so one slice event to
1,000 nodes in 50 groups costs 50 filterings plus 1,000 dict lookups. Nothing is deep-copied: a view
that removes nothing is the object itself (or a shallow copy with a new resourceVersion); one that
removes endpoints is a shallow copy sharing the kept endpoint dicts, so views must be treated as
read-only, like the informer cache they come from.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final

from cloudcore.edgecontroller.kinds import ENDPOINTS, ENDPOINTSLICE, Object
from cloudcore.edgecontroller.topology import LABEL_SERVICE_NAME, GroupMove, ServiceKey, TopologyIndex, rv_number

MAX_CACHED: Final = 4096
ENDPOINT_TYPES: Final = frozenset({ENDPOINTS.type, ENDPOINTSLICE.type})
_MAX_VIEWS: Final = 1024  # per object version: one per receiving group (and generation)
_PASS: Final = "\x00pass"  # the cache slot of an unannotated Service's view (only a new RV)

Keep = Callable[[Any], bool]


def service_of(kind_type: str, obj: Object) -> ServiceKey | None:
    """The Service owning an EndpointSlice/Endpoints; None for other kinds or a slice without the label."""
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    if kind_type == ENDPOINTSLICE.type:
        labels = metadata.get("labels") or {}
        name = labels.get(LABEL_SERVICE_NAME) if isinstance(labels, dict) else None
        return (namespace, name) if isinstance(name, str) and name else None
    if kind_type == ENDPOINTS.type:
        name = metadata.get("name")
        return (namespace, name) if isinstance(name, str) and name else None
    return None


def hosts_of(kind_type: str, obj: Object) -> set[str]:
    """The nodeNames of an EndpointSlice's endpoints or an Endpoints' addresses (ready or not)."""
    if kind_type == ENDPOINTSLICE.type:
        return {str(e.get("nodeName")) for e in obj.get("endpoints") or [] if isinstance(e, dict)}
    found: set[str] = set()
    for subset in obj.get("subsets") or []:
        if isinstance(subset, dict):
            for field in ("addresses", "notReadyAddresses"):
                found.update(str(a.get("nodeName")) for a in subset.get(field) or [] if isinstance(a, dict))
    return found


def refilter_after_move(index: TopologyIndex, move: GroupMove, objects: Iterable[tuple[str, Object]],
                        receivers: Iterable[str]) -> list[tuple[str, str, Object]]:
    """(node, kind type, object) whose view changed with `move`: for every annotated Service's object,
    the moved node itself, and the members of its old and new group when the object has an endpoint on
    the moved node. `receivers` are the nodes that may hold views; `index` already has the move."""
    groups = {move.old, move.new}
    targets = [node for node in receivers if node == move.node or index.group_of(node) in groups]
    if not targets:
        return []
    found: list[tuple[str, str, Object]] = []
    for kind_type, obj in objects:
        service = service_of(kind_type, obj)
        if service is None or service not in index.annotated:
            continue
        on_moved = move.node in hosts_of(kind_type, obj)
        found.extend((node, kind_type, obj) for node in targets if on_moved or node == move.node)
    return found


def unsettled(index: TopologyIndex, objects: Iterable[tuple[str, Object]],
              services: Iterable[ServiceKey] | None = None) -> list[ServiceKey]:
    """Services (of `services`, default every annotated one) with an object whose own RV is not below the
    floor: views of that object went out at its RV, maybe under the membership before the change, and
    views at the same RV would be dropped; they need a fresh revision (see topology.py)."""
    wanted = set(index.annotated if services is None else services)
    found: set[ServiceKey] = set()
    for kind_type, obj in objects:
        service = service_of(kind_type, obj)
        if service in wanted and service not in found and rv_number(obj) >= index.floor(service):
            found.add(service)
    return sorted(found)


def settled_above(index: TopologyIndex, service: ServiceKey, objects: Iterable[tuple[str, Object]]) -> int:
    """The RV a Service's views must go above: its floor, or its newest object's RV when that is higher."""
    found = index.floor(service)
    for kind_type, obj in objects:
        if service_of(kind_type, obj) == service:
            found = max(found, rv_number(obj))
    return found


def objects_of(service: ServiceKey, objects: Iterable[tuple[str, Object]]) -> list[tuple[str, Object]]:
    """The EndpointSlices/Endpoints of one Service among `objects` ((kind type, object) pairs)."""
    return [(kind_type, obj) for kind_type, obj in objects if service_of(kind_type, obj) == service]


def filter_slice(slice_: Object, keep: Keep) -> Object:
    """The EndpointSlice with only the endpoints whose nodeName `keep` accepts (the same object if all are)."""
    endpoints = slice_.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        return slice_
    kept = [e for e in endpoints if isinstance(e, dict) and keep(e.get("nodeName"))]
    if len(kept) == len(endpoints):
        return slice_
    return {**slice_, "endpoints": kept}


def filter_endpoints(endpoints: Object, keep: Keep) -> Object:
    """The Endpoints with only the addresses (ready and not) whose nodeName `keep` accepts; subsets left
    empty are dropped (the same object if nothing is removed)."""
    subsets = endpoints.get("subsets")
    if not isinstance(subsets, list) or not subsets:
        return endpoints
    changed = False
    kept_subsets = []
    for subset in subsets:
        if not isinstance(subset, dict):
            changed = True
            continue
        new_subset = subset
        for field in ("addresses", "notReadyAddresses"):
            addresses = subset.get(field)
            if not isinstance(addresses, list) or not addresses:
                continue
            kept = [a for a in addresses if isinstance(a, dict) and keep(a.get("nodeName"))]
            if len(kept) != len(addresses):
                if new_subset is subset:
                    new_subset = dict(subset)
                new_subset[field] = kept
        if new_subset is not subset:
            changed = True
            if not new_subset.get("addresses") and not new_subset.get("notReadyAddresses"):
                continue
        kept_subsets.append(new_subset)
    return {**endpoints, "subsets": kept_subsets} if changed else endpoints


def with_rv(obj: Object, rv: int) -> Object:
    """A shallow copy whose metadata carries resourceVersion `rv`."""
    return {**obj, "metadata": {**(obj.get("metadata") or {}), "resourceVersion": str(rv)}}


class _Cached:
    __slots__ = ("floor", "rv", "views")

    def __init__(self, rv: str, floor: int) -> None:
        self.rv = rv
        self.floor = floor
        self.views: dict[tuple[str, int], Object] = {}


class EndpointViews:
    """Views of EndpointSlices/Endpoints per receiving node, cached per group; see the module doc."""

    def __init__(self, index: TopologyIndex, max_cached: int = MAX_CACHED) -> None:
        self.index = index
        self.filterings = 0  # views computed (not served from the cache), for tests and the bench
        self._cache: OrderedDict[tuple[str, str, str], _Cached] = OrderedDict()
        self._max_cached = max_cached

    def view(self, kind_type: str, obj: Object, node: str) -> Object:
        """What `node` receives of `obj` (the object itself unless the endpoint filter applies)."""
        if kind_type not in ENDPOINT_TYPES:
            return obj
        service = service_of(kind_type, obj)
        if service is None:
            return obj
        entry = self._entry(kind_type, obj, service)
        if entry is None:
            return obj
        return self._view(entry, kind_type, obj, service, node)

    def views(self, kind_type: str, obj: Object, nodes: Iterable[str]) -> list[tuple[str, Object]]:
        """(node, view) for each node, the per-object work done once."""
        service = service_of(kind_type, obj) if kind_type in ENDPOINT_TYPES else None
        entry = None if service is None else self._entry(kind_type, obj, service)
        if service is None or entry is None:
            return [(node, obj) for node in nodes]
        return [(node, self._view(entry, kind_type, obj, service, node)) for node in nodes]

    # -- helpers -----------------------------------------------------------------------------------
    def _entry(self, kind_type: str, obj: Object, service: ServiceKey) -> _Cached | None:
        """The cache entry of this object version; None when the object passes as it is."""
        index = self.index
        floor = index.floor(service)
        annotated = service in index.annotated
        if not annotated and floor <= rv_number(obj):
            return None
        metadata = obj.get("metadata") or {}
        key = (kind_type, service[0], str(metadata.get("name") or ""))
        rv = str(metadata.get("resourceVersion") or "")
        entry = self._cache.get(key)
        if entry is None or entry.rv != rv or entry.floor != floor:
            entry = self._cache[key] = _Cached(rv, floor)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return entry

    def _view(self, entry: _Cached, kind_type: str, obj: Object, service: ServiceKey, node: str) -> Object:
        index = self.index
        if service in index.annotated:
            group = index.group_of(node)
            slot = (group, index.generation(group))
        else:
            group, slot = _PASS, (_PASS, 0)
        found = entry.views.get(slot)
        if found is not None:
            return found
        if len(entry.views) >= _MAX_VIEWS:  # slots of groups' older generations
            entry.views.clear()
        self.filterings += 1
        view = obj if group == _PASS else self._filter(kind_type, obj, group)
        rv = rv_number(obj)
        if entry.floor > rv:
            view = with_rv(view, entry.floor)
        entry.views[slot] = view
        return view

    def _filter(self, kind_type: str, obj: Object, group: str) -> Object:
        group_of = self.index.group_by_node.get

        def keep(node_name: Any) -> bool:
            return isinstance(node_name, str) and bool(node_name) and group_of(node_name, "") == group

        return filter_slice(obj, keep) if kind_type == ENDPOINTSLICE.type else filter_endpoints(obj, keep)
