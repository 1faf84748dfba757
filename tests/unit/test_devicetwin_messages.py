"""DeviceTwin's topics, message bodies and pending cloud reports, without sockets."""

from __future__ import annotations

from common.constants import Group, Op
from common.message import Message
from edgecore.devicetwin import messages as m
from edgecore.devicetwin.pending import PendingReports
from edgecore.devicetwin.store import Device
from edgecore.eventbus.topics import SUBSCRIPTIONS, Route, broker_address, route_of, topic_matches


def test_topics_parse_to_actions() -> None:
    assert m.parse_topic("$hw/events/device/default/thermo/twin/update") == m.TopicEvent(m.Action.TWIN_UPDATE,
                                                                                          "default/thermo")
    assert m.parse_topic("$hw/events/device/ns/d/twin/get").action is m.Action.TWIN_GET  # type: ignore[union-attr]
    assert m.parse_topic("$hw/events/device/ns/d/state/update").action is m.Action.STATE_UPDATE  # type: ignore[union-attr]
    assert m.parse_topic("$hw/events/device/ns/d/twin/cloud_updated").action is m.Action.TWIN_CLOUD_SYNC  # type: ignore[union-attr]
    assert m.parse_topic("$hw/events/node/edge-1/membership/get") == m.TopicEvent(m.Action.MEMBERSHIP_GET, "edge-1")
    assert m.parse_topic("$hw/events/device/ns/d/twin/update/delta") is None
    assert m.parse_topic("$hw/events/device/d/twin/update") is None  # v1.15 single-level IDs are not subscribed
    assert m.decode_topic(m.encode_topic("$hw/events/node/n/membership/get")) == "$hw/events/node/n/membership/get"


def test_eventbus_subscriptions_cover_the_inputs_and_not_the_outputs() -> None:
    def subscribed(topic: str) -> bool:
        return any(topic_matches(p, topic) for p in SUBSCRIPTIONS)

    for topic in ("$hw/events/device/ns/d/twin/update", "$hw/events/device/ns/d/twin/get",
                  "$hw/events/device/ns/d/state/update", "$hw/events/node/n/membership/get",
                  "$hw/events/upload/x/y", "SYS/dis/upload_records", "app/user/anything"):
        assert subscribed(topic), topic
    for topic in ("$hw/events/device/ns/d/twin/update/delta", "$hw/events/device/ns/d/twin/update/result",
                  "$hw/events/device/ns/d/twin/get/result", "$hw/events/device/ns/d/state/update/result",
                  "$hw/events/node/n/membership/updated", "$hw/events/node/n/membership/get/result"):
        assert not subscribed(topic), topic
    assert route_of("$hw/events/device/ns/d/twin/update") is Route.TWIN
    assert route_of("$hw/events/upload/x") is Route.CLOUD
    assert broker_address("tcp://127.0.0.1:1883") == ("127.0.0.1", 1883, False)
    assert broker_address("ssl://localhost") == ("localhost", 8883, True)


def test_shapes() -> None:
    assert m.error_result("e", 5, 404, "nope") == {"event_id": "e", "timestamp": 5, "code": 404, "reason": "nope"}
    assert m.device_state_body("e", 5, "thermo", "online", "2024-01-01T00:00:00Z") == {
        "event_id": "e", "timestamp": 5,
        "device": {"name": "thermo", "state": "online", "lastOnlineTime": "2024-01-01T00:00:00Z"}}
    assert m.membership_device({"id": "default/t", "name": "t", "description": ""}) == {"id": "default/t",
                                                                                       "name": "t"}
    view = Device("default/t", "t", state="online").membership_view()
    assert m.membership_device(view) == {"id": "default/t", "name": "t", "state": "online"}
    assert m.state_of({"State": "ok"}) == "ok" and m.state_of({"state": "online"}) == "online"
    assert m.validate_value("boolean", "true") is None and m.validate_value("int", "x")


def test_pending_reports_merge_ack_resend_and_survive_restart() -> None:
    pending = PendingReports(limit=3, resend_after=10)
    pending.put_twin("default/t", {"a": {"actual": {"value": "1"}}})
    pending.put_twin("default/t", {"b": {"actual": {"value": "2"}}})
    assert len(pending) == 1
    pending.put_state("default/t", {"state": "online"})
    due = pending.due(0.0)
    assert [x.resource for x in due] == ["device/default/t/twin/edge_updated", "device/default/t/state/update"]
    second = due[0]
    assert second.content["twin"] == {"a": {"actual": {"value": "1"}}, "b": {"actual": {"value": "2"}}}
    assert (second.source, second.group, second.operation) == ("twin", Group.RESOURCE, Op.UPDATE)
    assert pending.due(5.0) == []  # in flight, not yet due again
    resent = pending.due(10.0)  # resent under a new msg_id, state gone (not acknowledged)
    assert [x.content["twin"] for x in resent] == [second.content["twin"]] and resent[0].msg_id != second.msg_id
    restored = PendingReports.restore([(k, v) for k, v in pending.take_dirty().items() if v is not None])
    assert restored.keys() == ["default/t/twin"]
    assert pending.ack(second.msg_id) is None  # the replaced report's late answer is ignored
    ack = Message.new(source="devicecontroller", group="twin", operation="response", resource="twin",
                      content="OK", parent_msg_id=resent[0].msg_id)
    assert pending.ack(ack.parent_msg_id) == "default/t/twin"
    assert len(pending) == 0
    for i in range(4):
        pending.put_state(f"default/d{i}", {"state": "ok"})
    assert len(pending) == 3 and pending.dropped == 1
    pending.disconnected()
    assert pending.has_unsent()
