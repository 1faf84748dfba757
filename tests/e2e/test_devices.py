"""Devices end to end, real processes in a netns pair: the control plane (device CRDs applied) and cloudcore in the
cloud namespace, edgecore in the edge namespace running its own mosquitto (mqttMode 0, 127.0.0.1:1884), and the
real MQTT clients `mosquitto_sub` / `mosquitto_pub` beside it.

- a desired value patched with kubectl comes out as the MQTT delta;
- a reported value and a device state published with mosquitto_pub show in the Device's status (and the cloud's
  answer clears the edge's pending report);
- bad input over MQTT (malformed JSON, oversize payload) gets a clear result and disturbs nothing;
- autonomy: with the link cut, twin update and get keep working over MQTT, also after edgecore restarts
  (twins from SQLite, its broker started again); the reports made offline reach the cloud after the heal.

The DMI leg (desired value to a registered mapper) is tested with the DMI server, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.hostsvc.netns import NetnsPair
from common.hostsvc.process import pid_alive
from tests.fixtures.device_rig import MODEL, DeviceCloudEdge, device_cloud_edge, device_manifest, wait_until
from tests.fixtures.paths import require_binary, require_root

pytestmark = pytest.mark.timeout(300)

ERR_UNMARSHAL = "Unmarshal update request body failed, please check the request"


@pytest.fixture(scope="module")
def rig(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceCloudEdge]:
    """One rig for the module (each test uses devices of its own); the autonomy test runs last."""
    require_root("the devices e2e rig")
    require_binary("ip")
    pair = NetnsPair.from_tag(f"{run_id}dv")
    pair.create()
    try:
        with device_cloud_edge(tmp_path_factory.mktemp("devices"), pair) as started:
            started.wait_node_ready("True", timeout=60)
            started.plane.kubectl("apply", "-f", "-", input_text=json.dumps(MODEL))
            yield started
    finally:
        pair.delete()


def topic(name: str, suffix: str) -> str:
    return f"$hw/events/device/default/{name}/{suffix}"


def create_device(rig: DeviceCloudEdge, name: str) -> None:
    """The Device bound to the edge node, and known at the edge (membership stored in its `device` table)."""
    rig.plane.kubectl("apply", "-f", "-", input_text=json.dumps(device_manifest(name, rig.node)))
    wait_until(lambda: rig.edge_rows('SELECT id FROM "device" WHERE id = ?', f"default/{name}"),
               f"device {name} at the edge", timeout=30)


def report(rig: DeviceCloudEdge, name: str, event_id: str, value: str) -> dict[str, Any]:
    """A mapper's reported temperature over MQTT; the edge's result."""
    with rig.mqtt_sub(topic(name, "twin/update/result")) as sub:
        rig.mqtt_pub(topic(name, "twin/update"), json.dumps({"event_id": event_id, "timestamp": 1, "twin": {
            "temperature": {"actual": {"value": value}, "metadata": {"type": "float"}}}}))
        result: dict[str, Any] = sub.wait_for(topic(name, "twin/update/result"),
                                              lambda p: p.get("event_id") == event_id)
    return result


def twin_get(rig: DeviceCloudEdge, name: str, event_id: str, timeout: float = 10) -> dict[str, Any]:
    with rig.mqtt_sub(topic(name, "twin/get/result")) as sub:
        rig.mqtt_pub(topic(name, "twin/get"), json.dumps({"event_id": event_id}))
        got: dict[str, Any] = sub.wait_for(topic(name, "twin/get/result"), lambda p: p.get("event_id") == event_id,
                                           timeout=timeout)
    return got


def pending_reports(rig: DeviceCloudEdge) -> int:
    rows = rig.edge_rows("SELECT count(*) FROM devicetwin_pending")
    return int(rows[0][0]) if rows else -1


def test_desired_value_patched_with_kubectl_comes_out_as_the_mqtt_delta(rig: DeviceCloudEdge) -> None:
    create_device(rig, "thermo-a")
    delta_topic = topic("thermo-a", "twin/update/delta")
    with rig.mqtt_sub(delta_topic) as sub:
        rig.plane.kubectl("patch", "device", "thermo-a", "--type=json", "-p", json.dumps([
            {"op": "replace", "path": "/spec/properties/1/desired/value", "value": "55"}]))
        delta = sub.wait_for(delta_topic, lambda p: p.get("delta", {}).get("setpoint") == "55")
    assert set(delta) == {"event_id", "timestamp", "twin", "delta"}
    assert delta["delta"] == {"setpoint": "55"}
    assert delta["twin"]["setpoint"]["expected"]["value"] == "55"
    assert "expected_version" not in delta["twin"]["setpoint"]


def test_reported_value_and_state_over_mqtt_reach_the_device_status(rig: DeviceCloudEdge) -> None:
    create_device(rig, "thermo-b")
    result = report(rig, "thermo-b", "r1", "21.5")
    assert result["twin"]["temperature"]["actual"]["value"] == "21.5"
    took = wait_until(lambda: rig.reported("thermo-b").get("temperature") == "21.5",
                      "reported temperature in status.twins", timeout=10, interval=0.05)
    print(f"reported -> Device status: {took:.2f} s", file=sys.stderr)
    twin = next(t for t in rig.device("thermo-b")["status"]["twins"] if t["propertyName"] == "temperature")
    assert twin["reported"]["metadata"]["type"] == "float"
    # the cloud answered the report: the edge's pending entry is gone (no resend after 10 s)
    wait_until(lambda: pending_reports(rig) == 0, "the edge's pending twin report acknowledged", timeout=10)

    with rig.mqtt_sub(topic("thermo-b", "state/update/result")) as sub:
        rig.mqtt_pub(topic("thermo-b", "state/update"), json.dumps({"event_id": "s1", "state": "online"}))
        state = sub.wait_for(topic("thermo-b", "state/update/result"))
    assert state["device"]["state"] == "online"
    wait_until(lambda: (rig.device("thermo-b").get("status") or {}).get("state") == "online",
               "status.state online", timeout=10, interval=0.05)
    status = rig.device("thermo-b")["status"]
    assert status["lastOnlineTime"] == state["device"]["lastOnlineTime"]
    assert {t["propertyName"] for t in status["twins"]} >= {"temperature"}  # twins kept by the state patch


def test_bad_input_over_mqtt_gets_a_clear_result_and_disturbs_nothing(rig: DeviceCloudEdge) -> None:
    create_device(rig, "thermo-bad")
    edge_pid = rig.edge.proc.pid if rig.edge.proc else None
    update, result = topic("thermo-bad", "twin/update"), topic("thermo-bad", "twin/update/result")
    with rig.mqtt_sub(result, topic("thermo-bad", "twin/get/result")) as sub:
        rig.mqtt_pub(update, "{not json")
        malformed = sub.wait_for(result, lambda p: p.get("code") == 400 and p.get("reason") == ERR_UNMARSHAL)
        assert malformed["event_id"] == ""
        big = json.dumps({"event_id": "big", "twin": {"temperature": {"actual": {"value": "9" * (2 << 20)}}}})
        rig.mqtt_pub(update, big)
        oversize = sub.wait_for(result, lambda p: "bytes edgecore accepts" in p.get("reason", ""))
        assert oversize["code"] == 400 and f"{len(big)} bytes" in oversize["reason"]
        rig.mqtt_pub(topic("thermo-bad", "twin/get"), "[1, 2")
        bad_get = sub.wait_for(topic("thermo-bad", "twin/get/result"), lambda p: p.get("code") == 400)
        assert bad_get["reason"]
    # nothing else disturbed: the next good report goes through, edgecore and its broker are the same processes
    assert report(rig, "thermo-bad", "ok-1", "19.0")["twin"]["temperature"]["actual"]["value"] == "19.0"
    wait_until(lambda: rig.reported("thermo-bad").get("temperature") == "19.0", "good report in status")
    assert rig.edge.proc is not None and rig.edge.proc.pid == edge_pid and rig.edge.running()


def test_autonomy_twins_over_mqtt_while_cut_off_and_after_an_offline_restart(rig: DeviceCloudEdge) -> None:
    create_device(rig, "thermo-c")
    report(rig, "thermo-c", "c0", "21.0")
    wait_until(lambda: rig.reported("thermo-c").get("temperature") == "21.0", "first report in status")

    rig.partition()
    try:
        rig.edge.wait_log('"disconnected from cloudcore"', timeout=30)
        assert report(rig, "thermo-c", "c1", "30.5")["twin"]["temperature"]["actual"]["value"] == "30.5"
        got = twin_get(rig, "thermo-c", "g1")
        assert set(got) == {"event_id", "timestamp", "twin"}
        assert got["twin"]["temperature"]["actual"]["value"] == "30.5"
        assert got["twin"]["setpoint"]["expected"]["value"] == "42"
        assert rig.reported("thermo-c")["temperature"] == "21.0"  # the cloud cannot know yet

        broker_pid = int((rig.broker_dir / "mosquitto.pid").read_text().split()[0])
        rig.edge.stop()  # restarted while cut off: its broker goes with it and comes back with it
        assert not pid_alive(broker_pid) and not (rig.broker_dir / "mosquitto.pid").exists()
        rig.start_edge(connected=False)
        got = _first_answer(rig, "thermo-c")
        assert got["twin"]["temperature"]["actual"]["value"] == "30.5"  # from SQLite
        assert got["twin"]["setpoint"]["expected"]["value"] == "42"
        assert report(rig, "thermo-c", "c2", "31.5")["twin"]["temperature"]["actual"]["value"] == "31.5"
        assert rig.reported("thermo-c")["temperature"] == "21.0"
    finally:
        reconnects = rig.edge.log_count('"connected to cloudcore"')
        rig.heal()
    rig.edge.wait_log('"connected to cloudcore"', count=reconnects + 1, timeout=60)
    took = wait_until(lambda: rig.reported("thermo-c").get("temperature") == "31.5",
                      "the offline report in status after the heal", timeout=30, interval=0.1)
    print(f"heal -> offline report in Device status: {took:.2f} s after reconnect", file=sys.stderr)
    wait_until(lambda: pending_reports(rig) == 0, "pending reports acknowledged after the heal", timeout=15)


def _first_answer(rig: DeviceCloudEdge, name: str, timeout: float = 30) -> dict[str, Any]:
    """Twin get, asked again until the restarted edgecore's broker and subscriptions answer."""
    last: Exception | None = None
    for attempt in range(int(timeout)):
        try:
            return twin_get(rig, name, f"probe-{attempt}", timeout=1)
        except (AssertionError, subprocess.CalledProcessError) as exc:  # broker not up yet: the clients fail
            last = exc
    raise AssertionError(f"the restarted edge did not answer a twin get: {last}\n"
                         f"{Path(rig.edge.log).read_text()[-3000:]}")
