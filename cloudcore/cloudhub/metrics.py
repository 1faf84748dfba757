"""cloudcore's metrics: CloudHub's counters and ACK latency, the scrape-time view of its nodes and queues,
and the monitor server wiring (`cloudcore_monitor`).

Owns the cloud-side metric names (docs/metrics.md). Two kinds: per-event counters and the ACK latency
histogram, bumped by hub.py on the hot path (one cached `inc`/`observe` each); and everything CloudHub
already keeps (sessions, `NodeQueue.stats`, ObjectSync outcomes), read only when Prometheus scrapes, so
it costs nothing per message. It never changes CloudHub's state.

Per-node queues are exported as totals, the deepest queue and a count of nodes per depth range, never
with a `node` label: 1,000 nodes would make 1,000+ series per metric, churning as nodes come and go,
while the question a dashboard asks ("is anything backing up, and how widely?") needs only these
~15 series. Which node is behind is in the logs (`queued`/`resent` lines carry the node).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

from kubernetes_asyncio.client import ApiClient, VersionApi
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.config.cloudcore import MonitorServer
from common.metrics import (
    NAMESPACE,
    CheckResult,
    LoopHistogram,
    MessageCounter,
    MetricsServerModule,
    ReadinessCheck,
    add_process_collectors,
    new_registry,
)
from common.quic import QuicConnection

if TYPE_CHECKING:
    from cloudcore.cloudhub.hub import CloudHubModule

# ACK round trips: milliseconds on a LAN, up to the 5 s ACK timeout (a resend restarts the clock).
ACK_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Node queue depth ranges (messages not yet acknowledged: pending + in flight + parked), upper bounds.
DEPTH_RANGES: Final = ((0, "0"), (9, "1-9"), (99, "10-99"), (999, "100-999"), (9999, "1000-9999"))
DEPTH_OVERFLOW: Final = "10000+"
_P: Final = f"{NAMESPACE}_cloudhub_"


class CloudHubMetrics:
    """The metrics CloudHub bumps per event; `registry` is the process's, served by the monitor server."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.sent = MessageCounter("cloudhub_messages_sent", "Messages written to edge nodes (first sends and "
                                   "resends), by resource type and operation.", registry)
        self.received = MessageCounter("cloudhub_messages_received", "Messages read from edge nodes, by resource "
                                       "type and operation; ACKs are kubeedge_cloudhub_acks_total.", registry)
        self.ack_latency = LoopHistogram("cloudhub_ack_latency_seconds", "Seconds from the last write of a message "
                                         "to an edge node until its ACK.", ACK_LATENCY_BUCKETS, registry)


def depth_range(depth: int) -> str:
    for upper, label in DEPTH_RANGES:
        if depth <= upper:
            return label
    return DEPTH_OVERFLOW


class CloudHubCollector(Collector):
    """Scrape-time view of CloudHub: connected nodes, queue totals and spread, queue and ObjectSync counters."""

    def __init__(self, hub: CloudHubModule) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Metric]:
        yield from self._connections()
        yield from self._queues()
        yield from self._objectsync()
        yield from self._node_leases()

    def _connections(self) -> Iterator[Metric]:
        by_transport = {"websocket": 0, "quic": 0}
        for session in tuple(self.hub.sessions.values()):
            by_transport["quic" if isinstance(session.connection, QuicConnection) else "websocket"] += 1
        connected = GaugeMetricFamily(f"{_P}connected_nodes", "Edge nodes connected to this cloudcore, by transport.",
                                      labels=("transport",))
        for transport, count in by_transport.items():
            connected.add_metric((transport,), count)
        yield connected
        yield GaugeMetricFamily(f"{_P}listening", "1 once every enabled CloudHub listener is up.",
                                value=1 if self.hub.listening else 0)

    def _queues(self) -> Iterator[Metric]:
        connected = set(self.hub.sessions)
        totals = {(state, c): 0 for state in ("pending", "in_flight", "parked") for c in ("true", "false")}
        nodes_by_range = dict.fromkeys([label for _, label in DEPTH_RANGES] + [DEPTH_OVERFLOW], 0)
        sums = dict.fromkeys(("sent", "resent", "acked", "advanced", "replaced", "stale", "collapsed",
                              "dropped_contents", "dropped_no_ack", "held_bytes"), 0)
        deepest = 0
        for node, queue in tuple(self.hub.queues.items()):
            stats = queue.stats
            c = "true" if node in connected else "false"
            totals["pending", c] += stats.pending
            totals["in_flight", c] += stats.in_flight
            totals["parked", c] += stats.parked
            depth = stats.pending + stats.in_flight + stats.parked
            deepest = max(deepest, depth)
            nodes_by_range[depth_range(depth)] += 1
            for name in sums:
                sums[name] += getattr(stats, name)
        yield GaugeMetricFamily(f"{_P}node_queues", "Per-node queues held (connected or not).",
                                value=len(self.hub.queues))
        messages = GaugeMetricFamily(f"{_P}queue_messages", "Messages not yet acknowledged, summed over all node "
                                     "queues, by state and by whether the node is connected.",
                                     labels=("state", "connected"))
        for (state, c), count in totals.items():
            messages.add_metric((state, c), count)
        yield messages
        yield GaugeMetricFamily(f"{_P}queue_depth_max_messages", "Depth of the deepest node queue "
                                "(pending + in flight + parked).", value=deepest)
        spread = GaugeMetricFamily(f"{_P}node_queue_depth_nodes", "Node queues per depth range "
                                   "(pending + in flight + parked).", labels=("depth",))
        for label, count in nodes_by_range.items():
            spread.add_metric((label,), count)
        yield spread
        yield GaugeMetricFamily(f"{_P}queue_held_bytes", "Bytes of message content held by all node queues.",
                                value=sums["held_bytes"])
        yield CounterMetricFamily(f"{_P}first_sends", "Messages written to edge nodes for the first time.",
                                  value=sums["sent"])
        yield CounterMetricFamily(f"{_P}resends", "Further writes of an unacknowledged message (same msg_id).",
                                  value=sums["resent"])
        yield CounterMetricFamily(f"{_P}acks", "Messages the edge nodes acknowledged.", value=sums["acked"])
        yield CounterMetricFamily(f"{_P}status_only_skips", "Pod updates that changed only the status the edge "
                                  "reported: recorded as acknowledged, not sent.", value=sums["advanced"])
        dropped = CounterMetricFamily(f"{_P}queue_dropped_messages", "Messages the node queues dropped, by "
                                      "reason (replaced by a newer one, stale, delete of a never-sent insert, "
                                      "no-ACK lane full).", labels=("reason",))
        for reason, name in (("replaced", "replaced"), ("stale", "stale"), ("collapsed", "collapsed"),
                             ("no_ack_overflow", "dropped_no_ack")):
            dropped.add_metric((reason,), sums[name])
        yield dropped
        yield CounterMetricFamily(f"{_P}queue_content_evictions", "Message contents dropped by the memory bound "
                                  "(the key stays; the object is re-read from the cache when its turn comes).",
                                  value=sums["dropped_contents"])

    def _objectsync(self) -> Iterator[Metric]:
        syncs = self.hub.syncs
        writes = CounterMetricFamily(f"{_P}objectsync_writes", "ObjectSync API calls (status write or delete) "
                                     "by result.", labels=("operation", "result"))
        for operation in ("write", "delete"):
            for result in ("success", "failure"):
                writes.add_metric((operation, result), syncs.writes[operation, result])
        yield writes
        yield GaugeMetricFamily(f"{_P}objectsync_backlog_records", "ObjectSync records waiting to be written.",
                                value=syncs.backlog)
        yield GaugeMetricFamily(f"{_P}objectsync_enabled", "1 while acknowledged versions are persisted "
                                "(0: the reliablesyncs CRDs are missing).", value=1 if syncs.enabled else 0)

    def _node_leases(self) -> Iterator[Metric]:
        """Only with `cloudHub.nodeLease.enable` (several cloudcores, docs/ha.md)."""
        ownership = getattr(self.hub, "ownership", None)  # absent on hubs built before node leases
        if ownership is None:
            return
        yield GaugeMetricFamily(f"{_P}node_leases_held", "Node Leases this cloudcore holds (the nodes it serves).",
                                value=len(ownership.book.held))
        yield CounterMetricFamily(f"{_P}node_lease_writes", "Node Lease API writes (create, take over, renew, "
                                  "release).", value=ownership.writes)
        yield CounterMetricFamily(f"{_P}node_lease_refusals", "Connections refused because another live "
                                  "cloudcore holds the node's Lease.", value=ownership.refused)


async def kube_api_reachable(kube: ApiClient) -> CheckResult:
    """GET /version: the API answers (any cluster, embedded or real)."""
    info = await VersionApi(kube).get_code()
    return CheckResult(True, str(getattr(info, "git_version", "") or ""))


def cloudcore_monitor(config: MonitorServer, kube: ApiClient, hub: CloudHubModule | None) -> MetricsServerModule | None:
    """cloudcore's monitor server on `commonConfig.monitorServer`, or None when disabled. Ready = the
    Kubernetes API answers and (with CloudHub enabled) every CloudHub listener is up."""
    if not config.enable:
        return None
    registry = hub.metrics.registry if hub is not None else new_registry()
    add_process_collectors(registry)
    checks = [ReadinessCheck("kube-api", lambda: kube_api_reachable(kube))]
    if hub is not None:
        registry.register(CloudHubCollector(hub))

        async def listening() -> CheckResult:
            return CheckResult(hub.listening, "" if hub.listening else "listeners not up yet")

        checks.append(ReadinessCheck("cloudhub", listening))
    return MetricsServerModule(config.bind_address, registry, checks)
