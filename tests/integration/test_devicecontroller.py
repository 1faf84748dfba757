"""DeviceController against a real control plane process and the real module bus.

The CRDs are installed the way scripts/quickstart does (`kubectl apply -R -f config/crds`); a stand-in
`cloudhub` mailbox captures what goes down; edge reports are sent into the devicecontroller group as
CloudHub routes them (source `twin`, resource `node/<node>/device/<ns>/<name>/...`). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from cloudcore.devicecontroller import DeviceControllerModule
from cloudcore.devicecontroller.kinds import DEVICE, DEVICEMODEL
from cloudcore.edgecontroller.kubeapi import KubeJSON
from common.bus import ModuleBus
from common.constants import CloudModule
from common.message import Message
from common.modules import ModuleContext
from tests.fixtures.controlplane import ROOT, ControlPlaneProcess

WAIT = 30.0
NS = "default"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    instance = ControlPlaneProcess(tmp_path_factory.mktemp("devicecontroller-cp"))
    instance.start()
    instance.kubectl("apply", "-R", "-f", str(ROOT / "config/crds"))
    instance.kubectl("wait", "--for=condition=established", "--timeout=30s",
                     "crd/devices.devices.kubeedge.io", "crd/devicemodels.devices.kubeedge.io")
    yield instance
    instance.stop()


@dataclass
class Harness:
    bus: ModuleBus
    kube: KubeJSON
    received: list[Message] = field(default_factory=list)

    def seen(self) -> list[tuple[str, str, str]]:
        return [(m.group, m.operation, m.resource) for m in self.received]

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while not condition():  # noqa: ASYNC110 - the module fills `received` from its own tasks
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; received: {self.seen()}") from None

    async def wait_message(self, group: str, operation: str, resource: str) -> Message:
        def found() -> Message | None:
            return next((m for m in self.received
                         if (m.group, m.operation, m.resource) == (group, operation, resource)), None)

        await self.wait_for(lambda: found() is not None, f"{group} {operation} {resource}")
        message = found()
        assert message is not None
        return message


@contextlib.asynccontextmanager
async def controller(plane: ControlPlaneProcess) -> AsyncIterator[Harness]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        bus = ModuleBus()
        hub = bus.register(CloudModule.CLOUDHUB, CloudModule.CLOUDHUB)
        module = DeviceControllerModule(api)
        harness = Harness(bus, KubeJSON(api))

        async def collect() -> None:
            while True:
                harness.received.append(await hub.get())

        collector = asyncio.create_task(collect())
        task = asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))
        try:
            yield harness
        finally:
            for owned in (task, collector):
                owned.cancel()
            for owned in (task, collector):
                with contextlib.suppress(asyncio.CancelledError):
                    await owned
            bus.close()


MODEL: dict[str, Any] = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "DeviceModel",
    "metadata": {"name": "thermo-model", "namespace": NS},
    "spec": {"protocol": "modbus", "properties": [
        {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly", "minimum": "-40", "unit": "degC"},
        {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"},
    ]},
}


def device(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": NS, "labels": {"description": "thermometer"}},
        "spec": {
            "deviceModelRef": {"name": "thermo-model"},
            "nodeName": node,
            "protocol": {"protocolName": "modbus", "configData": {"tcp": {"ip": "192.168.1.50", "port": 502}}},
            "properties": [
                {"name": "temperature", "reportCycle": 10000, "collectCycle": 5000, "reportToCloud": True,
                 "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": 2}}},
                {"name": "setpoint", "desired": {"value": "42"}},
            ],
        },
    }


def test_crds_install_with_upstream_versions(plane: ControlPlaneProcess) -> None:
    for crd in ("devices.devices.kubeedge.io", "devicemodels.devices.kubeedge.io"):
        spec = json.loads(plane.kubectl("get", "crd", crd, "-o", "json").stdout)["spec"]
        versions = {v["name"]: (v["served"], v["storage"]) for v in spec["versions"]}
        assert versions == {"v1alpha2": (True, False), "v1beta1": (True, True)}
        assert all(not v.get("subresources") for v in spec["versions"])  # no status subresource
    plane.kubectl("apply", "-f", "-", input_text=json.dumps(device("crd-check", "")))
    stored = json.loads(plane.kubectl("get", "device", "crd-check", "-o", "json").stdout)
    assert stored["spec"]["protocol"]["configData"] == {"tcp": {"ip": "192.168.1.50", "port": 502}}
    assert stored["spec"]["properties"][0]["visitors"]["configData"]["offset"] == 2
    plane.kubectl("delete", "device", "crd-check")


async def test_device_follows_its_node_and_reports_reach_status(plane: ControlPlaneProcess) -> None:
    async with controller(plane) as h:
        model = await h.kube.create(DEVICEMODEL.collection_path(NS), MODEL)
        created = await h.kube.create(DEVICE.collection_path(NS), device("thermo-01", "node-a"))
        dev_a = "node/node-a/default/device/thermo-01"
        model_a = "node/node-a/default/devicemodel/thermo-model"
        pushed = await h.wait_message("resource", "insert", dev_a)
        assert pushed.header.resource_version == created["metadata"]["resourceVersion"]
        assert pushed.source == "devicecontroller"
        assert pushed.content["spec"]["nodeName"] == "node-a"
        model_msg = await h.wait_message("resource", "insert", model_a)
        assert model_msg.header.resource_version == model["metadata"]["resourceVersion"]
        assert h.received.index(model_msg) < h.received.index(pushed)  # model before device
        member = await h.wait_message("twin", "update", "node/node-a/membership")
        assert member.content["added_devices"] == [
            {"id": "default/thermo-01", "name": "thermo-01", "description": "thermometer"}]
        assert member.content["removed_devices"] == []

        # move to node-b: delete on A (device, then the model nobody there uses), insert on B
        await h.kube.patch(DEVICE.object_path(NS, "thermo-01"), {"spec": {"nodeName": "node-b"}})
        await h.wait_message("resource", "delete", dev_a)
        await h.wait_message("resource", "delete", model_a)
        await h.wait_message("resource", "insert", "node/node-b/default/devicemodel/thermo-model")
        await h.wait_message("resource", "insert", "node/node-b/default/device/thermo-01")
        await h.wait_for(
            lambda: any(m.resource == "node/node-a/membership" and m.content["removed_devices"] for m in h.received),
            "membership removal on node-a")

        # a model change reaches the node that uses it
        await h.kube.patch(DEVICEMODEL.object_path(NS, "thermo-model"), {"spec": {"protocol": "opcua"}})
        await h.wait_message("resource", "update", "node/node-b/default/devicemodel/thermo-model")

        # an edge twin report from node-b lands in status, and is answered
        report = Message.new(
            source="twin", group="twin", operation="update",
            resource="node/node-b/device/default/thermo-01/twin/edge_updated",
            content={"event_id": "e1", "timestamp": 1700000000000, "twin": {
                "temperature": {"actual": {"value": "21.5", "metadata": {"timestamp": 1700000000000}},
                                "metadata": {"type": "float"}},
                "setpoint": {"expected": {"value": "42"}, "actual": {"value": "40"}, "metadata": {"type": "int"}},
            }},
        )
        await h.bus.send_to_group(CloudModule.DEVICECONTROLLER, report)
        ack = await h.wait_message("twin", "response", "node/node-b/twin")
        assert ack.parent_msg_id == report.msg_id and ack.content == "OK"
        stored = json.loads(plane.kubectl("get", "device", "thermo-01", "-o", "json").stdout)
        twins = {t["propertyName"]: t for t in stored["status"]["twins"]}
        assert twins["temperature"]["reported"] == {
            "value": "21.5", "metadata": {"timestamp": "1700000000000", "type": "float"}}
        assert twins["setpoint"]["reported"]["value"] == "40"
        assert twins["setpoint"]["observedDesired"]["value"] == "42"

        # a state report
        state = Message.new(source="twin", group="twin", operation="update",
                            resource="node/node-b/device/default/thermo-01/state/update",
                            content={"event_id": "e2", "timestamp": 1, "State": "online"})
        await h.bus.send_to_group(CloudModule.DEVICECONTROLLER, state)

        async def state_shown() -> None:
            while True:
                got = await h.kube.get(DEVICE.object_path(NS, "thermo-01"))
                if got.get("status", {}).get("state") == "online":
                    assert got["status"]["lastOnlineTime"]
                    assert got["status"]["twins"]  # the twins survive the state patch
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(state_shown(), WAIT)

        # deleted: delete on B
        await h.kube.delete(DEVICE.object_path(NS, "thermo-01"))
        await h.wait_message("resource", "delete", "node/node-b/default/device/thermo-01")
