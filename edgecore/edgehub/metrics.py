"""edgecore's metrics: EdgeHub's message counters, the scrape-time view of the edge (cloud link, outbox,
SQLite files, pods by phase) and the monitor server wiring (`edgecore_monitor`).

Owns the edge-side metric names (docs/metrics.md). Per-message counters are bumped by hub.py (one
cached `inc`); the rest is read when Prometheus scrapes. Pods by phase come from what Edged reports:
EdgeHub sees every `podstatus` report (content `{UID, Name, Status}`, upstream's PodStatusRequest) and
every pod-deleted confirmation on their way to the cloud and keeps the latest phase per pod, so the
figure is right while offline too. It never changes EdgeHub's, the outbox's or the store's state: the
store is only asked a read for `/readyz`.

Readiness: the edge database answers. The cloud connection is reported but optional: the edge keeps
running its pods and serving MetaServer offline, so losing the cloud never makes edgecore unready.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.config.edgecore import EdgeMonitorServer
from common.constants import Op, ResourceType
from common.message import Message
from common.metrics import (
    NAMESPACE,
    CheckResult,
    MessageCounter,
    MetricsServerModule,
    ReadinessCheck,
    add_process_collectors,
    new_registry,
)
from common.reliable import OutboxStats

if TYPE_CHECKING:
    from edgecore.edgehub.hub import EdgeHubModule

POD_PHASES: Final = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
MAX_TRACKED_PODS: Final = 10_000  # far above maxPods (110); beyond it the oldest entry is forgotten
SQLITE_FILES: Final = (("main", ""), ("wal", "-wal"), ("shm", "-shm"))
_P: Final = f"{NAMESPACE}_edgehub_"
_STATUS_OPS: Final = frozenset({Op.INSERT, Op.UPDATE})


class PodPhases:
    """The latest phase Edged reported per pod (`<namespace>/<name>`), forgotten when Edged confirms the
    pod deleted. Fed only with status reports and deletes, never with every message."""

    def __init__(self, limit: int = MAX_TRACKED_PODS) -> None:
        self.limit = limit
        self.phase_by_pod: dict[str, str] = {}

    def observe(self, message: Message) -> None:
        namespace, _, rest = message.route.resource.partition("/")
        kind, _, name = rest.partition("/")
        if not name:
            return
        pod = f"{namespace}/{name}"
        if kind == ResourceType.POD and message.route.operation == Op.DELETE:
            self.phase_by_pod.pop(pod, None)
        elif kind == ResourceType.PODSTATUS and message.route.operation in _STATUS_OPS:
            content = message.content
            status = content.get("Status") if isinstance(content, dict) else None
            phase = status.get("phase") if isinstance(status, dict) else None
            self.phase_by_pod.pop(pod, None)  # re-insert: the dict's order is last-report order
            self.phase_by_pod[pod] = phase if phase in POD_PHASES else "Unknown"
            while len(self.phase_by_pod) > self.limit:
                del self.phase_by_pod[next(iter(self.phase_by_pod))]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(POD_PHASES, 0)
        for phase in self.phase_by_pod.values():
            counts[phase] += 1
        return counts


class EdgeHubMetrics:
    """The metrics EdgeHub bumps per event; `registry` is the process's, served by the monitor server."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.sent = MessageCounter("edgehub_messages_sent", "Messages written to the cloud (reports, ACKs, queries, "
                                   "keepalives), by resource type and operation.", registry)
        self.received = MessageCounter("edgehub_messages_received", "Messages read from the cloud, by resource "
                                       "type and operation.", registry)
        self.connects = 0  # connections made to cloudcore
        self.connect_failures = 0  # attempts that failed
        self.pods = PodPhases()


class _Outbox(Protocol):
    @property
    def stats(self) -> OutboxStats: ...


class _Store(Protocol):
    async def get(self, key: str) -> str | None: ...


def sqlite_file_sizes(db_path: Path) -> dict[str, int]:
    """Bytes of the database file and its WAL and shared-memory files (0 when absent)."""
    sizes = {}
    for label, suffix in SQLITE_FILES:
        try:
            sizes[label] = os.stat(f"{db_path}{suffix}").st_size
        except OSError:
            sizes[label] = 0
    return sizes


class EdgeCollector(Collector):
    """Scrape-time view of the edge: cloud link, outbox, SQLite file sizes, pods by phase."""

    def __init__(self, db_path: Path, outbox: _Outbox, hub: EdgeHubModule | None) -> None:
        self.db_path = db_path
        self.outbox = outbox
        self.hub = hub

    def collect(self) -> Iterable[Metric]:
        hub = self.hub
        yield GaugeMetricFamily(f"{_P}connected", "1 while connected to cloudcore.",
                                value=1 if hub is not None and hub.connected.is_set() else 0)
        yield CounterMetricFamily(f"{_P}connects", "Connections made to cloudcore.",
                                  value=hub.metrics.connects if hub is not None else 0)
        yield CounterMetricFamily(f"{_P}connect_failures", "Connection attempts to cloudcore that failed.",
                                  value=hub.metrics.connect_failures if hub is not None else 0)
        stats = self.outbox.stats
        pending = GaugeMetricFamily(f"{_P}outbox_messages", "Status reports waiting for the cloud's ACK, by state.",
                                    labels=("state",))
        for state, count in (("pending", stats.pending), ("in_flight", stats.in_flight), ("parked", stats.parked)):
            pending.add_metric((state,), count)
        yield pending
        yield CounterMetricFamily(f"{_P}outbox_resends", "Further writes of an unacknowledged report.",
                                  value=stats.resent)
        yield CounterMetricFamily(f"{_P}outbox_acks", "Reports the cloud acknowledged.", value=stats.acked)
        yield CounterMetricFamily(f"{_P}outbox_dropped", "Reports dropped by the outbox bound.", value=stats.dropped)
        sizes = GaugeMetricFamily(f"{NAMESPACE}_edgecore_sqlite_file_bytes", "Size of the edge database "
                                  "(database.dataSource) and its WAL and shared-memory files.", labels=("file",))
        for label, size in sqlite_file_sizes(self.db_path).items():
            sizes.add_metric((label,), size)
        yield sizes
        pods = GaugeMetricFamily(f"{NAMESPACE}_edgecore_pods", "Pods by the phase Edged last reported.",
                                 labels=("phase",))
        for phase, count in (hub.metrics.pods.counts() if hub is not None else dict.fromkeys(POD_PHASES, 0)).items():
            pods.add_metric((phase,), count)
        yield pods


def edgecore_monitor(config: EdgeMonitorServer, db_path: Path, store: _Store, outbox: _Outbox,
                     hub: EdgeHubModule | None) -> MetricsServerModule | None:
    """edgecore's monitor server on `commonConfig.monitorServer`, or None when disabled."""
    if not config.enable:
        return None
    registry = hub.metrics.registry if hub is not None else new_registry()
    add_process_collectors(registry)
    registry.register(EdgeCollector(db_path, outbox, hub))

    async def database() -> CheckResult:
        await store.get("")  # one read on the store's own connection
        return CheckResult(True, str(db_path))

    checks = [ReadinessCheck("database", database)]
    if hub is not None:
        async def cloud() -> CheckResult:
            connected = hub.connected.is_set()
            return CheckResult(connected, "connected" if connected else "disconnected; the edge works offline")

        checks.append(ReadinessCheck("cloud", cloud, required=False))
    return MetricsServerModule(config.bind_address, registry, checks)
