"""CloudHub against a real control plane and a real mutual-TLS edge connection: ACKs become ObjectSync objects,
and after a CloudHub restart only objects newer than what the node acked are sent again."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from cloudcore.cloudhub.hub import CloudHubModule
from common.bus import ModuleBus
from common.config.cloudcore import CloudHub as CloudHubConfig
from common.constants import DEFAULT_PROJECT_ID, HEADER_EDGE_HAS_IT
from common.message import Message
from common.modules import ModuleContext
from common.pki import KeyPair, issue_client_cert, load_cert, load_private_key
from common.transport import Connection, client_tls, dial
from tests.fixtures.controlplane import ROOT, ControlPlaneProcess
from tests.fixtures.mosquitto import free_port

NODE = "edge-sync"


def pod(i: int, rv: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "default", "uid": f"uid-{i}", "resourceVersion": str(rv)},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def update(i: int, rv: int) -> Message:
    return Message.new(source="edgecontroller", group="resource", operation="update",
                       resource=f"node/{NODE}/default/pod/p{i}", content=pod(i, rv), resource_version=str(rv))


@pytest.fixture
def plane(tmp_path: Path) -> Any:
    instance = ControlPlaneProcess(tmp_path / "cp")
    instance.start()
    instance.kubectl("apply", "-f", str(ROOT / "config/crds/reliablesyncs"))
    instance.kubectl("wait", "--for=condition=established", "crd/objectsyncs.reliablesyncs.kubeedge.io",
                     "--timeout=20s")
    yield instance
    instance.stop()


@contextlib.asynccontextmanager
async def running_hub(plane: ControlPlaneProcess, hub_config: CloudHubConfig) -> AsyncIterator[ModuleBus]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        bus = ModuleBus()
        module = CloudHubModule(hub_config, api)
        task = asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))
        try:
            yield bus
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def connect_as(plane: ControlPlaneProcess, tmp_path: Path, port: int, node: str) -> Connection:
    """A connection with a certificate for `node` signed by the cloud's CA (from the casecret Secret)."""
    data = json.loads(plane.kubectl("get", "secret", "casecret", "-n", "kubeedge", "-o", "json").stdout)["data"]
    ca = KeyPair(load_cert(base64.b64decode(data["cadata"])), load_private_key(base64.b64decode(data["cakeydata"])))
    ca.write(tmp_path / "ca.crt", tmp_path / "ca.key")
    issue_client_cert(ca, node).write(tmp_path / f"{node}.crt", tmp_path / f"{node}.key")
    tls = client_tls(tmp_path / "ca.crt", tmp_path / f"{node}.crt", tmp_path / f"{node}.key")
    return await dial(f"127.0.0.1:{port}", node, DEFAULT_PROJECT_ID, tls)


async def edge(plane: ControlPlaneProcess, tmp_path: Path, port: int, received: list[tuple[str, str]],
               ack: bool = True) -> None:
    connection = await connect_as(plane, tmp_path, port, NODE)
    try:
        while True:
            message = await connection.recv()
            received.append((message.resource, message.header.resource_version))
            if ack:
                await connection.send(message.response("OK"))
    finally:
        await connection.close()


def hub_config_for(tmp_path: Path, port: int) -> CloudHubConfig:
    """CloudHub on 127.0.0.1:`port`, its CA and certificates from the kubeedge Secrets (no files)."""
    return CloudHubConfig.model_validate({
        "advertiseAddress": ["127.0.0.1"], "keepaliveInterval": 30,
        "tlsCAFile": str(tmp_path / "none/ca.crt"), "tlsCAKeyFile": str(tmp_path / "none/ca.key"),
        "tlsCertFile": str(tmp_path / "none/server.crt"), "tlsPrivateKeyFile": str(tmp_path / "none/server.key"),
        "websocket": {"address": "127.0.0.1", "port": port}, "https": {"address": "127.0.0.1", "port": free_port()}})


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110 - polling another process's state
            await asyncio.sleep(0.1)


async def test_acks_persist_as_objectsyncs_and_a_restart_resends_only_newer(plane: ControlPlaneProcess,
                                                                            tmp_path: Path) -> None:
    port = free_port()
    hub_config = hub_config_for(tmp_path, port)

    def synced() -> dict[str, str]:
        items = json.loads(plane.kubectl("get", "objectsyncs", "-n", "default", "-o", "json").stdout)["items"]
        return {i["metadata"]["name"]: (i.get("status") or {}).get("objectResourceVersion", "") for i in items}

    received: list[tuple[str, str]] = []
    async with running_hub(plane, hub_config) as bus:
        await asyncio.sleep(1.0)  # secrets, then the listener
        link = asyncio.create_task(edge(plane, tmp_path, port, received))
        for i in range(5):
            await bus.send("cloudhub", update(i, 10 + i))
        await wait_until(lambda: asyncio.sleep(0, len(received) >= 5))
        expected = {f"{NODE}.uid-{i}": str(10 + i) for i in range(5)}
        await wait_until(lambda: asyncio.to_thread(lambda: synced() == expected))
        link.cancel()
    assert sorted(received) == [(f"default/pod/p{i}", str(10 + i)) for i in range(5)]

    received.clear()
    async with running_hub(plane, hub_config) as bus:  # a restarted CloudHub knows what the node has
        await asyncio.sleep(1.0)
        link = asyncio.create_task(edge(plane, tmp_path, port, received))
        for i in range(5):
            await bus.send("cloudhub", update(i, 10 + i))  # what a relisting controller would send again
        await bus.send("cloudhub", update(2, 99))  # one object really changed
        await wait_until(lambda: asyncio.sleep(0, len(received) >= 1))
        await asyncio.sleep(1.0)
        link.cancel()
    assert received == [("default/pod/p2", "99")]


async def test_a_status_only_update_is_recorded_not_sent_unless_something_is_still_on_the_way(
        plane: ControlPlaneProcess, tmp_path: Path) -> None:
    port = free_port()
    hub_config = hub_config_for(tmp_path, port)

    def marked(i: int, rv: int) -> Message:
        message = update(i, rv)
        return message._replace(header=message.header._replace(type=HEADER_EDGE_HAS_IT))

    def synced() -> dict[str, str]:
        items = json.loads(plane.kubectl("get", "objectsyncs", "-n", "default", "-o", "json").stdout)["items"]
        return {i["metadata"]["name"]: (i.get("status") or {}).get("objectResourceVersion", "") for i in items}

    wire: list[Message] = []

    async def link() -> None:
        connection = await connect_as(plane, tmp_path, port, NODE)
        try:
            while True:
                message = await connection.recv()
                wire.append(message)
                await connection.send(message.response("OK"))
        finally:
            await connection.close()

    async with running_hub(plane, hub_config) as bus:
        await asyncio.sleep(1.0)
        edge_link = asyncio.create_task(link())
        await bus.send("cloudhub", update(0, 10))
        await wait_until(lambda: asyncio.to_thread(lambda: synced().get(f"{NODE}.uid-0") == "10"))
        await bus.send("cloudhub", marked(0, 11))  # the edge acked 10 and nothing else is on the way
        await wait_until(lambda: asyncio.to_thread(lambda: synced().get(f"{NODE}.uid-0") == "11"))
        await bus.send("cloudhub", update(1, 20))
        await bus.send("cloudhub", marked(1, 21))  # 20 not acked yet: its ACK stands for 21, or 21 replaces it
        await wait_until(lambda: asyncio.to_thread(lambda: synced().get(f"{NODE}.uid-1") == "21"))
        edge_link.cancel()
    assert [(m.resource, m.header.resource_version) for m in wire if m.resource.endswith("p0")] == [
        ("default/pod/p0", "10")]
    assert len([m for m in wire if m.resource.endswith("p1")]) == 1  # one message either way
    assert {m.header.type for m in wire} == {""}  # the marker never goes on the wire

    wire.clear()
    async with running_hub(plane, hub_config) as bus:  # restarted: 11 counts as what the node has
        await asyncio.sleep(1.0)
        edge_link = asyncio.create_task(link())
        await bus.send("cloudhub", update(0, 11))
        await bus.send("cloudhub", update(1, 22))
        await wait_until(lambda: asyncio.sleep(0, len(wire) >= 1))
        await asyncio.sleep(1.0)
        edge_link.cancel()
    assert [(m.resource, m.header.resource_version) for m in wire] == [("default/pod/p1", "22")]


async def test_an_objectsync_exists_from_the_first_send_even_without_an_ack(plane: ControlPlaneProcess,
                                                                           tmp_path: Path) -> None:
    port = free_port()
    hub_config = hub_config_for(tmp_path, port)
    received: list[tuple[str, str]] = []

    def sync_rv() -> str | None:
        result = plane.kubectl("get", "objectsync", f"{NODE}.uid-7", "-n", "default", "-o",
                               "jsonpath={.status.objectResourceVersion}", check=False)
        return result.stdout if result.returncode == 0 else None

    async with running_hub(plane, hub_config) as bus:
        await asyncio.sleep(1.0)
        link = asyncio.create_task(edge(plane, tmp_path, port, received, ack=False))
        await bus.send("cloudhub", update(7, 70))
        await wait_until(lambda: asyncio.to_thread(lambda: sync_rv() == "0"))
        link.cancel()
    assert received == [("default/pod/p7", "70")]


async def test_another_nodes_certificate_neither_receives_nor_sends_for_the_node(plane: ControlPlaneProcess,
                                                                                 tmp_path: Path) -> None:
    port = free_port()
    async with running_hub(plane, hub_config_for(tmp_path, port)) as bus:
        controller = bus.register("edgecontroller", "edgecontroller")
        await asyncio.sleep(1.0)
        for i in range(3):
            await bus.send("cloudhub", update(i, 10 + i))  # queued for NODE, which is not connected
        intruder = await connect_as(plane, tmp_path, port, "intruder")
        try:
            for resource in (f"default/node/{NODE}", f"kube-node-lease/lease/{NODE}", "default/node/intruder"):
                await intruder.send(Message.new(source="edged", group="meta", operation="update", resource=resource,
                                                content={"metadata": {"name": resource.rsplit("/", 1)[1]}}))
            async with asyncio.timeout(5):
                delivered = await controller.get()
            assert delivered.resource == "node/intruder/default/node/intruder"
            with pytest.raises(TimeoutError):  # nothing of NODE's queue, nothing more upstream
                async with asyncio.timeout(1.5):
                    await intruder.recv()
            assert len(controller) == 0
        finally:
            await intruder.close()
