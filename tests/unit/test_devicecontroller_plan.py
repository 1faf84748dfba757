"""DeviceController planning and message shapes (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cloudcore.devicecontroller.kinds import DEVICE, DEVICEMODEL
from cloudcore.devicecontroller.messages import (
    membership_message,
    merged_twins,
    parse_report,
    push_message,
    state_patch,
)
from cloudcore.devicecontroller.plan import Membership, Push, device_event, model_event


def dev(name: str, node: str, model: str = "m", rv: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "spec": {"nodeName": node, "deviceModelRef": {"name": model}}}


MODELS = {"ns/m": {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "5"}}}


def summary(actions: list[Push | Membership]) -> list[tuple[str, ...]]:
    return [(a.node, a.kind.type, a.operation) if isinstance(a, Push) else (a.node, "membership") for a in actions]


def test_new_device_brings_its_model_first() -> None:
    d = dev("d1", "a")
    assert summary(device_event(None, d, {"ns/d1": d}, MODELS)) == [
        ("a", "devicemodel", "insert"), ("a", "device", "insert"), ("a", "membership")]


def test_second_device_of_a_model_on_a_node_does_not_resend_the_model() -> None:
    d1, d2 = dev("d1", "a"), dev("d2", "a")
    assert summary(device_event(None, d2, {"ns/d1": d1, "ns/d2": d2}, MODELS)) == [
        ("a", "device", "insert"), ("a", "membership")]


def test_move_deletes_on_old_node_and_inserts_on_new() -> None:
    old, new = dev("d1", "a"), dev("d1", "b", rv="2")
    actions = device_event(old, new, {"ns/d1": new}, MODELS)
    assert summary(actions) == [
        ("a", "device", "delete"), ("a", "membership"), ("a", "devicemodel", "delete"),
        ("b", "devicemodel", "insert"), ("b", "device", "insert"), ("b", "membership")]
    removal = actions[1]
    assert isinstance(removal, Membership) and removal.removed == (old,)


def test_unbound_device_and_plain_update() -> None:
    assert device_event(None, dev("d1", ""), {}, MODELS) == []
    old, new = dev("d1", "a"), dev("d1", "a", rv="2")
    new["spec"]["protocol"] = {"protocolName": "modbus"}
    assert summary(device_event(old, new, {"ns/d1": new}, MODELS)) == [("a", "device", "update")]


def test_status_only_change_is_not_pushed_back_to_the_edge() -> None:
    old = dev("d1", "a")
    reported = {**dev("d1", "a", rv="2"), "status": {"twins": [{"propertyName": "t", "reported": {"value": "1"}}]}}
    assert device_event(old, reported, {"ns/d1": reported}, MODELS) == []
    relabelled = {**reported, "metadata": {**reported["metadata"], "labels": {"description": "new"}}}
    assert summary(device_event(reported, relabelled, {"ns/d1": relabelled}, MODELS)) == [("a", "device", "update")]
    desired = {**reported, "spec": {**reported["spec"], "properties": [{"name": "t", "desired": {"value": "2"}}]}}
    assert summary(device_event(reported, desired, {"ns/d1": desired}, MODELS)) == [("a", "device", "update")]


def test_model_event_goes_to_every_node_using_it() -> None:
    devices = [dev("d1", "b"), dev("d2", "a"), dev("d3", "a"), dev("d4", "c", model="other")]
    assert summary(model_event("update", MODELS["ns/m"], devices)) == [
        ("a", "devicemodel", "update"), ("b", "devicemodel", "update")]


def test_push_and_membership_shapes() -> None:
    message = push_message(Push("a", DEVICE, "insert", dev("d1", "a", rv="7")))
    assert message.resource == "node/a/ns/device/d1"
    assert (message.source, message.group, message.header.resource_version) == ("devicecontroller", "resource", "7")
    assert message.content["apiVersion"] == "devices.kubeedge.io/v1beta1" and message.content["kind"] == "Device"
    assert push_message(Push("a", DEVICEMODEL, "delete", MODELS["ns/m"])).resource == "node/a/ns/devicemodel/m"
    member = membership_message(Membership("a", added=(dev("d1", "a"),)))
    assert (member.group, member.operation, member.resource) == ("twin", "update", "node/a/membership")
    assert member.content["added_devices"] == [{"id": "ns/d1", "name": "d1", "description": ""}]


def test_parse_report() -> None:
    report = parse_report("node/a/device/ns/d1/twin/edge_updated")
    assert report is not None and (report.node, report.namespace, report.name) == ("a", "ns", "d1")
    legacy = parse_report("node/a/device/d1/state/update")
    assert legacy is not None and (legacy.namespace, legacy.name, legacy.action) == ("default", "d1", "state/update")
    assert parse_report("node/a/ns/pod/p") is None
    assert parse_report("node/a/device/ns/d1/twin/cloud_updated") is None


def test_merged_twins_keeps_other_properties() -> None:
    current = {"status": {"twins": [{"propertyName": "other", "reported": {"value": "x", "metadata": {}}}]}}
    twins = merged_twins(current, {"t": {"actual": {"value": 1.5, "metadata": {"timestamp": 9}},
                                         "metadata": {"type": "float"}}})
    reported = {"value": "1.5", "metadata": {"timestamp": "9", "type": "float"}}
    assert twins == [{"propertyName": "other", "reported": {"value": "x", "metadata": {}}},
                     {"propertyName": "t", "reported": reported}]


def test_state_patch() -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert state_patch({"State": "OK"}, at) == {"status": {"state": "OK", "lastOnlineTime": "2024-01-02T03:04:05Z"}}
    assert state_patch({"state": "offline"}, at) == {"status": {"state": "offline", "lastOnlineTime": ""}}
    assert state_patch({"state": "exploded"}, at) is None
