"""EventBus on a real mosquitto: an oversize MQTT payload is answered with upstream's error result on the request's
`/result` topic (or dropped when nobody answers that topic), and nothing else is disturbed."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from edgecore.eventbus.topics import MAX_PAYLOAD, result_topic
from tests.fixtures.mosquitto import Broker
from tests.integration.test_devicetwin import Mapper
from tests.integration.test_eventbus import cfg, running


def test_result_topics_are_devicetwins_answers() -> None:
    assert result_topic("$hw/events/device/ns/d/twin/update") == "$hw/events/device/ns/d/twin/update/result"
    assert result_topic("$hw/events/device/ns/d/twin/get") == "$hw/events/device/ns/d/twin/get/result"
    assert result_topic("$hw/events/device/ns/d/state/update") == "$hw/events/device/ns/d/state/update/result"
    assert result_topic("$hw/events/node/n/membership/get") == "$hw/events/node/n/membership/get/result"
    assert result_topic("$hw/events/device/ns/d/twin/cloud_updated") is None
    assert result_topic("$hw/events/upload/x") is None


async def test_oversize_payload_gets_an_error_result_and_the_rest_flows(mosquitto: Broker, sqlite_path: Path) -> None:
    ns = f"ns{uuid.uuid4().hex[:6]}"
    update = f"$hw/events/device/{ns}/thermo/twin/update"
    mapper = Mapper(mosquitto)
    try:
        async with running(cfg(mosquitto), sqlite_path) as (_bus, eventbus, twin, hub):
            big = b'{"event_id":"big","twin":{"t":{"actual":{"value":"' + b"x" * MAX_PAYLOAD + b'"}}}}'
            mapper.publish(update, big)
            refused = await mapper.expect(f"{update}/result")
            assert refused["code"] == 400 and f"{len(big)} bytes" in refused["reason"]
            assert set(refused) == {"event_id", "timestamp", "code", "reason"}
            mapper.publish(f"$hw/events/upload/{ns}", b"y" * (MAX_PAYLOAD + 1))  # to the cloud: dropped
            # what follows is handed on as usual
            mapper.publish(update, {"event_id": "small"})
            mapper.publish(f"$hw/events/upload/{ns}", b"fine")
            [to_twin] = await twin.wait(1)
            assert to_twin.content == '{"event_id":"small"}'
            [to_cloud] = await hub.wait(1)
            assert to_cloud.content == "fine"
            await asyncio.sleep(0.2)
            assert len(twin.received) == 1 and len(hub.received) == 1 and eventbus.dropped == 0
    finally:
        mapper.close()
