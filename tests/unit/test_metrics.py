"""Tests for the metrics kit (common/metrics.py) and the cloud and edge collectors, without sockets."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cloudcore.cloudhub.metrics import CloudHubCollector, CloudHubMetrics, depth_range
from common.config import CloudCoreConfig, ConfigError, EdgeCoreConfig, load_edgecore
from common.message import Message
from common.metrics import (
    OTHER,
    CheckResult,
    LoopHistogram,
    MessageCounter,
    ReadinessCheck,
    add_process_collectors,
    new_registry,
    readiness,
    resource_type_of,
    split_bind_address,
)
from common.reliable import NodeQueue, OutboxStats
from edgecore.edgehub.metrics import EdgeCollector, EdgeHubMetrics, PodPhases, sqlite_file_sizes


def samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed back from the text format, by (name, sorted labels)."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(registry: Any, name: str, **labels: str) -> float:
    return samples(registry)[name, tuple(sorted(labels.items()))]


# -- labels ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("resource", "expected"), [
    ("default/pod/web", "pod"),
    ("default/podstatus/web", "podstatus"),
    ("null/node/n1", "node"),
    ("kube-node-lease/lease/n1", "lease"),
    ("default/configmap", "configmap"),
    ("membership/detail", "membership"),
    ("device/thermo-1/twin/cloud_updated", "device"),
    ("node", "node"),
    ("default/k8s/ca.crt", "k8s"),
    ("default/whatever/x", OTHER),
    ("", OTHER),
    ("a/b/c/d/e", OTHER),
])
def test_resource_types_are_a_fixed_vocabulary(resource: str, expected: str) -> None:
    assert resource_type_of(resource) == expected


def test_message_counter_label_set_stays_bounded_under_arbitrary_input() -> None:
    registry = new_registry()
    counter = MessageCounter("test_messages", "test", registry)
    for i in range(500):
        counter.count(f"ns/type{i}/name", f"op{i}")
        counter.count("default/pod/web", "update")
    found = samples(registry)
    series = {labels for (name, labels) in found if name == "kubeedge_test_messages_total"}
    assert series == {(("operation", "other"), ("type", "other")), (("operation", "update"), ("type", "pod"))}
    assert value(registry, "kubeedge_test_messages_total", type="pod", operation="update") == 500
    assert value(registry, "kubeedge_test_messages_total", type=OTHER, operation=OTHER) == 500
    assert counter.count_by_type == {OTHER: {OTHER: 500}, "pod": {"update": 500}}  # unknown ops share one entry


def test_bind_address_split() -> None:
    assert split_bind_address("127.0.0.1:9091") == ("127.0.0.1", 9091)
    assert split_bind_address("[::1]:10551") == ("::1", 10551)


def test_registries_are_independent() -> None:
    first, second = CloudHubMetrics(new_registry()), CloudHubMetrics(new_registry())
    first.sent.count("default/pod/a", "insert")
    assert value(first.registry, "kubeedge_cloudhub_messages_sent_total", type="pod", operation="insert") == 1
    assert ("kubeedge_cloudhub_messages_sent_total", (("operation", "insert"), ("type", "pod"))) \
        not in samples(second.registry)
    assert not any(name.startswith("process_") for name, _ in samples(first.registry))
    add_process_collectors(first.registry)  # once per process, by the monitor wiring
    assert samples(first.registry)["process_resident_memory_bytes", ()] > 0


# -- readiness -------------------------------------------------------------------------------------

def check(name: str, ok: bool, required: bool = True, detail: str = "") -> ReadinessCheck:
    async def probe() -> CheckResult:
        return CheckResult(ok, detail)
    return ReadinessCheck(name, probe, required)


async def test_ready_only_when_every_required_check_passes() -> None:
    assert await readiness([check("database", True), check("cloud", False, required=False, detail="disconnected")]) \
        == (True, "[+]database ok\n[-]cloud failed: disconnected (optional)\nreadyz check passed\n")
    ready, body = await readiness([check("kube-api", False, detail="refused"), check("cloudhub", True)])
    assert not ready
    assert body.splitlines() == ["[-]kube-api failed: refused", "[+]cloudhub ok", "readyz check failed"]


async def test_a_hanging_or_raising_probe_is_a_failed_check() -> None:
    async def hangs() -> CheckResult:
        await asyncio.sleep(10)
        return CheckResult(True)

    async def raises() -> CheckResult:
        raise OSError("database is locked")

    ready, body = await readiness([ReadinessCheck("slow", hangs), ReadinessCheck("db", raises)], timeout=0.05)
    assert not ready
    assert "[-]slow failed: no answer in 0.05s" in body
    assert "[-]db failed: OSError: database is locked" in body


# -- cloud collector -------------------------------------------------------------------------------

def pod_update(name: str, rv: int) -> Message:
    return Message.new(source="edgecontroller", group="resource", operation="update",
                       resource=f"default/pod/{name}", content={"metadata": {"name": name}}, resource_version=str(rv))


class FakeHub:
    """What CloudHubCollector reads of CloudHubModule."""

    def __init__(self, metrics: CloudHubMetrics) -> None:
        self.metrics = metrics
        self.sessions: dict[str, Any] = {}
        self.queues: dict[str, NodeQueue] = {}
        self.listening = True
        self.syncs = SimpleNamespace(enabled=True, backlog=0,
                                     writes=Counter({("write", "success"): 3, ("delete", "failure"): 1}))


def test_cloud_collector_sums_queues_without_a_node_label() -> None:
    metrics = CloudHubMetrics(new_registry())
    hub = FakeHub(metrics)
    for i in range(1000):  # 1,000 nodes: the scrape stays a fixed set of series
        queue = hub.queues[f"n{i}"] = NodeQueue(resolve=lambda key: None, on_ack_rtt=metrics.ack_latency.observe)
        for j in range(i % 3):
            queue.enqueue(f"default/pod/p{j}", pod_update(f"p{j}", 1), rv=1, delete=False)
    deep = hub.queues["n0"]
    for j in range(150):
        deep.enqueue(f"default/pod/q{j}", pod_update(f"q{j}", 1), rv=1, delete=False)
    hub.sessions["n0"] = SimpleNamespace(connection=object())
    written = deep.next_message(100.0)
    assert written is not None
    deep.ack(written.message.msg_id, 100.25)
    metrics.registry.register(CloudHubCollector(hub))  # type: ignore[arg-type]

    found = samples(metrics.registry)
    assert not any("node" in dict(labels) for _, labels in found)
    assert len(found) < 80
    r = metrics.registry
    assert value(r, "kubeedge_cloudhub_connected_nodes", transport="websocket") == 1
    assert value(r, "kubeedge_cloudhub_connected_nodes", transport="quic") == 0
    assert value(r, "kubeedge_cloudhub_node_queues") == 1000
    assert value(r, "kubeedge_cloudhub_queue_messages", state="pending", connected="true") == 149
    assert value(r, "kubeedge_cloudhub_queue_messages", state="pending", connected="false") == sum(
        i % 3 for i in range(1, 1000))
    assert value(r, "kubeedge_cloudhub_queue_depth_max_messages") == 149
    assert value(r, "kubeedge_cloudhub_node_queue_depth_nodes", depth="100-999") == 1
    assert value(r, "kubeedge_cloudhub_node_queue_depth_nodes", depth="0") == 333
    assert value(r, "kubeedge_cloudhub_first_sends_total") == 1
    assert value(r, "kubeedge_cloudhub_acks_total") == 1
    assert value(r, "kubeedge_cloudhub_resends_total") == 0
    assert value(r, "kubeedge_cloudhub_ack_latency_seconds_count") == 1
    assert value(r, "kubeedge_cloudhub_ack_latency_seconds_bucket", le="0.25") == 1
    assert value(r, "kubeedge_cloudhub_ack_latency_seconds_bucket", le="0.1") == 0
    assert value(r, "kubeedge_cloudhub_objectsync_writes_total", operation="write", result="success") == 3
    assert value(r, "kubeedge_cloudhub_objectsync_writes_total", operation="delete", result="failure") == 1
    assert value(r, "kubeedge_cloudhub_objectsync_enabled") == 1


def test_resends_are_counted_from_the_queues() -> None:
    metrics = CloudHubMetrics(new_registry())
    hub = FakeHub(metrics)
    queue = hub.queues["n1"] = NodeQueue(resolve=lambda key: None)
    queue.enqueue("default/pod/p", pod_update("p", 1), rv=1, delete=False)
    assert queue.next_message(0.0) is not None
    assert queue.next_message(6.0) is not None  # the 5 s ACK timeout passed: same msg_id again
    metrics.registry.register(CloudHubCollector(hub))  # type: ignore[arg-type]
    assert value(metrics.registry, "kubeedge_cloudhub_resends_total") == 1


@pytest.mark.parametrize(("depth", "label"), [(0, "0"), (1, "1-9"), (9, "1-9"), (10, "10-99"), (9999, "1000-9999"),
                                              (10_000, "10000+")])
def test_depth_ranges(depth: int, label: str) -> None:
    assert depth_range(depth) == label


# -- edge collector --------------------------------------------------------------------------------

def status(name: str, phase: Any) -> Message:
    return Message.new(source="edged", group="meta", operation="update", resource=f"default/podstatus/{name}",
                       content={"UID": f"uid-{name}", "Name": name, "Status": {"phase": phase}})


def test_pod_phases_follow_reports_and_deletes() -> None:
    phases = PodPhases(limit=3)
    for name, phase in (("a", "Pending"), ("b", "Running"), ("a", "Running"), ("c", "Bogus")):
        phases.observe(status(name, phase))
    assert phases.counts() == {"Pending": 0, "Running": 2, "Succeeded": 0, "Failed": 0, "Unknown": 1}
    phases.observe(Message.new(source="edged", group="meta", operation="delete", resource="default/pod/b",
                               content="uid-b"))
    phases.observe(Message.new(source="edged", group="meta", operation="update", resource="default/configmap/x"))
    assert phases.phase_by_pod == {"default/a": "Running", "default/c": "Unknown"}
    for name in ("d", "e"):
        phases.observe(status(name, "Succeeded"))
    assert list(phases.phase_by_pod) == ["default/c", "default/d", "default/e"]  # bounded: oldest report forgotten


class FakeOutbox:
    stats = OutboxStats(pending=4, in_flight=2, parked=1, sent=10, resent=3, replaced=0, acked=6, dropped=0)


def test_edge_collector(tmp_path: Path) -> None:
    db = tmp_path / "edgecore.db"
    db.write_bytes(b"x" * 4096)
    (tmp_path / "edgecore.db-wal").write_bytes(b"y" * 100)
    assert sqlite_file_sizes(db) == {"main": 4096, "wal": 100, "shm": 0}
    metrics = EdgeHubMetrics(new_registry())
    hub = SimpleNamespace(metrics=metrics, connected=asyncio.Event())
    metrics.pods.observe(status("web", "Running"))
    metrics.registry.register(EdgeCollector(db, FakeOutbox(), hub))  # type: ignore[arg-type]
    r = metrics.registry
    assert value(r, "kubeedge_edgehub_connected") == 0
    hub.connected.set()
    assert value(r, "kubeedge_edgehub_connected") == 1
    assert value(r, "kubeedge_edgehub_outbox_messages", state="pending") == 4
    assert value(r, "kubeedge_edgehub_outbox_resends_total") == 3
    assert value(r, "kubeedge_edgecore_sqlite_file_bytes", file="main") == 4096
    assert value(r, "kubeedge_edgecore_sqlite_file_bytes", file="shm") == 0
    assert value(r, "kubeedge_edgecore_pods", phase="Running") == 1
    assert value(r, "kubeedge_edgecore_pods", phase="Failed") == 0


# -- config ----------------------------------------------------------------------------------------

def test_monitor_server_defaults() -> None:
    cloud = CloudCoreConfig().common_config.monitor_server
    assert (cloud.enable, cloud.bind_address) == (True, "127.0.0.1:9091")
    edge = EdgeCoreConfig().common_config.monitor_server
    assert (edge.enable, edge.bind_address) == (True, "127.0.0.1:10551")


def test_edge_monitor_server_keys_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "edgecore.yaml"
    path.write_text("commonConfig:\n  monitorServer:\n    enable: false\n    bindAddress: 0.0.0.0:9100\n")
    edge = load_edgecore(path, bootstrap_token_path=tmp_path / "none").common_config.monitor_server
    assert (edge.enable, edge.bind_address) == (False, "0.0.0.0:9100")
    path.write_text("commonConfig:\n  monitorServer:\n    bindAddress: localhost\n")
    with pytest.raises(ConfigError, match=r"commonConfig\.monitorServer\.bindAddress: expected IP:port"):
        load_edgecore(path, bootstrap_token_path=tmp_path / "none")


def test_loop_histogram_buckets_are_inclusive_and_cumulative() -> None:
    registry = new_registry()
    histogram = LoopHistogram("test_seconds", "test", (0.1, 1.0), registry)
    for observed in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(observed)
    assert value(registry, "kubeedge_test_seconds_bucket", le="0.1") == 2
    assert value(registry, "kubeedge_test_seconds_bucket", le="1.0") == 4
    assert value(registry, "kubeedge_test_seconds_bucket", le="+Inf") == 5
    assert value(registry, "kubeedge_test_seconds_count") == 5
    assert value(registry, "kubeedge_test_seconds_sum") == pytest.approx(8.65)
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("bad_seconds", "test", (1.0, 0.5), registry)
