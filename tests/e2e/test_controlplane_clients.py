"""The control plane as Kubernetes client libraries see it: watch resume across restarts, 410 and relist,
crash safety of acknowledged writes, and Kubernetes-shaped errors for bad input."""

from __future__ import annotations

import asyncio
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import orjson
import pytest
from kubernetes.client.rest import ApiException
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig
from kubernetes_asyncio import watch as awatch

from tests.fixtures.controlplane import ControlPlaneProcess


def cm(name: str, value: str = "1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}


def sync_api(instance: ControlPlaneProcess) -> kubernetes.client.CoreV1Api:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(str(instance.kubeconfig), client_configuration=configuration)
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))


def collect_sync_watch(api: kubernetes.client.CoreV1Api, namespace: str, rv: str, count: int,
                       out: list[tuple[str, str, str]]) -> None:
    watcher = kubernetes.watch.Watch()
    for event in watcher.stream(api.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=20):
        obj = event["object"]
        out.append((event["type"], obj.metadata.name, obj.metadata.resource_version))
        if len(out) >= count:
            watcher.stop()


async def async_events(kubeconfig: Path, namespace: str, rv: str, count: int) -> list[tuple[str, str, str]]:
    configuration = aclient.Configuration()
    await aconfig.load_kube_config(str(kubeconfig), client_configuration=configuration)
    events: list[tuple[str, str, str]] = []
    async with aclient.ApiClient(configuration) as api_client:
        api = aclient.CoreV1Api(api_client)
        watcher = awatch.Watch()
        async with asyncio.timeout(20):
            async for event in watcher.stream(api.list_namespaced_config_map, namespace, resource_version=rv,
                                              timeout_seconds=20):
                obj = event["object"]
                events.append((event["type"], obj.metadata.name, obj.metadata.resource_version))
                if len(events) >= count:
                    watcher.stop()
    return events


def test_watch_resumes_across_a_restart_without_missing_or_repeating(tmp_path: Path) -> None:
    instance = ControlPlaneProcess(tmp_path / "cp")
    instance.start()
    try:
        api = sync_api(instance)
        api.create_namespace({"metadata": {"name": "resume"}})
        for i in range(3):
            api.create_namespaced_config_map("resume", cm(f"before-{i}"))
        start_rv = api.list_namespaced_config_map("resume").metadata.resource_version
        seen: list[tuple[str, str, str]] = []
        thread = threading.Thread(target=collect_sync_watch, args=(api, "resume", start_rv, 2, seen))
        thread.start()
        time.sleep(0.5)
        api.patch_namespaced_config_map("before-0", "resume", {"data": {"v": "2"}})
        api.create_namespaced_config_map("resume", cm("during"))
        thread.join(20)
        assert [(t, n) for t, n, _ in seen] == [("MODIFIED", "before-0"), ("ADDED", "during")]
        last_rv = seen[-1][2]
        instance.stop()
        instance.start()  # same data dir and port
        api = sync_api(instance)
        api.delete_namespaced_config_map("before-1", "resume")
        api.create_namespaced_config_map("resume", cm("after"))
        resumed = asyncio.run(async_events(instance.kubeconfig, "resume", last_rv, 2))
        assert [(t, n) for t, n, _ in resumed] == [("DELETED", "before-1"), ("ADDED", "after")]
        revisions = [int(rv) for _, _, rv in seen + resumed]
        assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    finally:
        instance.stop()


def test_too_old_resource_version_gives_410_and_a_relist_recovers(tmp_path: Path) -> None:
    instance = ControlPlaneProcess(tmp_path / "cp")
    instance.start("--watch-history", "20", "--compact-interval", "0.2")
    try:
        api = sync_api(instance)
        api.create_namespace({"metadata": {"name": "old"}})
        for i in range(60):
            api.create_namespaced_config_map("old", cm(f"c{i}"))
        time.sleep(1.0)  # let compaction pass
        with pytest.raises(ApiException) as expired:
            list(kubernetes.watch.Watch().stream(api.list_namespaced_config_map, "old", resource_version="1",
                                                 timeout_seconds=5))
        assert expired.value.status == 410
        relisted = api.list_namespaced_config_map("old")
        assert len(relisted.items) == 60
        events = asyncio.run(_write_then_watch(instance, relisted.metadata.resource_version))
        assert events == [("ADDED", "fresh")]
    finally:
        instance.stop()


async def _write_then_watch(instance: ControlPlaneProcess, rv: str) -> list[tuple[str, str]]:
    task = asyncio.create_task(async_events(instance.kubeconfig, "old", rv, 1))
    await asyncio.sleep(0.5)
    await asyncio.to_thread(sync_api(instance).create_namespaced_config_map, "old", cm("fresh"))
    return [(t, n) for t, n, _ in await task]


def admin_ssl(instance: ControlPlaneProcess, with_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(instance.data_dir / "pki/ca.crt"))
    if with_cert:
        context.load_cert_chain(instance.data_dir / "pki/admin.crt", instance.data_dir / "pki/admin.key")
    return context


async def burst(instance: ControlPlaneProcess, acked: list[tuple[str, int]], stop_after: int) -> None:
    context = admin_ssl(instance)
    url = f"{instance.url}/api/v1/namespaces/default/configmaps"
    counter = iter(range(100_000))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=8)) as session:
        async def writer() -> None:
            for i in counter:
                try:
                    async with session.post(url, data=orjson.dumps(cm(f"crash-{i}")),
                                            headers={"Content-Type": "application/json"}) as response:
                        if response.status == 201:
                            acked.append((f"crash-{i}", int((await response.json())["metadata"]["resourceVersion"])))
                except (aiohttp.ClientError, ConnectionError):
                    return
                if len(acked) >= stop_after:
                    return

        await asyncio.gather(*(writer() for _ in range(8)))


def test_kill_9_during_a_write_burst_loses_no_acknowledged_write(tmp_path: Path) -> None:
    instance = ControlPlaneProcess(tmp_path / "cp")
    instance.start()
    acked: list[tuple[str, int]] = []
    try:
        def kill_mid_burst() -> None:  # after enough acknowledged writes, not after a fixed time (load varies)
            deadline = time.monotonic() + 30
            while len(acked) < 200 and time.monotonic() < deadline:
                time.sleep(0.01)
            if instance.proc:
                instance.proc.send_signal(signal.SIGKILL)

        killer = threading.Thread(target=kill_mid_burst, daemon=True)
        killer.start()
        asyncio.run(burst(instance, acked, stop_after=50_000))
        killer.join()
        assert instance.stop() == -signal.SIGKILL
        assert len(acked) > 50, "the burst should have been acknowledged many times before the kill"
        instance.start()
        api = sync_api(instance)
        stored = {item.metadata.name: int(item.metadata.resource_version)
                  for item in api.list_namespaced_config_map("default").items}
        missing = [name for name, _ in acked if name not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        assert all(stored[name] == rv for name, rv in acked)
        fresh = api.create_namespaced_config_map("default", cm("after-crash"))
        assert int(fresh.metadata.resource_version) > max(rv for _, rv in acked)
    finally:
        instance.stop()


async def raw(instance: ControlPlaneProcess, method: str, path: str, body: bytes | None = None,
              content_type: str = "application/json", with_cert: bool = True) -> tuple[int, dict[str, Any]]:
    connector = aiohttp.TCPConnector(ssl=admin_ssl(instance, with_cert))
    async with aiohttp.ClientSession(connector=connector) as session, session.request(
            method, f"{instance.url}{path}", data=body, headers={"Content-Type": content_type}) as response:
        return response.status, orjson.loads(await response.read())


@pytest.mark.parametrize(("method", "path", "body", "code", "reason", "text"), [
    ("POST", "/api/v1/namespaces/default/configmaps", b"{not json", 400, "BadRequest", "could not be decoded"),
    ("POST", "/api/v1/namespaces/default/configmaps", orjson.dumps({**cm("k"), "kind": "Secret"}), 400,
     "BadRequest", "the kind in the data (Secret) does not match the expected kind (ConfigMap)"),
    ("POST", "/api/v1/namespaces/default/configmaps", b'{"metadata":{"name":"x"},"data":{"a":"' + b"x" * (4 << 20)
     + b'"}}', 413, "RequestEntityTooLarge", "larger than the limit"),
    ("GET", "/api/v1/pods?labelSelector=a%20in%20(", None, 400, "BadRequest", "unable to parse requirement"),
    ("GET", "/api/v1/pods?fieldSelector=spec.nothing%3Dx", None, 400, "BadRequest", "field label not supported"),
    ("GET", "/api/v1/widgets", None, 404, "NotFound", "could not find the requested resource"),
    ("GET", "/api/v1/namespaces/default/configmaps/absent", None, 404, "NotFound",
     'configmaps "absent" not found'),
    ("POST", "/api/v1/namespaces/nowhere/configmaps", orjson.dumps(cm("k")), 404, "NotFound",
     'namespaces "nowhere" not found'),
    ("POST", "/api/v1/namespaces/default/pods", orjson.dumps({"apiVersion": "v1", "kind": "Pod",
                                                              "metadata": {"name": "p"}, "spec": {}}),
     422, "Invalid", "spec.containers"),
])
def test_bad_input_gets_a_kubernetes_status_and_the_server_keeps_serving(
        controlplane: ControlPlaneProcess, method: str, path: str, body: bytes | None, code: int, reason: str,
        text: str) -> None:
    status, answer = asyncio.run(raw(controlplane, method, path, body))
    assert (status, answer["kind"], answer["status"], answer["code"], answer["reason"]) == (
        code, "Status", "Failure", code, reason), answer
    assert text in answer["message"], answer["message"]
    assert asyncio.run(raw(controlplane, "GET", "/api/v1/namespaces/default"))[0] == 200


def test_anonymous_requests_are_refused_with_401(controlplane: ControlPlaneProcess) -> None:
    status, answer = asyncio.run(raw(controlplane, "GET", "/api/v1/pods", with_cert=False))
    assert (status, answer["reason"]) == (401, "Unauthorized")
