"""The cloud-edge channel under faults, with real processes in two network namespaces: partitions, packet
loss and kill -9 on either side; the edge must end with exactly the cloud's objects, and after a heal the
cloud sends each changed object once. Every test runs over WebSocket and over QUIC."""

from __future__ import annotations

import time

from tests.fixtures.cloud_edge import HEARTBEAT, KEEPALIVE_INTERVAL, CloudEdge


def test_a_partition_is_noticed_on_both_sides_and_the_edge_reconnects_after_the_heal(cloud_edge: CloudEdge) -> None:
    cloud_edge.partition()
    began = time.monotonic()
    cloud_edge.cloud.wait_log('"node disconnected"', timeout=KEEPALIVE_INTERVAL + 10)
    cloud_edge.edge.wait_log('"disconnected from cloudcore"', timeout=HEARTBEAT * 3 + 10)
    assert time.monotonic() - began < KEEPALIVE_INTERVAL + 10
    cloud_edge.heal()
    cloud_edge.edge.wait_log('"connected to cloudcore"', count=2, timeout=60)
    cloud_edge.cloud.wait_log('"node connected"', count=2)
