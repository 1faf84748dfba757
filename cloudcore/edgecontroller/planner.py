"""Which edge node gets which object, and when (pure: informer events in, a plan out, no I/O).

The rules, per kind (ref/protocol.md 2.2/2.3 for names and operations):

- Node: edge nodes are the Nodes labelled `node-role.kubernetes.io/edge`. A node becoming one gets its
  own Node, every Service/Endpoints/EndpointSlice, and its pods (listed again by the shell, as the
  pod informer keeps only pods of edge nodes). Later changes of its own Node go to it unless only the
  status changed: the node itself reported that status, and echoing every heartbeat back would
  double the link's traffic. A deleted Node gets upstream's node delete, a Node that merely lost the
  label gets nothing (it is no longer ours to talk to).
- Pod: to the node in `spec.nodeName`, insert/update/delete as the API reports it.
- ConfigMap/Secret: only to nodes whose pods reference them (node authorization: a node never
  receives another node's secrets). A node that starts using one gets it at once (fetched if the
  informer did not hold it). A node that stops using one gets nothing, as upstream: a pod recreated
  a moment later finds it still there, and a delete racing a re-insert of the same resourceVersion
  could be lost in the node's queue. It keeps no updates either (it may no longer read the object),
  but it is remembered as holding a copy, and gets the delete when the object is deleted from the
  API, so nothing stale outlives the object on the edge (within this process; after a restart the
  ObjectSync records are what SyncController uses for that).
- Service/Endpoints/EndpointSlice: to every edge node, EndpointSlices/Endpoints as each node's view
  (endpointfilter.py: a Service annotated range-nodegroup sends a node only its group's endpoints).
  When the views change without the object changing (a node moves between groups: `group_event`;
  a Service gains or loses the annotation), the nodes whose view changed get the object again, as an
  update carrying the Service's resourceVersion floor (topology.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudcore.edgecontroller.endpointfilter import (
    EndpointViews,
    objects_of,
    refilter_after_move,
    service_of,
    settled_above,
    unsettled,
)
from cloudcore.edgecontroller.informer import Event, EventType
from cloudcore.edgecontroller.kinds import (
    BROADCAST_KINDS,
    CONFIGMAP,
    ENDPOINTS,
    ENDPOINTSLICE,
    NODE,
    POD,
    SECRET,
    SERVICE,
    Kind,
    Object,
    meta,
    name_of,
    namespace_of,
)
from cloudcore.edgecontroller.refs import ObjectRef, ReferenceTracker, pod_references
from cloudcore.edgecontroller.topology import (
    ServiceKey,
    TopologyIndex,
    group_label,
    is_late,
    is_range_nodegroup,
    rv_number,
)
from common.constants import LABEL_EDGE_NODE, Op

_OPERATIONS = {EventType.ADDED: Op.INSERT, EventType.MODIFIED: Op.UPDATE, EventType.DELETED: Op.DELETE}
# Metadata fields that change on every write and say nothing the edge needs.
_VOLATILE_META = ("resourceVersion", "managedFields", "generation")


@dataclass(frozen=True, slots=True)
class Push:
    node: str
    operation: str
    kind: Kind
    obj: Object
    edge_has_it: bool = False  # only the pod status the edge reported changed (messages.py marks it)


@dataclass(slots=True)
class Plan:
    pushes: list[Push] = field(default_factory=list)
    fetch: list[ObjectRef] = field(default_factory=list)  # referenced objects the cache does not hold
    backfill: list[str] = field(default_factory=list)  # nodes whose pods must be listed again
    forget_pods: list[str] = field(default_factory=list)  # pod cache keys of nodes no longer ours
    heal: list[ServiceKey] = field(default_factory=list)  # Services whose floor needs a fresh revision


def is_edge_node(node: Object) -> bool:
    labels = meta(node).get("labels") or {}
    return LABEL_EDGE_NODE in labels


def pod_node(pod: Object) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def ref_of(kind: Kind, obj: Object) -> ObjectRef:
    return ObjectRef(kind.type, namespace_of(obj), name_of(obj))


class Planner:
    """Routing state: the edge nodes, who references what, who holds which ConfigMap/Secret."""

    def __init__(self, caches: Mapping[str, Mapping[str, Object]]) -> None:
        # The informer caches by resource type; read only, to fan out what is already known.
        self.caches = caches
        self.edge_nodes: set[str] = set()
        self.refs = ReferenceTracker()
        self.held: dict[ObjectRef, set[str]] = {}
        self.topology = TopologyIndex()
        self.views = EndpointViews(self.topology)

    # -- keep predicates of the informers -----------------------------------------------------------
    def wants_pod(self, pod: Object) -> bool:
        return pod_node(pod) in self.edge_nodes

    def wants_object(self, kind: Kind, obj: Object) -> bool:
        ref = ref_of(kind, obj)
        return self.refs.used(ref) or ref in self.held

    # -- events ------------------------------------------------------------------------------------
    def node_event(self, event: Event) -> Plan:
        plan = Plan()
        name = event.key
        if event.type is EventType.ADDED:
            self.edge_nodes.add(name)
            plan.pushes.append(Push(name, Op.INSERT, NODE, event.obj))
            for kind in BROADCAST_KINDS:
                plan.pushes.extend(Push(name, Op.INSERT, kind, self.view(name, kind, obj))
                                   for obj in self._cache(kind).values())
            plan.backfill.append(name)
        elif event.type is EventType.MODIFIED:
            if event.old is None or _node_view(event.old) != _node_view(event.obj):
                plan.pushes.append(Push(name, Op.UPDATE, NODE, event.obj))
        else:
            if event.type is EventType.DELETED:
                plan.pushes.append(Push(name, Op.DELETE, NODE, event.obj))
            self._forget_node(name, plan)
        return plan

    def pod_event(self, event: Event) -> Plan:
        plan = Plan()
        node = pod_node(event.obj) or pod_node(event.old or {})
        if event.type in (EventType.ADDED, EventType.MODIFIED):
            changes = self.refs.set_pod(event.key, node, pod_references(event.obj))
            for change in changes:
                if change.started:
                    self._give(change.node, change.ref, plan)
        else:
            self.refs.remove_pod(event.key)
        operation = _OPERATIONS.get(event.type)
        if operation is not None:  # a DROPPED pod's node is no longer ours: nothing to tell it
            status_only = event.type is EventType.MODIFIED and event.old is not None and \
                pod_node(event.old) == node and _without_status(event.old) == _without_status(event.obj)
            plan.pushes.append(Push(node, operation, POD, event.obj, edge_has_it=status_only))
        return plan

    def object_event(self, kind: Kind, event: Event) -> Plan:
        """A ConfigMap or Secret changed: tell the nodes that use it (and, on delete, those holding it)."""
        plan = Plan()
        ref = ref_of(kind, event.obj)
        users = self.refs.nodes_using(ref)
        if event.type is EventType.DELETED:
            holders = users | self.held.pop(ref, set())
            plan.pushes.extend(Push(node, Op.DELETE, kind, event.obj) for node in sorted(holders))
        elif event.type is not EventType.DROPPED:
            if users:
                self.held.setdefault(ref, set()).update(users)
            operation = _OPERATIONS[event.type]
            plan.pushes.extend(Push(node, operation, kind, event.obj) for node in sorted(users))
        return plan

    def broadcast_event(self, kind: Kind, event: Event) -> Plan:
        operation = _OPERATIONS.get(event.type)
        if operation is None:
            return Plan()
        views = self.views.views(kind.type, event.obj, sorted(self.edge_nodes))
        plan = Plan(pushes=[Push(node, operation, kind, view) for node, view in views])
        if kind is SERVICE:
            self._service_topology(event, plan)
        elif event.type is EventType.MODIFIED:
            service = service_of(kind.type, event.obj)
            if is_late(self.topology, service, event.obj):
                assert service is not None
                plan.heal.append(service)
        return plan

    def heal(self, service: ServiceKey, rv: int) -> Plan:
        """Send a Service's EndpointSlices/Endpoints to every node again at floor `rv` (a fresh cluster
        revision above `heal_threshold`), after events came out of order (topology.py)."""
        plan = Plan()
        if rv > self.heal_threshold(service) and self.topology.raise_floor(service, rv):
            self._resend(service, plan)
        return plan

    def heal_threshold(self, service: ServiceKey) -> int:
        return settled_above(self.topology, service, self._endpoint_objects())

    def group_event(self, event: Event) -> Plan:
        """A Node's group label changed (from the informer of labelled Nodes, edge or not): record it, and
        send each EndpointSlice/Endpoints whose view changed to the nodes concerned."""
        group = group_label(event.obj) if event.type in (EventType.ADDED, EventType.MODIFIED) else ""
        move = self.topology.set_node_group(event.key, group, rv_number(event.obj))
        plan = Plan()
        if move is None or not self.topology.annotated:
            return plan
        objects = self._endpoint_objects()
        for node, kind_type, obj in refilter_after_move(self.topology, move, objects, sorted(self.edge_nodes)):
            kind = ENDPOINTSLICE if kind_type == ENDPOINTSLICE.type else ENDPOINTS
            plan.pushes.append(Push(node, Op.UPDATE, kind, self.view(node, kind, obj)))
        plan.heal.extend(unsettled(self.topology, objects))
        return plan

    def view(self, node: str, kind: Kind, obj: Object) -> Object:
        """What `node` receives of `obj` (its endpoint view for EndpointSlices/Endpoints)."""
        return self.views.view(kind.type, obj, node)

    # -- queries -----------------------------------------------------------------------------------
    def authorized(self, node: str, kind: Kind, namespace: str, name: str, obj: Object | None = None) -> bool:
        """May `node` read this object? Its own Node and pods, referenced ConfigMaps/Secrets, and
        Services/Endpoints/EndpointSlices (every edge node gets those anyway)."""
        if kind is NODE:
            return name == node
        if kind is POD:
            return obj is not None and pod_node(obj) == node
        if kind in (CONFIGMAP, SECRET):
            return self.refs.uses(node, ObjectRef(kind.type, namespace, name))
        return kind in BROADCAST_KINDS and node in self.edge_nodes

    # -- helpers -----------------------------------------------------------------------------------
    def _give(self, node: str, ref: ObjectRef, plan: Plan) -> None:
        kind = CONFIGMAP if ref.type == CONFIGMAP.type else SECRET
        obj = self._cache(kind).get(f"{ref.namespace}/{ref.name}")
        if obj is None:
            plan.fetch.append(ref)
            return
        self.held.setdefault(ref, set()).add(node)
        plan.pushes.append(Push(node, Op.INSERT, kind, obj))

    def _forget_node(self, name: str, plan: Plan) -> None:
        self.edge_nodes.discard(name)
        for pod_key in self.refs.pods_on(name):
            self.refs.remove_pod(pod_key)
            plan.forget_pods.append(pod_key)
        for ref in [ref for ref, nodes in self.held.items() if name in nodes]:
            self.held[ref].discard(name)
            if not self.held[ref]:
                del self.held[ref]

    def _cache(self, kind: Kind) -> Mapping[str, Object]:
        return self.caches.get(kind.type, {})

    def _endpoint_objects(self) -> list[tuple[str, Object]]:
        return [(kind.type, obj) for kind in (ENDPOINTSLICE, ENDPOINTS) for obj in self._cache(kind).values()]

    def _service_topology(self, event: Event, plan: Plan) -> None:
        """A Service gained or lost the range-nodegroup annotation: its objects go again to every node."""
        annotated = event.type is not EventType.DELETED and is_range_nodegroup(event.obj)
        service = (namespace_of(event.obj), name_of(event.obj))
        if not self.topology.set_service(service, annotated, rv_number(event.obj)) or event.type is EventType.DELETED:
            return
        self._resend(service, plan)
        plan.heal.extend(unsettled(self.topology, self._endpoint_objects(), [service]))

    def _resend(self, service: ServiceKey, plan: Plan) -> None:
        for kind_type, obj in objects_of(service, self._endpoint_objects()):
            kind = ENDPOINTSLICE if kind_type == ENDPOINTSLICE.type else ENDPOINTS
            views = self.views.views(kind_type, obj, sorted(self.edge_nodes))
            plan.pushes.extend(Push(node, Op.UPDATE, kind, view) for node, view in views)


def _without_status(pod: Object) -> Object:
    """A pod less its status and volatile metadata: equal for two versions when only the status changed,
    which the edge reported itself (and keeps in its store: edgecore/metamanager/module.py)."""
    metadata = {k: v for k, v in meta(pod).items() if k not in _VOLATILE_META}
    return {**{k: v for k, v in pod.items() if k != "status"}, "metadata": metadata}


def _node_view(node: Object) -> tuple[Any, Any]:
    """What of a Node the edge cares to hear again: metadata (less volatile fields) and spec."""
    metadata = {k: v for k, v in meta(node).items() if k not in _VOLATILE_META}
    return metadata, node.get("spec")
