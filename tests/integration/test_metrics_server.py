"""The monitor server over real HTTP (/healthz, /metrics parsed back, /readyz, a busy port), and the readiness
checks cloudcore and edgecore wire into it against a dead API and a closed edge database."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client as kclient
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from cloudcore.cloudhub.hub import CloudHubModule
from cloudcore.cloudhub.metrics import cloudcore_monitor
from common.bus import ModuleBus
from common.config.cloudcore import CloudHub as CloudHubConfig
from common.config.cloudcore import MonitorServer
from common.config.edgecore import EdgeHub as EdgeHubConfig
from common.config.edgecore import EdgeMonitorServer
from common.metrics import (
    CheckResult,
    MetricsServerModule,
    ReadinessCheck,
    add_process_collectors,
    new_registry,
    readiness,
)
from common.modules import ModuleContext
from edgecore.edgehub.hub import EdgeHubModule
from edgecore.edgehub.metrics import edgecore_monitor
from edgecore.edgehub.outbox_store import PersistentOutbox
from edgecore.metamanager.store import MetaStore
from tests.fixtures.mosquitto import free_port

TIMEOUT = aiohttp.ClientTimeout(total=5)


@contextlib.asynccontextmanager
async def serving(module: MetricsServerModule) -> AsyncIterator[asyncio.Task[None]]:
    bus = ModuleBus()
    task = asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))
    try:
        yield task
    finally:
        task.cancel()
        async with asyncio.timeout(5):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_health_metrics_and_readiness_over_http() -> None:
    registry = new_registry()
    add_process_collectors(registry)
    Counter("demo_things", "demo", namespace="kubeedge", registry=registry).inc(3)
    ready = {"db": True}

    async def database() -> CheckResult:
        return CheckResult(ready["db"], "" if ready["db"] else "closed")

    module = MetricsServerModule(f"127.0.0.1:{free_port()}", registry, [ReadinessCheck("database", database)])
    async with serving(module):
        async with asyncio.timeout(5):
            await module.listening.wait()
        base = f"http://127.0.0.1:{module.port}"
        assert await get(f"{base}/healthz") == (200, "text/plain; charset=utf-8", "ok")
        status, content_type, text = await get(f"{base}/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["kubeedge_demo_things"].samples[0].value == 3
        assert "process_resident_memory_bytes" in families
        assert (await get(f"{base}/readyz"))[0::2] == (200, "[+]database ok\nreadyz check passed\n")
        ready["db"] = False
        assert (await get(f"{base}/readyz"))[0::2] == (500, "[-]database failed: closed\nreadyz check failed\n")


async def test_a_busy_port_leaves_the_daemon_running_without_the_server() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        module = MetricsServerModule(f"127.0.0.1:{taken.getsockname()[1]}", new_registry())
        async with serving(module) as task:
            await asyncio.sleep(0.3)
            assert not task.done()  # run_modules would stop the whole daemon if it returned
            assert not module.listening.is_set()


async def test_cloudcore_is_unready_without_the_api_or_the_listeners() -> None:
    configuration = kclient.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    async with kclient.ApiClient(configuration) as api:
        hub = CloudHubModule(CloudHubConfig(), api)
        monitor = cloudcore_monitor(MonitorServer(), api, hub)
        assert monitor is not None and (monitor.host, monitor.port) == ("127.0.0.1", 9091)
        ready, body = await readiness(monitor.checks)
        assert not ready
        assert "[-]kube-api failed: " in body
        assert "[-]cloudhub failed: listeners not up yet" in body
        assert cloudcore_monitor(MonitorServer(enable=False), api, hub) is None


async def test_edgecore_readiness_follows_the_database_not_the_cloud(tmp_path: Path) -> None:
    db = tmp_path / "edgecore.db"
    store, outbox = await MetaStore.open(db), await PersistentOutbox.open(db)
    try:
        hub = EdgeHubModule(EdgeHubConfig(), "n1", outbox)
        monitor = edgecore_monitor(EdgeMonitorServer(), db, store, outbox, hub)
        assert monitor is not None and (monitor.host, monitor.port) == ("127.0.0.1", 10551)
        assert await readiness(monitor.checks) == (True, f"[+]database ok: {db}\n[-]cloud failed: disconnected; "
                                                         "the edge works offline (optional)\nreadyz check passed\n")
        assert edgecore_monitor(EdgeMonitorServer(enable=False), db, store, outbox, hub) is None
    finally:
        await outbox.close()
        await store.close()
    ready, body = await readiness(monitor.checks)  # the database is closed now
    assert not ready
    assert body.startswith("[-]database failed: ")
