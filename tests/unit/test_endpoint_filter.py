"""The node-group endpoint filter (ref/devices-groups.md 6.4): each edge node receives only its group's endpoints
of Services annotated range-nodegroup; views are cached per group and re-sent when membership changes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloudcore.edgecontroller.endpointfilter import EndpointViews, filter_endpoints, filter_slice, service_of
from cloudcore.edgecontroller.informer import Event, EventType
from cloudcore.edgecontroller.kinds import ENDPOINTS, ENDPOINTSLICE, NODE, SERVICE, Object
from cloudcore.edgecontroller.messages import push_message
from cloudcore.edgecontroller.planner import Planner, Push
from cloudcore.edgecontroller.topology import (
    ANNOTATION_SERVICE_TOPOLOGY,
    LABEL_BELONGING_TO,
    LABEL_SERVICE_NAME,
    TopologyIndex,
)

NS = "apps"


def service(name: str = "web", annotated: bool = True, rv: str = "5") -> Object:
    annotations = {ANNOTATION_SERVICE_TOPOLOGY: "range-nodegroup"} if annotated else {}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "resourceVersion": rv, "annotations": annotations}}


def endpoint(ip: str, node: Any = None) -> dict[str, Any]:
    found: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": True}}
    if node is not None:
        found["nodeName"] = node
    return found


def slice_(*endpoints: dict[str, Any], service_name: str = "web", name: str = "web-abc", rv: str = "10") -> Object:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": NS, "resourceVersion": rv,
                         "labels": {LABEL_SERVICE_NAME: service_name}},
            "endpoints": list(endpoints), "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}


def address(ip: str, node: str | None) -> dict[str, Any]:
    return {"ip": ip, **({"nodeName": node} if node else {})}


def endpoints_object(ready: list[dict[str, Any]], not_ready: list[dict[str, Any]], name: str = "web",
                     rv: str = "11") -> Object:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": NS, "resourceVersion": rv},
            "subsets": [{"addresses": ready, "notReadyAddresses": not_ready, "ports": [{"port": 80}]}]}


def index_with(groups: dict[str, str], annotated: tuple[str, ...] = ("web",)) -> TopologyIndex:
    index = TopologyIndex()
    for node, group in groups.items():
        index.set_node_group(node, group, 1)
    for name in annotated:
        index.set_service((NS, name), True, 1)
    return index


GROUPS = {"a1": "A", "a2": "A", "b1": "B"}  # "c1" has no group; "ghost" is no node the index knows
MIXED = slice_(endpoint("10.0.0.1", "a1"), endpoint("10.0.0.2", "a2"), endpoint("10.0.0.3", "b1"),
               endpoint("10.0.0.4", "c1"), endpoint("10.0.0.5"), endpoint("10.0.0.6", ""),
               endpoint("10.0.0.7", "ghost"), endpoint("10.0.0.8", None))


def ips(view: Object) -> list[str]:
    return [e["addresses"][0] for e in view["endpoints"]]


@pytest.mark.parametrize(("receiver", "annotated", "expected"), [
    ("a1", True, ["10.0.0.1", "10.0.0.2"]),  # own group only
    ("a2", True, ["10.0.0.1", "10.0.0.2"]),
    ("b1", True, ["10.0.0.3"]),
    # no group: the endpoints on nodes without a group, as upstream ("" == ""); no nodeName: dropped
    ("c1", True, ["10.0.0.4", "10.0.0.7"]),
    ("a1", False, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7",
                   "10.0.0.8"]),  # unannotated: unchanged
])
def test_each_node_receives_only_its_groups_endpoints_of_annotated_services(
        receiver: str, annotated: bool, expected: list[str]) -> None:
    views = EndpointViews(index_with(GROUPS, ("web",) if annotated else ()))
    original = copy.deepcopy(MIXED)
    view = views.view(ENDPOINTSLICE.type, MIXED, receiver)
    assert ips(view) == expected
    assert original == MIXED  # the informer cache keeps the cloud's object
    if not annotated:
        assert view is MIXED


def test_a_view_that_removes_nothing_is_the_object_itself_and_kept_endpoints_are_not_copied() -> None:
    views = EndpointViews(index_with(GROUPS))
    only_a = slice_(endpoint("10.0.0.1", "a1"), endpoint("10.0.0.2", "a2"), name="web-only-a")
    assert views.view(ENDPOINTSLICE.type, only_a, "a1") is only_a
    view = views.view(ENDPOINTSLICE.type, MIXED, "a1")
    assert view["endpoints"][0] is MIXED["endpoints"][0]


@pytest.mark.parametrize("bad", [
    {"metadata": {"name": "x", "namespace": NS, "labels": {LABEL_SERVICE_NAME: "web"}}},  # no endpoints
    {"metadata": {"name": "x", "namespace": NS, "labels": {LABEL_SERVICE_NAME: "web"}}, "endpoints": None},
    {"metadata": {"name": "x", "namespace": NS, "labels": {LABEL_SERVICE_NAME: "web"}},
     "endpoints": ["junk", 3, {"nodeName": 7}, {"nodeName": ["a1"]}]},
    {"metadata": {"name": "x", "namespace": NS}, "endpoints": [{"nodeName": "b1"}]},  # no service label
    {"metadata": None, "endpoints": [{"nodeName": "b1"}]},
])
def test_malformed_slices_never_crash_and_keep_nothing_foreign(bad: Object) -> None:
    view = EndpointViews(index_with(GROUPS)).view(ENDPOINTSLICE.type, bad, "a1")
    if service_of(ENDPOINTSLICE.type, bad) is not None:
        assert all(isinstance(e, dict) and e.get("nodeName") in ("a1", "a2") for e in view.get("endpoints") or [])


def test_endpoints_objects_are_filtered_in_ready_and_not_ready_addresses() -> None:
    views = EndpointViews(index_with(GROUPS))
    obj = endpoints_object([address("10.0.0.1", "a1"), address("10.0.0.3", "b1"), address("10.0.0.9", None)],
                           [address("10.0.0.2", "a2"), address("10.0.0.4", "b1")])
    view = views.view(ENDPOINTS.type, obj, "a1")
    assert view["subsets"] == [{"addresses": [address("10.0.0.1", "a1")],
                                "notReadyAddresses": [address("10.0.0.2", "a2")], "ports": [{"port": 80}]}]
    only_b = views.view(ENDPOINTS.type, obj, "b1")["subsets"][0]
    assert (only_b["addresses"], only_b["notReadyAddresses"]) == ([address("10.0.0.3", "b1")],
                                                                  [address("10.0.0.4", "b1")])
    # a subset with nothing left for the node is dropped; an unannotated Service's Endpoints pass
    assert views.view(ENDPOINTS.type, endpoints_object([address("1.1.1.1", "b1")], [], rv="12"), "a1")["subsets"] == []
    other = endpoints_object([address("1.1.1.1", "b1")], [], name="other")
    assert views.view(ENDPOINTS.type, other, "a1") is other


def test_pure_filters_return_the_same_object_when_everything_is_kept() -> None:
    everything = slice_(endpoint("1.1.1.1", "x"))
    assert filter_slice(everything, lambda _: True) is everything
    obj = endpoints_object([address("1.1.1.1", "x")], [])
    assert filter_endpoints(obj, lambda _: True) is obj
    assert filter_endpoints(obj, lambda _: False)["subsets"] == []


def test_1000_nodes_in_50_groups_cost_50_filterings_per_slice_version() -> None:
    index = TopologyIndex()
    nodes = [f"n{i}" for i in range(1000)]
    for i, node in enumerate(nodes):
        index.set_node_group(node, f"g{i % 50}", 1)
    index.set_service((NS, "web"), True, 1)
    views = EndpointViews(index)
    big = slice_(*(endpoint(f"10.1.{i // 250}.{i % 250}", f"n{i}") for i in range(100)))
    fanned = views.views(ENDPOINTSLICE.type, big, nodes)
    assert views.filterings == 50
    assert all(len(view["endpoints"]) == 2 for _, view in fanned)  # 100 endpoints over 50 groups
    views.views(ENDPOINTSLICE.type, big, nodes)
    assert views.filterings == 50  # the same version again: all from the cache
    views.views(ENDPOINTSLICE.type, {**big, "metadata": {**big["metadata"], "resourceVersion": "11"}}, nodes)
    assert views.filterings == 100  # a new version: filtered again, once per group


def test_a_node_moving_groups_changes_the_cached_views_and_raises_the_resource_version() -> None:
    index = index_with(GROUPS)
    views = EndpointViews(index)
    assert ips(views.view(ENDPOINTSLICE.type, MIXED, "a1")) == ["10.0.0.1", "10.0.0.2"]
    assert ips(views.view(ENDPOINTSLICE.type, MIXED, "b1")) == ["10.0.0.3"]
    move = index.set_node_group("a2", "B", 40)
    assert move is not None and (move.old, move.new, move.rv) == ("A", "B", 40)
    a_view = views.view(ENDPOINTSLICE.type, MIXED, "a1")
    b_view = views.view(ENDPOINTSLICE.type, MIXED, "b1")
    assert ips(a_view) == ["10.0.0.1"] and ips(b_view) == ["10.0.0.2", "10.0.0.3"]
    assert views.view(ENDPOINTSLICE.type, MIXED, "a2") is b_view  # the mover sees its new group's view
    assert a_view["metadata"]["resourceVersion"] == "40"  # newer than what the edge holds (RV 10)
    assert index.set_node_group("a2", "B", 41) is None  # no change: nothing to re-send
    # the object's own later versions win over the floor again
    newer = {**MIXED, "metadata": {**MIXED["metadata"], "resourceVersion": "50"}}
    assert views.view(ENDPOINTSLICE.type, newer, "a1")["metadata"]["resourceVersion"] == "50"


def test_losing_the_annotation_passes_everything_with_a_newer_resource_version() -> None:
    index = index_with(GROUPS)
    views = EndpointViews(index)
    assert index.set_service((NS, "web"), False, 60)
    view = views.view(ENDPOINTSLICE.type, MIXED, "a1")
    assert len(view["endpoints"]) == 8 and view["metadata"]["resourceVersion"] == "60"
    assert not index.set_service((NS, "web"), False, 61)


# -- the planner: who gets what, and what goes again on a change --------------------------------------
def node_event(name: str, group: str | None, rv: str, kind: EventType = EventType.MODIFIED) -> Event:
    labels = {"node-role.kubernetes.io/edge": ""} | ({LABEL_BELONGING_TO: group} if group else {})
    obj = {"metadata": {"name": name, "labels": labels, "resourceVersion": rv}}
    return Event(kind, name, obj, None)


def planner_with(groups: dict[str, str], objects: list[Object], services: list[Object]) -> Planner:
    slices = {f"{NS}/{o['metadata']['name']}": o for o in objects if o["kind"] == "EndpointSlice"}
    endpoints = {f"{NS}/{o['metadata']['name']}": o for o in objects if o["kind"] == "Endpoints"}
    planner = Planner({ENDPOINTSLICE.type: slices, ENDPOINTS.type: endpoints})
    for node in ("a1", "a2", "b1", "c1"):
        planner.node_event(Event(EventType.ADDED, node, {"metadata": {"name": node}}, None))
    for node, group in groups.items():
        planner.group_event(node_event(node, group, "2", EventType.ADDED))
    for svc in services:
        planner.broadcast_event(SERVICE, Event(EventType.ADDED, f"{NS}/{svc['metadata']['name']}", svc, None))
    return planner


def pushed(pushes: list[Push]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for push in pushes:
        if push.kind is ENDPOINTSLICE:
            found[push.node] = ips(push.obj)
    return found


def test_broadcast_sends_each_edge_node_its_own_view() -> None:
    planner = planner_with(GROUPS, [], [service()])
    plan = planner.broadcast_event(ENDPOINTSLICE, Event(EventType.ADDED, f"{NS}/web-abc", MIXED, None))
    assert pushed(plan.pushes) == {"a1": ["10.0.0.1", "10.0.0.2"], "a2": ["10.0.0.1", "10.0.0.2"],
                                   "b1": ["10.0.0.3"], "c1": ["10.0.0.4", "10.0.0.7"]}


def test_a_relabelled_node_and_both_groups_get_their_new_views() -> None:
    planner = planner_with(GROUPS, [MIXED], [service()])
    plan = planner.group_event(node_event("a2", "B", "70"))
    assert pushed(plan.pushes) == {"a1": ["10.0.0.1"], "a2": ["10.0.0.2", "10.0.0.3"],
                                   "b1": ["10.0.0.2", "10.0.0.3"]}  # c1 (no group) is not concerned
    assert {p.operation for p in plan.pushes} == {"update"}
    assert {push_message(p).header.resource_version for p in plan.pushes} == {"70"}
    # losing the label moves it to the nodes without a group
    plan = planner.group_event(node_event("a2", None, "71"))
    assert pushed(plan.pushes) == {"a2": ["10.0.0.2", "10.0.0.4", "10.0.0.7"], "b1": ["10.0.0.3"],
                                   "c1": ["10.0.0.2", "10.0.0.4", "10.0.0.7"]}
    assert planner.group_event(node_event("a2", None, "72")).pushes == []  # a heartbeat: nothing


def test_a_node_moving_without_endpoints_gets_only_its_own_views() -> None:
    planner = planner_with(GROUPS | {"c1": "A"}, [slice_(endpoint("10.0.0.1", "a1"), endpoint("10.0.0.3", "b1"))],
                           [service()])
    plan = planner.group_event(node_event("c1", "B", "80"))
    assert pushed(plan.pushes) == {"c1": ["10.0.0.3"]}


def test_the_annotation_toggling_resends_the_services_objects_to_every_node() -> None:
    endpoints = endpoints_object([address("10.0.0.1", "a1"), address("10.0.0.3", "b1")], [])
    planner = planner_with(GROUPS, [MIXED, endpoints], [service(annotated=False)])
    plan = planner.broadcast_event(SERVICE, Event(EventType.MODIFIED, f"{NS}/web", service(rv="90"), service()))
    assert pushed(plan.pushes)["b1"] == ["10.0.0.3"]
    sent_endpoints = {p.node: p.obj for p in plan.pushes if p.kind is ENDPOINTS}
    assert sent_endpoints["a1"]["subsets"][0]["addresses"] == [address("10.0.0.1", "a1")]
    assert all(push_message(p).header.resource_version == "90" for p in plan.pushes if p.kind is not SERVICE)
    plan = planner.broadcast_event(SERVICE, Event(EventType.MODIFIED, f"{NS}/web", service(annotated=False, rv="91"),
                                                  service(rv="90")))
    assert len(pushed(plan.pushes)["b1"]) == 8
    # an edit that keeps the annotation as it was re-sends nothing but the Service
    plan = planner.broadcast_event(SERVICE, Event(EventType.MODIFIED, f"{NS}/web", service(annotated=False, rv="92"),
                                                  service(annotated=False, rv="91")))
    assert {p.kind for p in plan.pushes} == {SERVICE}


def test_the_default_kubernetes_slice_is_still_rewritten_to_the_metaserver() -> None:
    planner = planner_with(GROUPS, [], [])
    master = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": "kubernetes", "namespace": "default", "resourceVersion": "3",
                           "labels": {LABEL_SERVICE_NAME: "kubernetes"}},
              "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "https", "port": 6443}]}
    plan = planner.broadcast_event(ENDPOINTSLICE, Event(EventType.ADDED, "default/kubernetes", master, None))
    for push in plan.pushes:
        content = push_message(push).content
        assert content["endpoints"] == [{"addresses": ["127.0.0.1"]}] and content["ports"][0]["port"] == 10550


def test_a_new_edge_node_gets_its_groups_view_and_lookups_serve_views() -> None:
    planner = planner_with(GROUPS, [MIXED], [service()])
    planner.group_event(node_event("d1", "B", "95", EventType.ADDED))
    plan = planner.node_event(Event(EventType.ADDED, "d1", {"metadata": {"name": "d1"}}, None))
    assert pushed(plan.pushes) == {"d1": ["10.0.0.3"]}
    assert ips(planner.view("a1", ENDPOINTSLICE, MIXED)) == ["10.0.0.1", "10.0.0.2"]
    assert planner.view("a1", NODE, MIXED) is MIXED


def test_a_slice_update_older_than_the_floor_is_sent_again_at_a_fresh_revision() -> None:
    planner = planner_with(GROUPS, [MIXED], [service()])
    planner.group_event(node_event("a2", "B", "70"))  # views went out at RV 70
    # a change committed before the relabel (RV 60) whose watch event arrives after it
    late = slice_(endpoint("10.0.0.1", "a1"), endpoint("10.0.0.3", "b1"), rv="60")
    planner.caches[ENDPOINTSLICE.type][f"{NS}/web-abc"] = late  # type: ignore[index]
    plan = planner.broadcast_event(ENDPOINTSLICE, Event(EventType.MODIFIED, f"{NS}/web-abc", late, MIXED))
    assert plan.heal == [(NS, "web")]  # its views would carry RV 70 again: the edges would drop them
    healed = planner.heal((NS, "web"), 75)
    assert pushed(healed.pushes) == {"a1": ["10.0.0.1"], "a2": ["10.0.0.3"], "b1": ["10.0.0.3"],
                                     "c1": []}
    assert {push_message(p).header.resource_version for p in healed.pushes} == {"75"}
    assert planner.heal((NS, "web"), 75).pushes == []  # not above the floor: nothing
    newer = slice_(endpoint("10.0.0.1", "a1"), rv="80")
    assert planner.broadcast_event(ENDPOINTSLICE, Event(EventType.MODIFIED, f"{NS}/web-abc", newer, late)).heal == []


def test_a_slice_update_newer_than_a_relabel_but_seen_before_it_is_sent_again_above_both() -> None:
    planner = planner_with(GROUPS, [], [service()])
    newer = {**MIXED, "metadata": {**MIXED["metadata"], "resourceVersion": "80"}}
    planner.caches = {ENDPOINTSLICE.type: {f"{NS}/web-abc": newer}}
    sent = planner.broadcast_event(ENDPOINTSLICE, Event(EventType.MODIFIED, f"{NS}/web-abc", newer, MIXED))
    assert pushed(sent.pushes)["a1"] == ["10.0.0.1", "10.0.0.2"]  # under the old membership, at RV 80
    plan = planner.group_event(node_event("a2", "B", "70"))  # the relabel, committed before, seen after
    assert plan.heal == [(NS, "web")]  # its views at RV 80 would be dropped as not newer
    assert planner.heal((NS, "web"), 80).pushes == []  # not above the newest object
    healed = planner.heal((NS, "web"), 81)
    assert pushed(healed.pushes)["a1"] == ["10.0.0.1"]
    assert {push_message(p).header.resource_version for p in healed.pushes} == {"81"}
