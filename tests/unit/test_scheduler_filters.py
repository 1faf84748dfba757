"""The scheduler's pure filters and score (shared with the DaemonSet controller): quantities, selectors,
node affinity operators, taints and tolerations, resource fit and kube-scheduler's messages."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from cloudcore.controlplane.controllers.daemonsets import daemon_pod_spec, should_run
from cloudcore.controlplane.controllers.scheduler import (
    NodeView,
    Usage,
    feasible_nodes_to_find,
    filter_node,
    insufficient,
    match_node_selector,
    match_requirement,
    match_term,
    parse_quantity,
    pod_requests,
    quantity_value,
    resource_map,
    schedule,
    scheduling_fields,
    score_node,
    tolerates,
    unschedulable_message,
    untolerated_taint,
)

EDGE = "node-role.kubernetes.io/edge"


def node(name: str, *, labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None,
         ready: str = "True", unschedulable: bool = False, allocatable: dict[str, str] | None = None,
         capacity: dict[str, str] | None = None) -> NodeView:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": ready}]}
    if allocatable is not None:
        status["allocatable"] = allocatable
    if capacity is not None:
        status["capacity"] = capacity
    return NodeView.of({"metadata": {"name": name, "labels": labels or {}},
                        "spec": {"taints": taints or [], "unschedulable": unschedulable}, "status": status})


def container(cpu: str | None = None, memory: str | None = None, limits: dict[str, str] | None = None
              ) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return {"name": "c", "image": "x", "resources": resources}


# ---- quantities ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("500m", Decimal("0.5")), ("1", Decimal(1)), ("0.5", Decimal("0.5")), ("1.5", Decimal("1.5")),
    ("128Mi", Decimal(128 * 2 ** 20)), ("1Gi", Decimal(2 ** 30)), ("2Ki", Decimal(2048)), ("1Ei", Decimal(2 ** 60)),
    ("1K", Decimal(1000)), ("1k", Decimal(1000)), ("3M", Decimal(3_000_000)), ("1G", Decimal(10 ** 9)),
    ("1E", Decimal(10 ** 18)), ("2e3", Decimal(2000)), ("1E2", Decimal(100)), ("100n", Decimal("1e-7")),
    (".5", Decimal("0.5")), ("+2", Decimal(2)),
])
def test_parse_quantity(text: str, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1Qi", "1.2.3", "Mi", "1 Mi"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_quantity_units() -> None:
    assert quantity_value("cpu", "500m") == 500
    assert quantity_value("cpu", "0.5") == 500
    assert quantity_value("cpu", "1") == 1000
    assert quantity_value("cpu", "1m") == 1
    assert quantity_value("cpu", "0.0001") == 1  # rounded up, like MilliValue
    assert quantity_value("memory", "1Mi") == 1048576
    assert quantity_value("memory", "1.5k") == 1500
    assert quantity_value("pods", 110) == 110
    assert resource_map({"cpu": "2", "memory": "bad", "pods": "10"}) == {"cpu": 2000, "pods": 10}


def test_pod_requests_sum_containers_take_largest_init_and_default_to_limits() -> None:
    spec = {"containers": [container("250m", "64Mi"), container(limits={"cpu": "1", "memory": "1Gi"})],
            "initContainers": [container("2", "16Mi")], "overhead": {"cpu": "10m"}}
    assert pod_requests(spec) == {"cpu": 2010, "memory": 64 * 2 ** 20 + 2 ** 30, "pods": 1}
    assert pod_requests({"containers": [{"name": "c"}]}) == {"pods": 1}


# ---- selectors and affinity ------------------------------------------------------------------------------


@pytest.mark.parametrize(("operator", "values", "labels", "expected"), [
    ("In", ["a", "b"], {"k": "a"}, True), ("In", ["a"], {"k": "c"}, False), ("In", ["a"], {}, False),
    ("NotIn", ["a"], {"k": "b"}, True), ("NotIn", ["a"], {"k": "a"}, False), ("NotIn", ["a"], {}, True),
    ("Exists", [], {"k": ""}, True), ("Exists", [], {}, False),
    ("DoesNotExist", [], {}, True), ("DoesNotExist", [], {"k": "x"}, False),
    ("Gt", ["5"], {"k": "6"}, True), ("Gt", ["5"], {"k": "5"}, False), ("Gt", ["5"], {"k": "x"}, False),
    ("Gt", ["5"], {}, False), ("Lt", ["5"], {"k": "4"}, True), ("Lt", ["5"], {"k": "-1"}, True),
    ("Lt", ["5", "6"], {"k": "1"}, False), ("Bogus", ["a"], {"k": "a"}, False),
])
def test_match_requirement_operators(operator: str, values: list[str], labels: dict[str, str],
                                     expected: bool) -> None:
    assert match_requirement({"key": "k", "operator": operator, "values": values}, labels) is expected


def test_terms_and_fields() -> None:
    n = node("edge-1", labels={EDGE: "", "zone": "a"})
    assert match_term({"matchExpressions": [{"key": EDGE, "operator": "Exists"}]}, n)
    assert match_term({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-1"]}]}, n)
    assert not match_term({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["edge-1"]}]}, n)
    assert not match_term({"matchExpressions": [{"key": EDGE, "operator": "Exists"}],
                           "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]}, n)
    assert not match_term({}, n)  # an empty term matches nothing


def test_node_selector_and_required_affinity() -> None:
    n = node("n1", labels={"disk": "ssd", "zone": "a"})
    assert match_node_selector({}, n)
    assert match_node_selector({"nodeSelector": {"disk": "ssd"}}, n)
    assert not match_node_selector({"nodeSelector": {"disk": "hdd"}}, n)
    terms = [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
             {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
    assert match_node_selector({"affinity": affinity}, n)  # terms are ORed
    assert not match_node_selector({"affinity": affinity, "nodeSelector": {"disk": "hdd"}}, n)  # both must hold
    no_terms: dict[str, Any] = {"nodeSelectorTerms": []}
    empty = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": no_terms}}
    assert not match_node_selector({"affinity": empty}, n)


# ---- taints and tolerations ----------------------------------------------------------------------------


@pytest.mark.parametrize(("toleration", "taint", "expected"), [
    ({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
     {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
    ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"}, True),  # Equal by default
    ({"key": "k", "value": "w"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
    ({"key": "k", "operator": "Exists"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
    ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, {"key": "k", "effect": "NoSchedule"}, False),
    ({"operator": "Exists"}, {"key": "anything", "value": "x", "effect": "NoExecute"}, True),
    ({"key": "other", "operator": "Exists"}, {"key": "k", "effect": "NoSchedule"}, False),
    ({"key": EDGE, "operator": "Equal"}, {"key": EDGE, "effect": "NoSchedule"}, True),  # "" == ""
])
def test_tolerates(toleration: dict[str, Any], taint: dict[str, Any], expected: bool) -> None:
    assert tolerates(toleration, taint) is expected


def test_untolerated_taint_only_counts_the_given_effects() -> None:
    taints = [{"key": "soft", "effect": "PreferNoSchedule"}, {"key": "hard", "effect": "NoSchedule"}]
    assert untolerated_taint(taints, []) == {"key": "hard", "effect": "NoSchedule"}
    assert untolerated_taint(taints, [{"key": "hard", "operator": "Exists"}]) is None
    assert untolerated_taint(taints, [], ("NoExecute",)) is None


def test_node_readiness_becomes_a_taint() -> None:
    assert node("a").taints == ()
    assert node("b", ready="False").taints == ({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},)
    assert node("c", ready="Unknown").taints == ({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},)
    explicit = node("d", ready="Unknown", taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}])
    assert len(explicit.taints) == 1


def test_scheduling_fields_ignore_heartbeats() -> None:
    base = {"metadata": {"labels": {"a": "b"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "T1"}]}}
    beat: dict[str, Any] = {"metadata": {"labels": {"a": "b"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "T2"}]}}
    assert scheduling_fields(base) == scheduling_fields(beat)
    beat["status"]["conditions"][0]["status"] = "False"
    assert scheduling_fields(base) != scheduling_fields(beat)


# ---- resources, filters, score, messages -----------------------------------------------------------------


def test_resource_fit_against_allocatable_with_capacity_fallback() -> None:
    n = node("n", allocatable={"cpu": "1", "pods": "2"}, capacity={"cpu": "4", "memory": "1Gi"})
    assert n.allocatable == {"cpu": 1000, "memory": 2 ** 30, "pods": 2}
    assert insufficient({"cpu": 500, "pods": 1}, {"cpu": 500, "pods": 1}, n) == []
    assert insufficient({"cpu": 501, "pods": 1}, {"cpu": 500, "pods": 1}, n) == ["Insufficient cpu"]
    assert insufficient({"memory": 2 ** 30, "pods": 1}, {"memory": 1, "pods": 2}, n) == [
        "Insufficient memory", "Too many pods"]
    bare = node("bare")  # reports nothing: not limited on the basic resources
    assert insufficient({"cpu": 10 ** 6, "memory": 10 ** 12, "pods": 1}, {"pods": 500}, bare) == []
    assert insufficient({"nvidia.com/gpu": 1}, {}, bare) == ["Insufficient nvidia.com/gpu"]


def test_filter_order_and_reasons() -> None:
    spec: dict[str, Any] = {"nodeSelector": {"disk": "ssd"}}
    requests = {"cpu": 100, "pods": 1}
    cordoned = node("c", unschedulable=True, labels={"disk": "ssd"})
    assert filter_node(spec, requests, cordoned, {}) == ["node(s) were unschedulable"]
    tolerant = {**spec, "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                         "effect": "NoSchedule"}]}
    assert filter_node(tolerant, requests, cordoned, {}) == []
    tainted = node("t", labels={"disk": "ssd"}, taints=[{"key": EDGE, "value": "", "effect": "NoSchedule"}])
    assert filter_node(spec, requests, tainted, {}) == [f"node(s) had untolerated taint {{{EDGE}: }}"]
    assert filter_node(spec, requests, node("x"), {}) == ["node(s) didn't match Pod's node affinity/selector"]
    assert filter_node(spec, requests, node("r", ready="False", labels={"disk": "ssd"}), {}) == [
        "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
    full = node("f", labels={"disk": "ssd"}, allocatable={"cpu": "100m"})
    assert filter_node(spec, requests, full, {"cpu": 50}) == ["Insufficient cpu"]


def test_unschedulable_message_like_kube_scheduler() -> None:
    reasons = Counter({"node(s) didn't match Pod's node affinity/selector": 1,
                       f"node(s) had untolerated taint {{{EDGE}: }}": 2})
    assert unschedulable_message(3, reasons) == (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        f"2 node(s) had untolerated taint {{{EDGE}: }}.")
    assert unschedulable_message(0, Counter()) == "no nodes available to schedule pods"


def test_score_prefers_least_requested_then_fewer_pods_then_name() -> None:
    nodes = [node(n, allocatable={"cpu": "2", "memory": "4Gi", "pods": "10"}) for n in ("b", "a", "c")]
    spec = {"containers": [container("500m", "256Mi")]}
    assert schedule(spec, nodes, {}).node == "a"  # all equal: by name
    busy = Usage()
    busy.add({"cpu": 1000, "pods": 1}, (1000, 2 ** 30), 1)
    assert schedule(spec, nodes, {"a": busy}).node == "b"
    assert score_node((500, 256 * 2 ** 20), nodes[0], (0, 0)) > score_node((500, 256 * 2 ** 20), nodes[0],
                                                                         (1000, 0))
    idle = Usage()
    idle.add({"pods": 1}, (0, 0), 1)  # same score, one more pod
    unlimited = [node("x"), node("y")]
    assert schedule({"containers": [container()]}, unlimited, {"x": idle}).node == "y"


def test_schedule_reports_why_nothing_fits() -> None:
    nodes = [node("n1", allocatable={"cpu": "1"}), node("n2", taints=[{"key": EDGE, "effect": "NoSchedule"}]),
             node("n3", ready="False")]
    decision = schedule({"containers": [container("2")]}, nodes, {})
    assert decision.node is None
    assert decision.message == (
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
        f"{{{EDGE}: }}, 1 node(s) had untolerated taint {{node.kubernetes.io/not-ready: }}.")


# ---- daemonset placement ---------------------------------------------------------------------------------


def test_daemon_pods_tolerate_node_problems_but_not_other_taints() -> None:
    spec = daemon_pod_spec({"containers": [container()]})
    assert should_run(spec, node("down", ready="Unknown", unschedulable=True)) == (True, True)
    assert should_run(spec, node("nr", ready="False")) == (True, True)
    soft = node("edge", taints=[{"key": EDGE, "effect": "NoSchedule"}])
    assert should_run(spec, soft) == (False, True)  # no new pod, the running one stays
    hard = node("edge", taints=[{"key": EDGE, "effect": "NoExecute"}])
    assert should_run(spec, hard) == (False, False)
    assert should_run({**spec, "nodeSelector": {"x": "y"}}, node("n")) == (False, False)
    host = daemon_pod_spec({"containers": [container()], "hostNetwork": True})
    assert any(t["key"] == "node.kubernetes.io/network-unavailable" for t in host["tolerations"])
    again = daemon_pod_spec(spec)
    assert again["tolerations"] == spec["tolerations"]  # idempotent


@pytest.mark.parametrize(("total", "wanted"), [(0, 0), (3, 3), (99, 99), (100, 100), (200, 100), (1000, 420),
                                               (5000, 500), (10000, 500)])
def test_feasible_nodes_to_find_is_kube_schedulers_adaptive_percentage(total: int, wanted: int) -> None:
    assert feasible_nodes_to_find(total) == wanted


def test_a_large_cluster_is_filtered_until_enough_nodes_fit_each_pod_starting_where_the_last_stopped() -> None:
    nodes = [node(f"n{i:04d}") for i in range(1000)]
    first = schedule({"containers": [container()]}, nodes, {})
    assert (first.node, first.examined) == ("n0000", 420)  # 420 of 1,000 fit: enough; the best of them
    second = schedule({"containers": [container()]}, nodes, {}, start=first.examined)
    assert (second.node, second.examined) == ("n0420", 420)
    wrapped = schedule({"containers": [container()]}, nodes, {}, start=900)
    assert (wrapped.node, wrapped.examined) == ("n0000", 420)  # n0900..n0999, then n0000..n0319
    tainted = [node(f"t{i:04d}", taints=[{"key": EDGE, "effect": "NoSchedule"}]) for i in range(1000)]
    none = schedule({"containers": [container()]}, [*tainted, node("z-last")], {}, start=5)
    assert none.node == "z-last" and none.examined == 1001  # it keeps looking until one fits
    nothing = schedule({"containers": [container()]}, tainted, {}, start=5)
    assert nothing.node is None and nothing.message.startswith("0/1000 nodes are available: 1000 node(s)")
