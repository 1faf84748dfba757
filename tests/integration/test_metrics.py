"""cloudcore's and edgecore's /metrics and /readyz end to end: a real control plane, CloudHub with its monitor
server, and an edge (EdgeHub + MetaManager on SQLite) with its own, connected over mutual-TLS WebSocket.
Scraped over HTTP and parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig
from prometheus_client.parser import text_string_to_metric_families

from cloudcore.cloudhub.hub import CloudHubModule
from cloudcore.cloudhub.metrics import cloudcore_monitor
from common.bus import ModuleBus
from common.config.cloudcore import CloudHub as CloudHubConfig
from common.config.cloudcore import MonitorServer
from common.config.edgecore import EdgeHub as EdgeHubConfig
from common.config.edgecore import EdgeMonitorServer
from common.config.edgecore import MetaManager as MetaManagerConfig
from common.constants import EdgeModule
from common.message import Message
from common.metrics import MetricsServerModule
from common.modules import Module, run_modules
from common.pki import KeyPair, issue_client_cert, load_cert, load_private_key
from edgecore.edgehub.hub import EdgeHubModule
from edgecore.edgehub.metrics import edgecore_monitor
from edgecore.edgehub.outbox_store import PersistentOutbox
from edgecore.metamanager.module import MetaManagerModule
from edgecore.metamanager.store import MetaStore
from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.mosquitto import free_port
from tests.integration.test_cloudhub_sync import NODE, hub_config_for, plane, update

__all__ = ["plane"]  # the control plane fixture, shared with the CloudHub sync tests

HTTP = aiohttp.ClientTimeout(total=5)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(monitor: MetricsServerModule) -> Samples:
    async with aiohttp.ClientSession(timeout=HTTP) as session, \
            session.get(f"http://127.0.0.1:{monitor.port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def readyz(monitor: MetricsServerModule) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=HTTP) as session, \
            session.get(f"http://127.0.0.1:{monitor.port}/readyz") as response:
        return response.status, await response.text()


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110 - polling another component over HTTP
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(modules: list[Module], bus: ModuleBus) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_modules(bus, modules, stop))
    try:
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(10):
            assert await task == 0


@contextlib.asynccontextmanager
async def kube_client(plane: ControlPlaneProcess) -> AsyncIterator[kclient.ApiClient]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        yield api


def edge_files(plane: ControlPlaneProcess, tmp_path: Path) -> tuple[Path, Path, Path]:
    """CA file and a client certificate for NODE signed by the cloud's CA (from the casecret Secret)."""
    data = json.loads(plane.kubectl("get", "secret", "casecret", "-n", "kubeedge", "-o", "json").stdout)["data"]
    ca = KeyPair(load_cert(base64.b64decode(data["cadata"])), load_private_key(base64.b64decode(data["cakeydata"])))
    ca.write(tmp_path / "ca.crt", tmp_path / "ca.key")
    issue_client_cert(ca, NODE).write(tmp_path / "edge.crt", tmp_path / "edge.key")
    return tmp_path / "ca.crt", tmp_path / "edge.crt", tmp_path / "edge.key"


def pod_status(name: str, phase: str) -> Message:
    return Message.new(source="edged", group="meta", operation="update", resource=f"default/podstatus/{name}",
                       content={"UID": f"uid-{name}", "Name": name, "Status": {"phase": phase}})


def links(tmp_path: Path, transport: str) -> tuple[CloudHubConfig, dict[str, Any]]:
    """CloudHub's config and the edge's edgeHub transport keys for one transport."""
    port = free_port()
    hub_config = hub_config_for(tmp_path, port)
    if transport == "websocket":
        return hub_config, {"websocket": {"server": f"127.0.0.1:{port}"}}
    hub_config.websocket.enable = False
    hub_config.quic = hub_config.quic.model_validate({"enable": True, "address": "127.0.0.1", "port": port})
    return hub_config, {"websocket": {"enable": False}, "quic": {"enable": True, "server": f"127.0.0.1:{port}"}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["websocket", "quic"])
async def test_cloud_and_edge_metrics_and_readiness(plane: ControlPlaneProcess, tmp_path: Path,
                                                    transport: str) -> None:
    other = {"websocket": "quic", "quic": "websocket"}[transport]
    hub_config, edge_link = links(tmp_path, transport)
    async with kube_client(plane) as api:
        hub = CloudHubModule(hub_config, api)
        cloud_monitor = cloudcore_monitor(MonitorServer(bind_address=f"127.0.0.1:{free_port()}"), api, hub)
        assert cloud_monitor is not None
        cloud_bus = ModuleBus()
        async with running([hub, cloud_monitor], cloud_bus) as stop_cloud:
            async def cloud_ready() -> bool:
                return cloud_monitor.listening.is_set() and (await readyz(cloud_monitor))[0] == 200

            await eventually(cloud_ready)  # the API answers and the listeners are up
            assert "[+]kube-api ok" in (await readyz(cloud_monitor))[1]
            ca, cert, key = edge_files(plane, tmp_path)

            db = tmp_path / "edge" / "edgecore.db"
            store, outbox = await MetaStore.open(db), await PersistentOutbox.open(db)
            try:
                edge_hub = EdgeHubModule(EdgeHubConfig.model_validate({
                    "heartbeat": 2, "rotateCertificates": False, "tlsCaFile": str(ca), "tlsCertFile": str(cert),
                    "tlsPrivateKeyFile": str(key), **edge_link}), NODE, outbox)
                edge_monitor = edgecore_monitor(EdgeMonitorServer(bind_address=f"127.0.0.1:{free_port()}"), db,
                                                store, outbox, edge_hub)
                assert edge_monitor is not None
                edge_bus = ModuleBus()
                modules: list[Module] = [MetaManagerModule(MetaManagerConfig(), store), edge_hub, edge_monitor]
                async with running(modules, edge_bus):
                    async def one_node_connected() -> bool:
                        cloud = await scrape(cloud_monitor)
                        return metric(cloud, "kubeedge_cloudhub_connected_nodes", transport=transport) == 1

                    await eventually(one_node_connected)
                    edge = await scrape(edge_monitor)
                    assert metric(edge, "kubeedge_edgehub_connected") == 1
                    assert metric(edge, "kubeedge_edgehub_connects_total") == 1
                    assert metric(await scrape(cloud_monitor), "kubeedge_cloudhub_connected_nodes",
                                  transport=other) == 0

                    # an object goes down, is stored at the edge and ACKed
                    for i in range(3):
                        await cloud_bus.send("cloudhub", update(i, 10 + i))

                    async def three_acked() -> bool:
                        return metric(await scrape(cloud_monitor), "kubeedge_cloudhub_acks_total") == 3

                    await eventually(three_acked)
                    cloud = await scrape(cloud_monitor)
                    assert metric(cloud, "kubeedge_cloudhub_messages_sent_total", type="pod", operation="update") == 3
                    assert metric(cloud, "kubeedge_cloudhub_messages_received_total", type="pod",
                                  operation="response") == 0  # ACKs: kubeedge_cloudhub_acks_total
                    assert metric(cloud, "kubeedge_cloudhub_first_sends_total") == 3
                    assert metric(cloud, "kubeedge_cloudhub_ack_latency_seconds_count") == 3
                    assert metric(cloud, "kubeedge_cloudhub_ack_latency_seconds_bucket", le="+Inf") == 3
                    assert metric(cloud, "kubeedge_cloudhub_queue_messages", state="in_flight", connected="true") == 0
                    edge = await scrape(edge_monitor)
                    assert metric(edge, "kubeedge_edgehub_messages_received_total", type="pod",
                                  operation="update") == 3
                    assert metric(edge, "kubeedge_edgehub_messages_sent_total", type="pod", operation="response") == 3
                    assert metric(edge, "kubeedge_edgecore_sqlite_file_bytes", file="main") > 0

                    # what edged reports shows up as pods by phase
                    await edge_bus.send(EdgeModule.EDGEHUB, pod_status("p0", "Running"))
                    await edge_bus.send(EdgeModule.EDGEHUB, pod_status("p1", "Pending"))

                    async def phases_seen() -> bool:
                        edge = await scrape(edge_monitor)
                        return (metric(edge, "kubeedge_edgecore_pods", phase="Running") == 1
                                and metric(edge, "kubeedge_edgecore_pods", phase="Pending") == 1)

                    await eventually(phases_seen)

                    async def status_received() -> bool:
                        cloud = await scrape(cloud_monitor)
                        return metric(cloud, "kubeedge_cloudhub_messages_received_total", type="podstatus",
                                      operation="update") >= 2

                    await eventually(status_received)
                    status, body = await readyz(edge_monitor)
                    assert status == 200 and "[+]cloud ok: connected (optional)" in body

                    # the API goes away: cloudcore is no longer ready; the edge does not care
                    plane.stop()

                    async def cloud_unready() -> bool:
                        return (await readyz(cloud_monitor))[0] == 500

                    await eventually(cloud_unready)
                    assert "[-]kube-api failed" in (await readyz(cloud_monitor))[1]

                    # cloudcore stops: edgecore notices, and stays ready and healthy
                    stop_cloud.set()

                    async def edge_offline() -> bool:
                        return metric(await scrape(edge_monitor), "kubeedge_edgehub_connected") == 0

                    await eventually(edge_offline)
                    status, body = await readyz(edge_monitor)
                    assert status == 200, body
                    assert "[+]database ok" in body
                    assert "[-]cloud failed: disconnected; the edge works offline (optional)" in body
                    edge = await scrape(edge_monitor)
                    assert metric(edge, "kubeedge_edgecore_pods", phase="Running") == 1
            finally:
                await outbox.close()
                await store.close()
