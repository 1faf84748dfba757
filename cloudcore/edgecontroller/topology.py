"""Who is in which node group, and which Services keep their traffic inside a group (pure, no I/O).

Owns the in-memory index the endpoint filter reads (ref/devices-groups.md 6.1, 6.4): node -> group (the
node label `apps.kubeedge.io/belonging-to`), group -> nodes, the Services annotated
`apps.kubeedge.io/service-topology: range-nodegroup`, a generation per group (bumped when the group's
members change, so cached filter results of that group are recomputed), and a resourceVersion floor
per Service. It is fed from informer events by its owner and never reads the API itself.

Why floors: a filtered view changes when membership or the annotation changes although the object does
not, and CloudHub's queue and the edge's store both drop a copy whose resourceVersion is not newer
than the one they hold. So the views of a Service's slices carry max(object RV, floor), where the floor
is the RV of the last event (node relabel, annotation change) that changed what its views hold; RVs are
one cluster-wide counter (etcd's revision), so the floor is a real, later version. A Service keeps its
floor after losing the annotation (its edges hold views up to that RV); floors are bounded in number
(`MAX_FLOORS`, oldest forgotten first). `base_floor`, set by the owner once its informers are synced to
their list RV, is every annotated Service's least floor: views sent by an earlier process may carry
floors up to then, and membership may have changed meanwhile, so after a restart every annotated view
is sent once more (unannotated objects are not).

Events out of order: the watches of Nodes, Services and slices are separate streams. A slice change
older than a floor can arrive after views went out at that floor (`is_late`), and a slice change newer
than a relabel can arrive before the relabel, its views computed under the old membership at the
slice's RV, which the re-filtered views then repeat (endpointfilter.unsettled). Either way the same RV
would carry different content and the edges would keep the first. The owner then waits for a cluster
revision above both the floor and the Service's newest object (`settled_above`; any write in the
cluster, a node lease renewal say, moves it), raises the floor there (`raise_floor`) and sends the
Service's views again.

Nodes without the label are in group "" (upstream compares label values, so two unlabelled nodes are
in the same "group"); nodes the index never heard of count as unlabelled.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

LABEL_BELONGING_TO: Final = "apps.kubeedge.io/belonging-to"
ANNOTATION_SERVICE_TOPOLOGY: Final = "apps.kubeedge.io/service-topology"
TOPOLOGY_RANGE_NODEGROUP: Final = "range-nodegroup"
LABEL_SERVICE_NAME: Final = "kubernetes.io/service-name"
NO_GROUP: Final = ""
MAX_FLOORS: Final = 65_536

ServiceKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class GroupMove:
    """Node `node` went from group `old` to group `new` at resourceVersion `rv`."""

    node: str
    old: str
    new: str
    rv: int


def group_label(node: dict[str, Any]) -> str:
    """The node's group from its labels; "" when it has none."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    value = labels.get(LABEL_BELONGING_TO) if isinstance(labels, dict) else None
    return value if isinstance(value, str) else NO_GROUP


def has_group(node: dict[str, Any]) -> bool:
    return group_label(node) != NO_GROUP


def is_range_nodegroup(service: dict[str, Any] | None) -> bool:
    if not service:
        return False
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    return isinstance(annotations, dict) and annotations.get(ANNOTATION_SERVICE_TOPOLOGY) == TOPOLOGY_RANGE_NODEGROUP


def rv_number(obj: dict[str, Any] | None) -> int:
    """The object's resourceVersion as an integer; 0 when it is missing or not a number."""
    return parse_rv(str(((obj or {}).get("metadata") or {}).get("resourceVersion") or ""))


def is_late(index: TopologyIndex, service: ServiceKey | None, obj: dict[str, Any]) -> bool:
    """An update of one of `service`'s objects older than views already sent at its floor (see above)."""
    if service is None:
        return False
    floor = index.floor(service)
    rv = rv_number(obj)
    return 0 < rv <= floor


def parse_rv(text: str) -> int:
    """A resourceVersion as an integer; 0 when it is not a number."""
    return int(text) if text.isdigit() else 0


class TopologyIndex:
    def __init__(self, max_floors: int = MAX_FLOORS) -> None:
        self.group_by_node: dict[str, str] = {}
        self.nodes_by_group: dict[str, set[str]] = {}
        self.generation_by_group: dict[str, int] = {}
        self.annotated: set[ServiceKey] = set()
        self._floor_by_service: OrderedDict[ServiceKey, int] = OrderedDict()
        self._max_floors = max_floors
        self.base_floor = 0

    # -- reads -------------------------------------------------------------------------------------
    def group_of(self, node: str) -> str:
        return self.group_by_node.get(node, NO_GROUP)

    def generation(self, group: str) -> int:
        return self.generation_by_group.get(group, 0)

    def floor(self, service: ServiceKey) -> int:
        floor = self._floor_by_service.get(service, 0)
        return max(floor, self.base_floor) if service in self.annotated else floor

    def members(self, group: str) -> set[str]:
        """The labelled members of a group (unlabelled nodes are not tracked: "" gives an empty set)."""
        return self.nodes_by_group.get(group, set())

    # -- changes -----------------------------------------------------------------------------------
    def set_node_group(self, node: str, group: str, rv: int) -> GroupMove | None:
        """Record the node's group ("" = none); the move when it changed (floors of every annotated
        Service rise to `rv`, the two groups' generations move on)."""
        old = self.group_of(node)
        if old == group:
            return None
        if old:
            members = self.nodes_by_group.get(old)
            if members is not None:
                members.discard(node)
                if not members:
                    del self.nodes_by_group[old]
        if group:
            self.group_by_node[node] = group
            self.nodes_by_group.setdefault(group, set()).add(node)
        else:
            self.group_by_node.pop(node, None)
        for changed in (old, group):
            self.generation_by_group[changed] = self.generation(changed) + 1
        for service in self.annotated:
            self._raise_floor(service, rv)
        return GroupMove(node, old, group, rv)

    def set_service(self, service: ServiceKey, annotated: bool, rv: int) -> bool:
        """Record whether a Service asks for range-nodegroup; True when that changed (its floor rises)."""
        if (service in self.annotated) == annotated:
            return False
        if annotated:
            self.annotated.add(service)
        else:
            self.annotated.discard(service)
        self._raise_floor(service, rv)
        return True

    def raise_floor(self, service: ServiceKey, rv: int) -> bool:
        """Raise a Service's floor to `rv` (to re-send views a late event changed); True when it rose."""
        if rv <= self.floor(service):
            return False
        self._raise_floor(service, rv)
        return True

    def _raise_floor(self, service: ServiceKey, rv: int) -> None:
        floors = self._floor_by_service
        if rv > floors.get(service, 0):
            floors[service] = rv
            floors.move_to_end(service)
            while len(floors) > self._max_floors:
                floors.popitem(last=False)
