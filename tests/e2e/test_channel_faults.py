"""The cloud-edge channel under faults, with real processes in two network namespaces: partitions, packet
loss and kill -9 on either side. The objects are Services (every edge node gets them all); the edge must
end with exactly the cloud's set at the cloud's resourceVersions, and after a heal or a restart the cloud
sends each changed object at most once and nothing unchanged again (counted in edgecore's log, one line
per message it stored or found already stored)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable

import pytest

from tests.fixtures.cloud_edge import HEARTBEAT, KEEPALIVE_INTERVAL, CloudEdge

pytestmark = pytest.mark.timeout(300)  # a 30 s partition plus hundreds of objects each way, on 2 shared cores

NAMESPACE = "chaos"
_STORED = re.compile(r'"(?:already )?stored" msg_id="[^"]+" resource="chaos/service/([^"]+)"')


def create(rig: CloudEdge, names: Iterable[str]) -> None:
    rig.bulk("create", NAMESPACE, *names)


def touch(rig: CloudEdge, names: Iterable[str], round_: int) -> None:
    rig.bulk("touch", NAMESPACE, str(round_), *names)


def delete(rig: CloudEdge, names: Iterable[str]) -> None:
    rig.bulk("delete", NAMESPACE, *names)


def names(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(start, start + count)]


def populated(rig: CloudEdge, count: int) -> dict[str, str]:
    rig.plane.kubectl("create", "namespace", NAMESPACE)
    create(rig, names("s", count))
    return rig.wait_in_sync("services", NAMESPACE, "service", timeout=120)


def messages_since(rig: CloudEdge, offset: int) -> Counter[str]:
    """Messages edgecore received per Service name after byte `offset` of its log."""
    return Counter(_STORED.findall(rig.edge.log.read_text(errors="replace")[offset:]))


def log_size(rig: CloudEdge) -> int:
    return len(rig.edge.log.read_text(errors="replace"))


def wait_recorded(rig: CloudEdge, timeout: float = 60) -> None:
    """Until every object the edge holds in the namespace (Services, Endpoints, EndpointSlices) has its
    ObjectSync at the acked version: CloudHub writes them behind the ACKs, and a kill -9 loses the rest."""
    deadline = time.monotonic() + timeout
    held = recorded = 0
    while time.monotonic() < deadline:
        held = sum(key.startswith(f"{NAMESPACE}/") for kind in ("service", "endpoints", "endpointslice")
                   for key in rig.edge_objects(kind))
        items = json.loads(rig.plane.kubectl("get", "objectsyncs", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        recorded = sum((i.get("status") or {}).get("objectResourceVersion", "0") != "0" for i in items)
        if held and recorded >= held:
            return
        time.sleep(0.5)
    raise AssertionError(f"{recorded} of {held} ObjectSyncs recorded in {timeout} s")


def test_a_partition_is_noticed_on_both_sides_and_the_edge_reconnects_after_the_heal(cloud_edge: CloudEdge) -> None:
    cloud_edge.partition()
    began = time.monotonic()
    cloud_edge.cloud.wait_log('"node disconnected"', timeout=KEEPALIVE_INTERVAL + 10)
    cloud_edge.edge.wait_log('"disconnected from cloudcore"', timeout=HEARTBEAT * 3 + 10)
    assert time.monotonic() - began < KEEPALIVE_INTERVAL + 10
    cloud_edge.heal()
    cloud_edge.edge.wait_log('"connected to cloudcore"', count=2, timeout=60)
    cloud_edge.cloud.wait_log('"node connected"', count=2)


def test_30s_partition_while_500_objects_change_ends_in_the_clouds_state_one_message_per_key(
        cloud_edge: CloudEdge) -> None:
    rig = cloud_edge
    populated(rig, 500)
    rig.partition()
    began = time.monotonic()
    touch(rig, names("s", 300), 1)
    touch(rig, names("s", 100), 2)  # some change several times
    touch(rig, names("s", 50), 3)
    delete(rig, names("s", 50, start=400))
    create(rig, names("n", 50))
    delete(rig, names("n", 10))  # created and deleted while cut off: the edge never needs to hear of them
    time.sleep(max(0.0, 30 - (time.monotonic() - began)))
    offset = log_size(rig)
    rig.heal()
    rig.wait_in_sync("services", NAMESPACE, "service", timeout=120)
    counts = messages_since(rig, offset)
    changed = {*names("s", 300), *names("s", 50, start=400), *names("n", 40, start=10)}
    assert max(counts.values()) == 1, counts.most_common(5)
    assert set(counts) <= changed, sorted(set(counts) - changed)[:10]
    assert len(counts) >= len(changed) - 128  # at most a window of them was already through before the cut


def test_20_percent_packet_loss_during_a_burst_loses_nothing(cloud_edge: CloudEdge) -> None:
    rig = cloud_edge
    populated(rig, 200)
    rig.lossy(0.2)
    for round_ in range(1, 4):
        touch(rig, names("s", 200), round_)
    delete(rig, names("s", 20, start=180))
    create(rig, names("n", 20))
    rig.heal()
    rig.wait_in_sync("services", NAMESPACE, "service", timeout=120)


def burst_in_background(rig: CloudEdge) -> threading.Thread:
    """~100 changed, 20 deleted and 20 new Services over a few seconds, while the test kills a daemon."""
    def run() -> None:
        for round_ in range(1, 6):
            touch(rig, names("s", 100), round_)
        delete(rig, names("s", 20, start=280))
        create(rig, names("n", 20))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_kill_9_of_cloudcore_mid_burst_loses_nothing_and_resends_nothing_unchanged(cloud_edge: CloudEdge) -> None:
    rig = cloud_edge
    populated(rig, 300)
    wait_recorded(rig)
    burst = burst_in_background(rig)
    time.sleep(1.0)
    rig.cloud.kill()
    time.sleep(1.0)
    offset = log_size(rig)
    rig.start_cloud()
    burst.join(120)
    rig.wait_in_sync("services", NAMESPACE, "service", timeout=120)
    counts = messages_since(rig, offset)
    unchanged = set(names("s", 180, start=100))
    assert not set(counts) & unchanged, sorted(set(counts) & unchanged)[:10]


def test_kill_9_of_edgecore_mid_burst_resumes_from_its_database(cloud_edge: CloudEdge) -> None:
    rig = cloud_edge
    populated(rig, 300)
    burst = burst_in_background(rig)
    time.sleep(1.0)
    rig.edge.kill()
    time.sleep(1.0)
    offset = log_size(rig)
    rig.start_edge()
    burst.join(120)
    rig.wait_in_sync("services", NAMESPACE, "service", timeout=120)
    assert re.search(r'"edge database ready" .* objects="[1-9]', rig.edge.log.read_text()[offset:])
    counts = messages_since(rig, offset)
    unchanged = set(names("s", 180, start=100))
    assert not set(counts) & unchanged, sorted(set(counts) & unchanged)[:10]
