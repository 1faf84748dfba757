"""The controller kit's sans-I/O parts: the work queue (with a fake clock, no sleeps) and the shared helpers,
plus the pure logic the controllers build on: rollout arithmetic, node conditions, endpoints and slices."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cloudcore.controlplane.controllers import kit
from cloudcore.controlplane.controllers.deployments import (
    new_rs_replicas,
    old_scale_down_plan,
    scaled_value,
    surge_and_unavailable,
    template_hash,
    without_hash,
)
from cloudcore.controlplane.controllers.endpoints import build_subsets, resolve_ports
from cloudcore.controlplane.controllers.endpoints import plan_slices as build_plan
from cloudcore.controlplane.controllers.nodelifecycle import mark_unknown, set_unreachable_taints
from cloudcore.controlplane.controllers.replicasets import deletion_rank
from cloudcore.controlplane.store.types import Key, StoredObject


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_queue(capacity: int = 100) -> tuple[kit.WorkQueue[str], FakeClock]:
    clock = FakeClock()
    return kit.WorkQueue(capacity, base_delay=0.005, max_delay=60.0, clock=clock), clock


# ---- the work queue ----------------------------------------------------------------------------------


def test_queue_is_fifo_and_deduplicates() -> None:
    queue, _ = make_queue()
    for key in ("a", "b", "a", "c", "b"):
        assert queue.add(key)
    assert len(queue) == 3
    assert [queue.get(), queue.get(), queue.get(), queue.get()] == ["a", "b", "c", None]


def test_key_added_while_processing_comes_back_once_after_done() -> None:
    queue, _ = make_queue()
    queue.add("a")
    assert queue.get() == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get() is None  # never handed to two workers at once
    queue.done("a")
    assert queue.get() == "a"
    queue.done("a")
    assert queue.get() is None


def test_backoff_doubles_per_failure_up_to_the_cap_and_forget_resets() -> None:
    queue, _ = make_queue()
    delays = [queue.add_rate_limited("k") for _ in range(16)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 60.0 and max(delays) == 60.0
    assert queue.failures("k") == 16
    queue.forget("k")
    assert queue.failures("k") == 0
    assert queue.backoff("k") == 0.005


def test_rate_limited_key_waits_for_the_fake_clock() -> None:
    queue, clock = make_queue()
    queue.add_rate_limited("k")
    queue.add_rate_limited("k")  # second failure: the earlier due time (5 ms) stays
    assert queue.get() is None
    assert queue.next_due() == pytest.approx(0.005)
    clock.now += 0.004
    assert queue.get() is None
    clock.now += 0.002
    assert queue.next_due() == 0.0
    assert queue.get() == "k"
    queue.done("k")
    assert queue.next_due() is None


def test_add_after_keeps_the_earliest_due_time_and_add_supersedes_it() -> None:
    queue, clock = make_queue()
    queue.add_after("k", 10.0)
    queue.add_after("k", 30.0)
    queue.add_after("j", 5.0)
    assert queue.waiting == 2
    clock.now += 10.0
    assert [queue.get(), queue.get(), queue.get()] == ["j", "k", None]
    queue.add_after("x", 10.0)
    queue.add("x")  # due now: the delayed entry must not bring it back a second time
    assert queue.get() == "x"
    queue.done("x")
    clock.now += 20.0
    assert queue.get() is None


def test_add_after_of_a_queued_key_is_a_no_op() -> None:
    queue, clock = make_queue()
    queue.add("k")
    queue.add_after("k", 5.0)
    assert queue.get() == "k"
    queue.done("k")
    clock.now += 10.0
    assert queue.get() is None


def test_bounded_queue_drops_and_reports_overflow_once() -> None:
    queue, _ = make_queue(capacity=3)
    assert all(queue.add(k) for k in ("a", "b", "c"))
    assert queue.add("a")  # already queued: not a new key, not dropped
    assert not queue.add("d")
    assert not queue.add_after("e", 1.0)
    assert queue.dropped == 2
    assert queue.take_overflow() is True
    assert queue.take_overflow() is False
    assert queue.get() == "a"
    queue.done("a")
    assert queue.add("d")


def test_superseded_heap_entries_are_pruned() -> None:
    queue, clock = make_queue()
    for i in range(500):
        queue.add_after("k", 1000.0 - i)  # each earlier than the last
    assert queue.waiting == 1
    assert len(queue._heap) < 200
    clock.now += 1000.0
    assert queue.get() == "k"


def test_queue_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        kit.WorkQueue(0)
    with pytest.raises(ValueError):
        kit.WorkQueue(10, base_delay=1.0, max_delay=0.5)


# ---- helpers -----------------------------------------------------------------------------------------


def test_set_condition_keeps_transition_time_unless_status_changes() -> None:
    conditions: list[dict[str, Any]] = []
    assert kit.set_condition(conditions, "Ready", "True", "Up", "ok", "T1")
    assert not kit.set_condition(conditions, "Ready", "True", "Up", "ok", "T2")
    assert kit.set_condition(conditions, "Ready", "True", "Still", "ok", "T3")
    assert conditions[0]["lastTransitionTime"] == "T1" and conditions[0]["reason"] == "Still"
    assert kit.set_condition(conditions, "Ready", "False", "Down", "gone", "T4", update_time=True)
    assert conditions[0]["lastTransitionTime"] == "T4" and conditions[0]["lastUpdateTime"] == "T4"
    assert len(conditions) == 1


def _summary(pod: dict[str, Any]) -> kit.PodSummary:
    meta = {"name": "p", "namespace": "default", "uid": "u1", **pod.get("metadata", {})}
    obj = {**pod, "metadata": meta}
    return kit.summarize_pod(kit.Snapshot(StoredObject(Key("pods", "default", "p"), 1, orjson.dumps(obj), "u1",
                                                       meta.get("labels") or {}, {})))


def test_pod_summary_and_availability_with_min_ready_seconds() -> None:
    ready_at = kit.parse_time("2024-05-01T10:00:00Z")
    assert ready_at is not None
    pod = _summary({"metadata": {"ownerReferences": [{"uid": "rs1", "kind": "ReplicaSet", "name": "web-1",
                                                     "controller": True}]},
                    "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                        {"name": "http", "containerPort": 8080}]}]},
                    "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T10:00:00Z"}]}})
    assert (pod.controller_uid, pod.controller_kind, pod.controller_name) == ("rs1", "ReplicaSet", "web-1")
    assert (pod.node, pod.ip, pod.ports, pod.active) == ("n1", "10.0.0.1", (("http", 8080, "TCP"),), True)
    assert pod.available(0, ready_at) == (True, None)
    assert pod.available(10, ready_at + 4) == (False, 6.0)
    assert pod.available(10, ready_at + 10) == (True, None)
    pending = _summary({"metadata": {"deletionTimestamp": "2024-05-01T10:00:00Z"}, "status": {"phase": "Pending"}})
    assert pending.available(0, ready_at) == (False, None)
    assert pending.deleting and not pending.active and not pending.terminal


def test_time_round_trip_and_bad_times() -> None:
    assert kit.rfc3339(kit.parse_time("2024-05-01T10:00:00Z") or 0) == "2024-05-01T10:00:00Z"
    assert kit.parse_time("2024-05-01T10:00:00.250000Z") == pytest.approx(
        (kit.parse_time("2024-05-01T10:00:00Z") or 0) + 0.25)
    assert kit.parse_time("yesterday") is None and kit.parse_time(None) is None


def test_controller_of_and_pod_states() -> None:
    pod = {"metadata": {"ownerReferences": [{"uid": "1", "controller": False}, {"uid": "2", "controller": True}]},
           "status": {"phase": "Succeeded"}}
    assert (kit.controller_of(pod) or {})["uid"] == "2"
    assert kit.pod_terminal(pod)
    assert kit.controller_of({"metadata": {}}) is None


# ---- rollout arithmetic ------------------------------------------------------------------------------


def _deployment(replicas: int, surge: Any = "25%", unavailable: Any = "25%") -> dict[str, Any]:
    return {"metadata": {"generation": 1},
            "spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": surge, "maxUnavailable": unavailable}}}}


def _rs(name: str, replicas: int, available: int, created: str = "2024-01-01T00:00:00Z",
        status_replicas: int | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas if status_replicas is None else status_replicas,
                       "availableReplicas": available}}


@pytest.mark.parametrize(("value", "total", "up", "expected"), [
    ("25%", 10, True, 3), ("25%", 10, False, 2), ("25%", 4, True, 1), ("25%", 4, False, 1), ("0%", 5, True, 0),
    (2, 10, True, 2), ("3", 10, False, 3), ("50%", 1, False, 0), ("50%", 1, True, 1),
])
def test_scaled_value_rounding(value: Any, total: int, up: bool, expected: int) -> None:
    assert scaled_value(value, total, up) == expected


def test_surge_and_unavailable_never_both_zero() -> None:
    assert surge_and_unavailable(_deployment(10)) == (3, 2)
    assert surge_and_unavailable(_deployment(1, 0, "25%")) == (0, 1)
    assert surge_and_unavailable(_deployment(3, 0, 0)) == (0, 1)


def test_new_replicaset_grows_within_surge() -> None:
    d = _deployment(4, 1, 1)
    old, new = _rs("old", 4, 4), _rs("new", 0, 0)
    assert new_rs_replicas(d, [old, new], new) == 1  # 4 + 1 surge = 5 in total
    old_shrinking = _rs("old", 3, 3, status_replicas=4)  # its fourth pod is not gone yet
    assert new_rs_replicas(d, [old_shrinking, _rs("new", 1, 0)], _rs("new", 1, 0)) == 1
    assert new_rs_replicas(d, [_rs("old", 3, 3), _rs("new", 1, 0)], _rs("new", 1, 0)) == 2


def test_old_replicasets_shrink_keeping_min_available() -> None:
    d = _deployment(4, 1, 1)
    old, new = _rs("old", 4, 4), _rs("new", 1, 0)
    # 5 pods, 4 available, 3 must stay available, 1 new pod not available yet
    assert [(rs["metadata"]["name"], n) for rs, n in old_scale_down_plan(d, [old], new)] == [("old", 3)]
    assert old_scale_down_plan(d, [_rs("old", 3, 3)], _rs("new", 2, 0)) == []  # nothing more may go
    # unhealthy old replicas go first: 5 pods - 3 to keep available = 2 may go, both unavailable ones
    unhealthy = _rs("old", 4, 1)
    assert [n for _, n in old_scale_down_plan(d, [unhealthy], _rs("new", 1, 1))] == [2]


def test_template_hash_is_stable_and_ignores_the_hash_label() -> None:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a"}]}}
    first = template_hash(template)
    assert first == template_hash({"spec": template["spec"], "metadata": {"labels": {"app": "web"}}})
    assert first != template_hash(template, 1)
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(first) <= 10
    labelled = {"metadata": {"labels": {"app": "web", "pod-template-hash": first}}, "spec": template["spec"]}
    assert without_hash(labelled) == template


def test_deletion_rank_prefers_unscheduled_then_not_ready_then_newest() -> None:
    def pod(name: str, node: str = "", ready: bool = False, created: str = "2024-01-01T00:00:00Z") -> kit.PodSummary:
        conditions = [{"type": "Ready", "status": "True" if ready else "False",
                       "lastTransitionTime": "2024-01-01T00:00:00Z"}]
        return _summary({"metadata": {"name": name, "creationTimestamp": created},
                         "spec": {"nodeName": node} if node else {},
                         "status": {"phase": "Running" if node else "Pending", "conditions": conditions}})
    pods = {"ready-old": pod("ready-old", "n1", True),
            "ready-new": pod("ready-new", "n1", True, "2024-02-01T00:00:00Z"),
            "not-ready": pod("not-ready", "n1"), "unscheduled": pod("unscheduled")}
    order = sorted(pods, key=lambda name: deletion_rank(pods[name]))
    assert order == ["unscheduled", "not-ready", "ready-new", "ready-old"]


# ---- node lifecycle helpers ----------------------------------------------------------------------------


def test_mark_unknown_and_unreachable_taints() -> None:
    node: dict[str, Any] = {"metadata": {"creationTimestamp": "T0"},
                            "status": {"conditions": [{"type": "Ready", "status": "True"},
                                                      {"type": "MemoryPressure", "status": "False"},
                                                      {"type": "NetworkUnavailable", "status": "False"}]}}
    assert mark_unknown(node, "T1")
    statuses = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert statuses == {"Ready": "Unknown", "MemoryPressure": "Unknown", "NetworkUnavailable": "False"}
    assert not mark_unknown(node, "T2")
    fresh: dict[str, Any] = {"metadata": {"creationTimestamp": "T0"}}
    assert mark_unknown(fresh, "T1")
    assert fresh["status"]["conditions"][0]["reason"] == "NodeStatusNeverUpdated"

    assert set_unreachable_taints(node, True, "T1")
    assert not set_unreachable_taints(node, True, "T2")
    assert {(t["key"], t["effect"]) for t in node["spec"]["taints"]} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")}
    node["spec"]["taints"].append({"key": "dedicated", "effect": "NoSchedule"})
    assert set_unreachable_taints(node, False, "T3")
    assert node["spec"]["taints"] == [{"key": "dedicated", "effect": "NoSchedule"}]
    assert not set_unreachable_taints(node, False, "T4")


# ---- endpoints -----------------------------------------------------------------------------------------


def _endpoint_pod(name: str, ip: str, ready: bool = True, ports: list[dict[str, Any]] | None = None,
                  deleting: bool = False) -> kit.PodSummary:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    obj = {"metadata": meta, "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports or []}]},
           "status": {"phase": "Running", "podIP": ip,
                      "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    return kit.summarize_pod(kit.Snapshot(StoredObject(Key("pods", "default", name), 1, orjson.dumps(obj),
                                                       f"uid-{name}", {}, {})))


SERVICE: dict[str, Any] = {"metadata": {"name": "svc"}, "spec": {"ports": [
    {"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"},
    {"name": "raw", "port": 81, "targetPort": 9000, "protocol": "TCP"}]}}


def test_target_ports_resolve_by_name_per_pod() -> None:
    named = _endpoint_pod("a", "10.0.0.1", ports=[{"name": "http", "containerPort": 8080}])
    assert resolve_ports(SERVICE, named) == (("web", 8080, "TCP", ""), ("raw", 9000, "TCP", ""))
    unnamed = _endpoint_pod("b", "10.0.0.2")
    assert resolve_ports(SERVICE, unnamed) == (("raw", 9000, "TCP", ""),)


def test_subsets_group_by_ports_split_readiness_and_skip_terminating() -> None:
    pods = [_endpoint_pod("a", "10.0.0.2", ports=[{"name": "http", "containerPort": 8080}]),
            _endpoint_pod("b", "10.0.0.1", ready=False, ports=[{"name": "http", "containerPort": 8080}]),
            _endpoint_pod("c", "10.0.0.3"),
            _endpoint_pod("d", "10.0.0.4", deleting=True, ports=[{"name": "http", "containerPort": 8080}])]
    subsets = build_subsets(SERVICE, pods)
    assert len(subsets) == 2
    by_ports = {len(s["ports"]): s for s in subsets}
    assert [a["ip"] for a in by_ports[2]["addresses"]] == ["10.0.0.2"]
    assert [a["ip"] for a in by_ports[2]["notReadyAddresses"]] == ["10.0.0.1"]
    assert [a["ip"] for a in by_ports[1]["addresses"]] == ["10.0.0.3"]
    assert by_ports[1]["addresses"][0]["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "c",
                                                        "uid": "uid-c"}


def test_endpoints_are_truncated_at_1000_addresses_ready_first() -> None:
    pods = [_endpoint_pod(f"p{i}", f"10.0.{i // 250}.{i % 250}", ready=i % 2 == 0) for i in range(1500)]
    [subset] = build_subsets({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80, "targetPort": 80}]}}, pods)
    assert len(subset["addresses"]) == 750 and len(subset["notReadyAddresses"]) == 250


def test_slice_plan_keeps_endpoints_in_place_and_fills_free_room() -> None:
    ports = [{"name": "web", "port": 8080, "protocol": "TCP"}]

    def endpoint(i: int) -> dict[str, Any]:
        return {"addresses": [f"10.0.0.{i}"], "conditions": {"ready": True}, "targetRef": {"uid": f"u{i}"}}

    first = [endpoint(i) for i in range(100)]
    second = [endpoint(i) for i in range(100, 150)]
    existing = [{"metadata": {"name": "svc-aaaaa"}, "ports": ports, "endpoints": first},
                {"metadata": {"name": "svc-bbbbb"}, "ports": ports, "endpoints": second}]
    wanted = [endpoint(i) for i in range(1, 160)]  # 0 went away, 150..159 are new
    plan, stale = build_plan(existing, [(ports, wanted)])
    assert stale == []
    assert [(s["metadata"]["name"] if s else None, len(eps)) for s, _, eps in plan] == [("svc-aaaaa", 100),
                                                                                      ("svc-bbbbb", 59)]
    # kept endpoints stay where they were, in their order; the free place takes a new one
    assert plan[0][2] == [*first[1:], endpoint(150)]
    assert plan[1][2] == [*second, *(endpoint(i) for i in range(151, 160))]

    many = [endpoint(i) for i in range(250)]
    plan, stale = build_plan([], [(ports, many)])
    assert [len(eps) for _, _, eps in plan] == [100, 100, 50] and all(s is None for s, _, _ in plan)

    plan, stale = build_plan(existing, [])
    assert [(s["metadata"]["name"] if s else None, eps) for s, _, eps in plan] == [("svc-aaaaa", [])]
    assert [s["metadata"]["name"] for s in stale] == ["svc-bbbbb"]
