"""DeviceController's upstream: state reports in every shape the edge sends, and the answers the edge's
pending reports wait for (checked against edgecore.devicetwin.pending itself). No I/O: a fake API."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from cloudcore.devicecontroller.kinds import DEVICE
from cloudcore.devicecontroller.messages import parse_state, state_patch
from cloudcore.devicecontroller.upstream import Upstream
from cloudcore.edgecontroller.kubeapi import UNREACHABLE, KubeError
from cloudcore.edgecontroller.sender import Sender
from common.bus import ModuleBus
from common.constants import CloudModule, Group, Op
from common.message import Message
from common.resource import add_node_prefix, trim_node_prefix
from edgecore.devicetwin.pending import PendingReports

NODE = "edge-1"
PATH = DEVICE.object_path("ns", "thermo")
AT = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeKube:
    """The two calls Upstream makes, with the resourceVersion precondition of a merge patch; `fail` queues
    KubeErrors raised by the next patches."""

    def __init__(self, device: dict[str, Any] | None, path: str = PATH) -> None:
        self.device = device
        self.path = path
        self.patches: list[dict[str, Any]] = []
        self.fail: list[KubeError] = []
        self.get_error: KubeError | None = None
        self.gets = 0

    async def get(self, path: str, query: Any = None) -> dict[str, Any]:
        assert path == self.path
        self.gets += 1
        if self.get_error is not None:
            raise self.get_error
        if self.device is None:
            raise KubeError(404, "NotFound", "devices thermo not found")
        return copy.deepcopy(self.device)

    async def patch(self, path: str, body: dict[str, Any], patch_type: str = "") -> dict[str, Any]:
        assert path == self.path
        if self.fail:
            raise self.fail.pop(0)
        if self.device is None:
            raise KubeError(404, "NotFound", "devices thermo not found")
        if body["metadata"]["resourceVersion"] != self.device["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        self.patches.append(body)
        self.device.setdefault("status", {}).update(body["status"])
        self.device["metadata"]["resourceVersion"] = str(int(self.device["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.device)


def device(node: str = NODE) -> dict[str, Any]:
    return {"metadata": {"name": "thermo", "namespace": "ns", "resourceVersion": "5"}, "spec": {"nodeName": node}}


class Cloud:
    """Upstream with a stand-in CloudHub mailbox; `answers()` are what would go down to the edge."""

    def __init__(self, kube: FakeKube) -> None:
        self.bus = ModuleBus()
        self.hub = self.bus.register(CloudModule.CLOUDHUB, CloudModule.CLOUDHUB)
        self.upstream = Upstream(kube, Sender(self.bus))  # type: ignore[arg-type]

    async def receive(self, message: Message) -> None:
        """As CloudHub routes an edge message: the connection's node prefix added."""
        await self.upstream.handle(message.with_resource(add_node_prefix(NODE, message.resource)))

    async def answers(self) -> list[Message]:
        out = []
        while len(self.hub):
            out.append(await self.hub.get())
        return out


def edge_view(answer: Message) -> Message:
    """What the edge receives: CloudHub trims `node/<node>/`."""
    return answer.with_resource(trim_node_prefix(answer.resource))


# -- state shapes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"event_id": "e", "timestamp": 1, "device": {"name": "thermo", "state": "online",
                                                 "lastOnlineTime": "2024-01-02T03:04:05Z"}},
    {"event_id": "e", "timestamp": 1, "device": {"name": "thermo", "state": "online",
                                                 "lastOnlineTime": "2024-01-02T03:04:05Z"}, "state": "online"},
    {"Device": {"State": "online", "LastOnlineTime": "2024-01-02T03:04:05+00:00"}},
    {"State": "online", "lastOnlineTime": "2024-01-02T03:04:05Z"},
])
def test_state_patch_reads_every_shape_the_edge_sends(body: dict[str, Any]) -> None:
    assert state_patch(body, datetime(2030, 1, 1, tzinfo=UTC)) == {
        "status": {"state": "online", "lastOnlineTime": "2024-01-02T03:04:05Z"}}


def test_state_patch_time_rules() -> None:
    # online without a (valid) edge time: now; not online: "" whatever the edge sent
    assert state_patch({"state": "OK"}, AT) == {"status": {"state": "OK", "lastOnlineTime": "2024-01-02T03:04:05Z"}}
    assert state_patch({"device": {"state": "ok", "lastOnlineTime": "yesterday"}}, AT) == {
        "status": {"state": "ok", "lastOnlineTime": "2024-01-02T03:04:05Z"}}
    assert state_patch({"device": {"state": "offline", "lastOnlineTime": "2023-05-05T00:00:00Z"}}, AT) == {
        "status": {"state": "offline", "lastOnlineTime": ""}}


def test_state_parse_prefers_the_nested_state_and_refuses_unknown_ones() -> None:
    report = parse_state({"device": {"state": "unhealthy"}, "state": "online"})
    assert report is not None and report.state == "unhealthy"
    assert parse_state({"device": {"name": "x"}, "State": "Unknown"}) is not None  # top level as a fallback
    assert parse_state({"device": {"state": "exploded"}}) is None
    assert parse_state({"state": 3}) is None
    assert parse_state({"event_id": "e"}) is None


# -- answers the edge waits for ------------------------------------------------------------------------------

async def test_twin_report_ack_clears_the_edges_pending_report() -> None:
    kube = FakeKube(device())
    cloud = Cloud(kube)
    pending = PendingReports()
    report = pending.put_twin("ns/thermo", {"temperature": {"actual": {"value": "21.5"}, "metadata": {
        "type": "float"}}})
    [sent] = pending.due(now=0.0)
    assert sent.msg_id == report.msg_id
    await cloud.receive(sent)
    [answer] = await cloud.answers()
    assert (answer.group, answer.operation, answer.resource, answer.content) == (
        Group.TWIN, Op.RESPONSE, f"node/{NODE}/twin", "OK")
    assert answer.parent_msg_id == sent.msg_id
    assert pending.ack(edge_view(answer).parent_msg_id) == "ns/thermo/twin"
    assert len(pending) == 0
    assert kube.patches[0]["metadata"] == {"resourceVersion": "5"}
    assert kube.patches[0]["status"]["twins"] == [{"propertyName": "temperature", "reported": {
        "value": "21.5", "metadata": {"type": "float"}}}]


async def test_state_report_from_the_edge_is_written_and_answered() -> None:
    kube = FakeKube(device())
    cloud = Cloud(kube)
    pending = PendingReports()
    body = {"event_id": "e", "timestamp": 1, "device": {"name": "thermo", "state": "online",
                                                        "lastOnlineTime": "2024-01-02T03:04:05Z"}, "state": "online"}
    pending.put_state("ns/thermo", body)
    [sent] = pending.due(now=0.0)
    await cloud.receive(sent)
    assert kube.patches == [{"metadata": {"resourceVersion": "5"},
                             "status": {"state": "online", "lastOnlineTime": "2024-01-02T03:04:05Z"}}]
    [answer] = await cloud.answers()
    assert (answer.operation, answer.parent_msg_id) == (Op.RESPONSE, sent.msg_id)


@pytest.mark.parametrize(("kube", "content", "reason"), [
    (FakeKube(None), {"twin": {"t": {"actual": {"value": "1"}}}}, "does not exist"),
    (FakeKube(device("other-node")), {"twin": {"t": {"actual": {"value": "1"}}}}, "bound to node 'other-node'"),
    (FakeKube(device()), "{not json", "malformed"),
    (FakeKube(device()), {"twin": {"t": "not an object"}}, "malformed twin report"),
    (FakeKube(device()), {"event_id": "no twin"}, "malformed twin report"),
])
async def test_a_report_that_can_never_apply_is_refused_so_the_edge_stops_resending(
        kube: FakeKube, content: Any, reason: str) -> None:
    cloud = Cloud(kube)
    pending = PendingReports()
    pending.put_twin("ns/thermo", {"t": {"actual": {"value": "1"}}})
    [sent] = pending.due(now=0.0)
    await cloud.receive(Message(sent.header, sent.route, content))  # the report's id, another body
    [answer] = await cloud.answers()
    assert (answer.group, answer.operation, answer.resource) == (Group.TWIN, Op.ERROR, f"node/{NODE}/twin")
    assert reason in answer.content
    assert pending.ack(edge_view(answer).parent_msg_id) == "ns/thermo/twin"
    assert kube.patches == []


async def test_unknown_state_is_refused() -> None:
    kube = FakeKube(device())
    cloud = Cloud(kube)
    await cloud.receive(Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                                    resource="device/ns/thermo/state/update", content={"state": "exploded"}))
    [answer] = await cloud.answers()
    assert answer.operation == Op.ERROR and kube.patches == []


async def test_api_trouble_is_not_answered_so_the_edge_resends() -> None:
    kube = FakeKube(device())
    kube.get_error = KubeError(UNREACHABLE, "Unreachable", "connection refused")
    cloud = Cloud(kube)
    report = Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                         resource="device/ns/thermo/twin/edge_updated", content={"twin": {}})
    await cloud.receive(report)  # logged, not answered
    assert await cloud.answers() == []
    # the resend, once the API is back, is answered
    kube.get_error = None
    await cloud.receive(report)
    [answer] = await cloud.answers()
    assert answer.operation == Op.RESPONSE and answer.parent_msg_id == report.msg_id


async def test_a_conflict_is_retried_on_a_fresh_read() -> None:
    kube = FakeKube(device())
    kube.fail = [KubeError(409, "Conflict", "the object has been modified")]
    cloud = Cloud(kube)
    await cloud.receive(Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                                    resource="device/ns/thermo/twin/edge_updated",
                                    content={"twin": {"t": {"actual": {"value": "2"}}}}))
    assert len(kube.patches) == 1
    [answer] = await cloud.answers()
    assert answer.operation == Op.RESPONSE


async def test_an_invalid_patch_is_refused() -> None:
    kube = FakeKube(device())
    kube.fail = [KubeError(422, "Invalid", "status.state: Invalid value")]
    cloud = Cloud(kube)
    await cloud.receive(Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                                    resource="device/ns/thermo/state/update", content={"state": "online"}))
    [answer] = await cloud.answers()
    assert answer.operation == Op.ERROR and "Invalid value" in answer.content


async def test_answers_from_the_edge_are_ignored() -> None:
    kube = FakeKube(device())
    cloud = Cloud(kube)
    await cloud.receive(Message.new(source="twin", group=Group.TWIN, operation=Op.RESPONSE,
                                    resource="device/ns/thermo/twin/edge_updated", content="OK"))
    assert await cloud.answers() == [] and kube.patches == []


async def test_a_batch_of_reports_for_one_device_is_one_patch_and_each_report_is_answered() -> None:
    kube = FakeKube(device())
    cloud = Cloud(kube)

    def twin_report(value: str, expected: str | None = None) -> Message:
        twin: dict[str, Any] = {"actual": {"value": value}, "metadata": {"type": "float"}}
        if expected is not None:
            twin["expected"] = {"value": expected}
        return Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                           resource=f"node/{NODE}/device/ns/thermo/twin/edge_updated", content={"twin": {"t": twin}})

    batch = [twin_report("1", expected="9"), twin_report("2"),
             Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                         resource=f"node/{NODE}/device/ns/thermo/state/update", content={"state": "offline"}),
             Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                         resource=f"node/{NODE}/device/ns/thermo/twin/edge_updated", content="{broken"),
             twin_report("3")]
    await cloud.upstream.handle_batch(batch)
    [patch] = kube.patches
    assert patch["status"]["twins"] == [{"propertyName": "t", "reported": {"value": "3", "metadata": {"type": "float"}},
                                         "observedDesired": {"value": "9", "metadata": {"type": "float"}}}]
    assert patch["status"]["state"] == "offline"
    answers = {a.parent_msg_id: a.operation for a in await cloud.answers()}
    assert answers == {batch[0].msg_id: Op.RESPONSE, batch[1].msg_id: Op.RESPONSE, batch[2].msg_id: Op.RESPONSE,
                       batch[3].msg_id: Op.ERROR, batch[4].msg_id: Op.RESPONSE}
    # the next report is merged onto the Device as written: no read
    await cloud.upstream.handle_batch([twin_report("4")])
    assert kube.gets == 1 and len(kube.patches) == 2
    assert kube.patches[1]["metadata"] == {"resourceVersion": "6"}


async def test_a_stale_written_copy_costs_a_conflict_and_a_fresh_read() -> None:
    kube = FakeKube(device())
    cloud = Cloud(kube)
    report = {"twin": {"t": {"actual": {"value": "1"}}}}
    await cloud.receive(Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                                    resource="device/ns/thermo/twin/edge_updated", content=report))
    assert kube.device is not None
    kube.device["metadata"]["resourceVersion"] = "50"  # someone else changed the Device
    await cloud.receive(Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                                    resource="device/ns/thermo/twin/edge_updated", content=report))
    assert kube.gets == 2 and kube.patches[-1]["metadata"] == {"resourceVersion": "50"}
    # moved to another node meanwhile: the next report from this node is refused after the fresh read
    kube.device["spec"]["nodeName"] = "edge-2"
    kube.device["metadata"]["resourceVersion"] = "60"
    await cloud.answers()
    await cloud.receive(Message.new(source="twin", group=Group.RESOURCE, operation=Op.UPDATE,
                                    resource="device/ns/thermo/twin/edge_updated", content=report))
    [answer] = await cloud.answers()
    assert answer.operation == Op.ERROR and "bound to node 'edge-2'" in answer.content
