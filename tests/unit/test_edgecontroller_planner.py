"""EdgeController routing decisions (pure): who gets which object, and when."""

from __future__ import annotations

from typing import Any

from cloudcore.edgecontroller.informer import Event, EventType
from cloudcore.edgecontroller.kinds import CONFIGMAP, ENDPOINTS, NODE, POD, SECRET, SERVICE, Kind, Object
from cloudcore.edgecontroller.messages import push_message
from cloudcore.edgecontroller.planner import Plan, Planner, Push, is_edge_node
from cloudcore.edgecontroller.refs import ObjectRef

ADDED, MODIFIED, DELETED, DROPPED = EventType.ADDED, EventType.MODIFIED, EventType.DELETED, EventType.DROPPED


def node(name: str, rv: str = "1", **extra: Any) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "resourceVersion": rv, "labels": {"node-role.kubernetes.io/edge": ""}},
        **extra,
    }


def pod(
    name: str, node_name: str, rv: str = "1", configmaps: tuple[str, ...] = (), secrets: tuple[str, ...] = ()
) -> Object:
    volumes = [{"name": c, "configMap": {"name": c}} for c in configmaps]
    volumes += [{"name": s, "secret": {"secretName": s}} for s in secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "uid": f"uid-{name}"},
        "spec": {"nodeName": node_name, "volumes": volumes, "containers": [{"name": "c", "image": "i"}]},
    }


def obj(kind: Kind, name: str, rv: str = "1") -> Object:
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
    }


def event(kind: EventType, item: Object, old: Object | None = None) -> Event:
    metadata = item["metadata"]
    key = f"{metadata['namespace']}/{metadata['name']}" if "namespace" in metadata else metadata["name"]
    return Event(kind, key, item, old)


def sent(plan: Plan) -> list[tuple[str, str, str, str]]:
    return [(p.node, p.operation, p.kind.type, p.obj["metadata"]["name"]) for p in plan.pushes]


class World:
    """A planner over dict caches, fed as the informers would feed it."""

    def __init__(self) -> None:
        self.caches: dict[str, dict[str, Object]] = {k.type: {} for k in (CONFIGMAP, SECRET, SERVICE, ENDPOINTS)}
        self.planner = Planner(self.caches)

    def add_node(self, name: str) -> Plan:
        return self.planner.node_event(event(ADDED, node(name)))

    def put(self, kind: Kind, item: Object) -> Plan:
        cache = self.caches[kind.type]
        key = f"ns/{item['metadata']['name']}"
        old = cache.get(key)
        cache[key] = item
        if kind in (CONFIGMAP, SECRET):
            return self.planner.object_event(kind, event(MODIFIED if old else ADDED, item, old))
        return self.planner.broadcast_event(kind, event(MODIFIED if old else ADDED, item, old))


def test_a_new_edge_node_gets_its_node_every_service_and_its_pods_listed() -> None:
    world = World()
    world.put(SERVICE, obj(SERVICE, "svc"))
    world.put(ENDPOINTS, obj(ENDPOINTS, "svc"))
    plan = world.add_node("e1")
    assert sent(plan) == [
        ("e1", "insert", "node", "e1"),
        ("e1", "insert", "service", "svc"),
        ("e1", "insert", "endpoints", "svc"),
    ]
    assert plan.backfill == ["e1"]
    assert is_edge_node(node("e1")) and not is_edge_node({"metadata": {"name": "n", "labels": {}}})


def test_pods_go_to_their_node_with_the_objects_they_use_first() -> None:
    world = World()
    world.add_node("e1")
    world.add_node("e2")
    world.caches["configmap"]["ns/cfg"] = obj(CONFIGMAP, "cfg")
    plan = world.planner.pod_event(event(ADDED, pod("p", "e1", configmaps=("cfg",), secrets=("missing",))))
    assert sent(plan) == [("e1", "insert", "configmap", "cfg"), ("e1", "insert", "pod", "p")]
    assert plan.fetch == [ObjectRef("secret", "ns", "missing")]  # not cached: the shell reads it
    assert world.planner.wants_pod(pod("q", "e2")) and not world.planner.wants_pod(pod("q", "cloud-node"))

    # once fetched, the secret goes to the nodes that use it, and only to them
    assert sent(world.put(SECRET, obj(SECRET, "missing"))) == [("e1", "insert", "secret", "missing")]
    assert sent(world.put(CONFIGMAP, obj(CONFIGMAP, "cfg", rv="2"))) == [("e1", "update", "configmap", "cfg")]
    assert sent(world.put(CONFIGMAP, obj(CONFIGMAP, "unused"))) == []
    assert not world.planner.wants_object(CONFIGMAP, obj(CONFIGMAP, "unused"))


def test_a_node_that_stops_using_an_object_keeps_it_but_gets_its_delete_only() -> None:
    world = World()
    world.add_node("e1")
    world.caches["configmap"]["ns/cfg"] = obj(CONFIGMAP, "cfg")
    world.planner.pod_event(event(ADDED, pod("p", "e1", configmaps=("cfg",))))
    plan = world.planner.pod_event(event(DELETED, pod("p", "e1", rv="2", configmaps=("cfg",))))
    assert sent(plan) == [("e1", "delete", "pod", "p")]  # no configmap delete, as upstream
    assert world.planner.wants_object(CONFIGMAP, obj(CONFIGMAP, "cfg"))  # e1 still holds a copy
    assert sent(world.put(CONFIGMAP, obj(CONFIGMAP, "cfg", rv="3"))) == []  # no updates for a non-user
    deleted = world.planner.object_event(CONFIGMAP, event(DELETED, obj(CONFIGMAP, "cfg", rv="4")))
    assert sent(deleted) == [("e1", "delete", "configmap", "cfg")]
    assert not world.planner.wants_object(CONFIGMAP, obj(CONFIGMAP, "cfg"))


def test_services_go_to_every_edge_node() -> None:
    world = World()
    world.add_node("e1")
    world.add_node("e2")
    assert sent(world.put(SERVICE, obj(SERVICE, "svc"))) == [
        ("e1", "insert", "service", "svc"),
        ("e2", "insert", "service", "svc"),
    ]
    deleted = world.planner.broadcast_event(SERVICE, event(DELETED, obj(SERVICE, "svc")))
    assert [p[:2] for p in sent(deleted)] == [("e1", "delete"), ("e2", "delete")]


def test_node_changes_go_to_the_node_unless_only_its_status_changed() -> None:
    world = World()
    world.add_node("e1")
    status_only = node("e1", rv="2", status={"conditions": [{"type": "Ready", "status": "True"}]})
    assert sent(world.planner.node_event(event(MODIFIED, status_only, node("e1")))) == []
    relabelled = node("e1", rv="3")
    relabelled["metadata"]["labels"]["zone"] = "a"
    assert sent(world.planner.node_event(event(MODIFIED, relabelled, status_only))) == [("e1", "update", "node", "e1")]


def test_a_pod_change_of_its_status_alone_is_marked_as_one_the_edge_has() -> None:
    world = World()
    world.add_node("e1")
    created = pod("p", "e1", rv="2")
    running = {**pod("p", "e1", rv="3"), "status": {"phase": "Running"}}
    running["metadata"]["managedFields"] = [{"manager": "edgecontroller"}]
    (push,) = world.planner.pod_event(event(MODIFIED, running, created)).pushes
    assert (push.operation, push.edge_has_it) == ("update", True)
    marked = push_message(push)
    assert marked.header.type == "kubeedge-py/edge-has-it" and marked.content["status"] == {"phase": "Running"}
    labelled = {**pod("p", "e1", rv="4"), "status": {"phase": "Running"}}
    labelled["metadata"]["labels"] = {"a": "b"}
    deleting = {**pod("p", "e1", rv="5"), "status": {"phase": "Running"}}
    deleting["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    for old, new in ((running, labelled), (running, deleting), (None, running)):
        (push,) = world.planner.pod_event(event(MODIFIED, new, old)).pushes
        assert not push.edge_has_it and push_message(push).header.type == ""
    assert not world.planner.pod_event(event(ADDED, running)).pushes[0].edge_has_it


def test_a_node_leaving_forgets_its_pods_and_only_a_deleted_node_is_told() -> None:
    world = World()
    world.add_node("e1")
    world.caches["secret"]["ns/s"] = obj(SECRET, "s")
    world.planner.pod_event(event(ADDED, pod("p", "e1", secrets=("s",))))
    dropped = world.planner.node_event(event(DROPPED, node("e1", rv="2")))
    assert sent(dropped) == [] and dropped.forget_pods == ["ns/p"]
    assert "e1" not in world.planner.edge_nodes and not world.planner.wants_object(SECRET, obj(SECRET, "s"))
    world.add_node("e2")
    gone = world.planner.node_event(event(DELETED, node("e2", rv="5")))
    assert sent(gone) == [("e2", "delete", "node", "e2")]
    assert push_message(gone.pushes[0]).resource == "node/e2/namespace/node/e2"  # upstream's node delete


def test_authorization_of_reads() -> None:
    world = World()
    world.add_node("e1")
    world.add_node("e2")
    world.planner.pod_event(event(ADDED, pod("p", "e1", secrets=("s",))))
    planner = world.planner
    assert planner.authorized("e1", SECRET, "ns", "s") and not planner.authorized("e2", SECRET, "ns", "s")
    assert not planner.authorized("e1", CONFIGMAP, "ns", "s")
    assert planner.authorized("e1", NODE, "", "e1") and not planner.authorized("e1", NODE, "", "e2")
    assert planner.authorized("e1", POD, "ns", "p", pod("p", "e1"))
    assert not planner.authorized("e2", POD, "ns", "p", pod("p", "e1"))
    assert planner.authorized("e2", SERVICE, "ns", "svc") and not planner.authorized("cloud", SERVICE, "ns", "svc")


def test_push_messages_carry_the_object_and_its_version() -> None:
    message = push_message(
        Push("e1", "insert", CONFIGMAP, {"metadata": {"name": "c", "namespace": "ns", "resourceVersion": "42"}})
    )
    assert message.resource == "node/e1/ns/configmap/c"
    assert message.source == "edgecontroller" and message.group == "resource" and message.operation == "insert"
    assert message.header.resource_version == "42"
    assert message.content["apiVersion"] == "v1" and message.content["kind"] == "ConfigMap"
    node_message = push_message(Push("e1", "update", NODE, node("e1", rv="7")))
    assert node_message.resource == "node/e1/null/node/e1"  # cluster-scoped: the `null` namespace token
