"""MetaServer over a real SQLite file, a real module bus and a real socket: MetaManager stores what the
"cloud" sends (messages fed over the bus, as EdgeHub delivers them) and the machine's real kubectl and
the official kubernetes client read it back: list, get, describe, watch, watch resume (also after a
restart and across deletions), Status errors, writes refused offline and forwarded online."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import orjson
import pytest
from kubernetes import watch as kwatch
from kubernetes.client.rest import ApiException

from common.bus import ModuleBus
from common.config.edgecore import MetaManager as MetaManagerConfig
from common.config.edgecore import MetaServer as MetaServerConfig
from common.constants import CLOUD_CONNECTED, CLOUD_DISCONNECTED, RESOURCE_CLOUD_CONNECTION, EdgeModule, Group, Op
from common.message import Message
from common.modules import ModuleContext
from edgecore.metamanager.events import EventHub
from edgecore.metamanager.module import MetaManagerModule
from edgecore.metamanager.store import DEFAULT_EVENT_LOG_LIMIT, MetaStore
from edgecore.metaserver import watch as metaserver_watch
from edgecore.metaserver.server import MetaServerModule
from tests.fixtures.mosquitto import free_port
from tests.fixtures.paths import require_binary

NODE = "edge-1"
STEP = 10.0  # bound of every wait in these tests


def pod(name: str, rv: int, namespace: str = "default", app: str = "web", node: str = NODE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": str(rv),
                         "creationTimestamp": "2025-01-01T00:00:00Z", "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "nginx:1.27"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7",
                       "containerStatuses": [{"name": "main", "ready": True, "restartCount": 0,
                                              "image": "nginx:1.27", "imageID": "", "state": {"running": {}}}]}}


def obj(api_version: str, kind: str, name: str, rv: int, namespace: str | None = "default",
        **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "resourceVersion": str(rv), "creationTimestamp": "2025-01-01T00:00:00Z"}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **extra}


def cloud(operation: str, resource: str, content: Any, rv: int | None = None) -> Message:
    return Message.new(source="edgecontroller", group=Group.RESOURCE, operation=operation, resource=resource,
                       content=content, resource_version="" if rv is None else str(rv))


def put_pod(name: str, rv: int, namespace: str = "default", **kw: Any) -> Message:
    return cloud(Op.UPDATE, f"{namespace}/pod/{name}", pod(name, rv, namespace, **kw), rv)


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll state other tasks own (nothing to wait on) until `check` holds, at most STEP seconds."""
    deadline = asyncio.get_running_loop().time() + STEP
    while True:
        if check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {STEP} s: {what}")
        await asyncio.sleep(0.01)


@dataclass
class Edge:
    bus: ModuleBus
    meta: MetaManagerModule
    server: MetaServerModule
    url: str
    acked: set[str]
    to_cloud: asyncio.Queue[Message]
    workdir: Path

    async def push(self, *messages: Message) -> None:
        """Deliver cloud messages as EdgeHub does and wait until each is stored (ACKed)."""
        for message in messages:
            await self.bus.send_to_group(Group.META, message)
        await eventually(lambda: all(m.msg_id in self.acked for m in messages), "the messages ACKed")

    async def set_connected(self, connected: bool) -> None:
        await self.bus.send_to_group(Group.META, Message.new(
            source="edgehub", group=Group.META, operation=Op.CONNECT, resource=RESOURCE_CLOUD_CONNECTION,
            content=CLOUD_CONNECTED if connected else CLOUD_DISCONNECTED))
        await eventually(lambda: self.meta.cloud_connected == connected, f"cloud_connected {connected}")

    async def watches(self, count: int) -> None:
        """Wait until `count` watches are open on the server."""
        api = self.server.api
        assert api is not None
        await eventually(lambda: api.watch_count == count, f"{count} open watches")

    def kubectl_argv(self, *args: str) -> list[str]:
        kubeconfig = self.workdir / "empty.kubeconfig"
        kubeconfig.touch()
        return [require_binary("kubectl"), "--server", self.url, "--kubeconfig", str(kubeconfig),
                "--cache-dir", str(self.workdir / "kubectl-cache"), *args]

    async def kubectl(self, *args: str, ok: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(*self.kubectl_argv(*args), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        if ok:
            assert proc.returncode == 0, err.decode()
        return proc.returncode, out.decode(), err.decode()

    def api(self) -> kubernetes.client.CoreV1Api:
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))


@contextlib.asynccontextmanager
async def running_edge(sqlite_path: Path, workdir: Path, *, hub: EventHub | None = None,
                       log_limit: int = DEFAULT_EVENT_LOG_LIMIT) -> AsyncIterator[Edge]:
    """MetaManager and MetaServer on one bus; a stand-in EdgeHub mailbox collects ACKs and writes."""
    port = free_port()
    bus = ModuleBus()
    edgehub = bus.register(EdgeModule.EDGEHUB, Group.HUB)
    store = await MetaStore.open(sqlite_path, log_limit)
    meta = MetaManagerModule(MetaManagerConfig(), store, hub)
    server = MetaServerModule(MetaServerConfig(enable=True, server=f"127.0.0.1:{port}"), meta, sqlite_path, NODE,
                              write_timeout=1.0)
    acked: set[str] = set()
    to_cloud: asyncio.Queue[Message] = asyncio.Queue(maxsize=100)

    async def stand_in_edgehub() -> None:
        while True:
            message = await edgehub.get()
            if message.source == "metaserver":
                to_cloud.put_nowait(message)
            elif message.operation == Op.RESPONSE:
                acked.add(message.parent_msg_id)

    tasks = [asyncio.create_task(meta.run(ModuleContext(bus, bus.register(meta.name, meta.group)))),
             asyncio.create_task(server.run(ModuleContext(bus, bus.register(server.name, server.group)))),
             asyncio.create_task(stand_in_edgehub())]
    try:
        async with asyncio.timeout(STEP):
            await server.serving.wait()
        yield Edge(bus, meta, server, f"http://127.0.0.1:{port}", acked, to_cloud, workdir)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


async def seed(edge: Edge) -> None:
    """A node's worth of objects: pods in two namespaces, its Node, and the kinds the cloud broadcasts."""
    await edge.push(
        put_pod("web-1", 11), put_pod("web-2", 12), put_pod("db-1", 13, app="db"),
        put_pod("dns", 14, namespace="kube-system", app="dns"),
        cloud(Op.INSERT, f"null/node/{NODE}", obj("v1", "Node", NODE, 15, None,
                                                   spec={}, status={"conditions": [{"type": "Ready",
                                                                                    "status": "True"}],
                                                                    "nodeInfo": {"kubeletVersion": "v1.30.7"}}), 15),
        cloud(Op.INSERT, "default/configmap/settings", obj("v1", "ConfigMap", "settings", 16, data={"a": "1"}), 16),
        cloud(Op.INSERT, "default/secret/token", obj("v1", "Secret", "token", 17, type="Opaque",
                                                     data={"t": base64.b64encode(b"x").decode()}), 17),
        cloud(Op.INSERT, "default/service/web", obj("v1", "Service", "web", 18, spec={
            "type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}],
            "selector": {"app": "web"}}), 18),
        cloud(Op.INSERT, "default/endpoints/web", obj("v1", "Endpoints", "web", 19, subsets=[
            {"addresses": [{"ip": "10.0.0.7"}], "ports": [{"port": 80}]}]), 19),
        cloud(Op.INSERT, "default/endpointslice/web-abc", obj("discovery.k8s.io/v1", "EndpointSlice", "web-abc", 20,
                                                              addressType="IPv4", endpoints=[
                                                                  {"addresses": ["10.0.0.7"]}], ports=[{"port": 80}])),
        cloud(Op.INSERT, f"kube-node-lease/lease/{NODE}", obj("coordination.k8s.io/v1", "Lease", NODE, 21,
                                                               "kube-node-lease", spec={"holderIdentity": NODE}), 21),
    )


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


# -- kubectl ------------------------------------------------------------------------------------------


async def test_kubectl_get_lists_what_the_node_stores(sqlite_path: Path, tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge:
        await seed(edge)
        _, out, _ = await edge.kubectl("get", "pods", "-A")
        table = rows(out)
        assert table[0] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        assert [r[:4] for r in table[1:]] == [["default", "db-1", "1/1", "Running"], ["default", "web-1", "1/1",
                                                                                       "Running"],
                                              ["default", "web-2", "1/1", "Running"],
                                              ["kube-system", "dns", "1/1", "Running"]]
        _, out, _ = await edge.kubectl("get", "pods", "-l", "app=web", "-o", "name")
        assert out.split() == ["pod/web-1", "pod/web-2"]
        _, out, _ = await edge.kubectl("get", "pods", "-A", "--field-selector", "metadata.namespace=kube-system",
                                       "-o", "name")
        assert out.split() == ["pod/dns"]
        _, out, _ = await edge.kubectl("get", "nodes")
        assert rows(out)[1][:3] == [NODE, "Ready", "<none>"]
        _, out, _ = await edge.kubectl("get", "services,endpoints,configmaps,secrets", "-o", "name")
        assert out.split() == ["service/web", "endpoints/web", "configmap/settings", "secret/token"]
        _, out, _ = await edge.kubectl("get", "svc", "web")
        assert rows(out)[1][:5] == ["web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP"]
        _, out, _ = await edge.kubectl("get", "endpointslices", "-o", "name")
        assert out.split() == ["endpointslice.discovery.k8s.io/web-abc"]
        _, out, _ = await edge.kubectl("get", "leases", "-n", "kube-node-lease")
        assert rows(out) [1][0] == NODE
        _, out, _ = await edge.kubectl("get", "pod", "web-1", "-o", "jsonpath={.spec.nodeName}")
        assert out == NODE


async def test_kubectl_describe_pod(sqlite_path: Path, tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge:
        await seed(edge)
        _, out, _ = await edge.kubectl("describe", "pod", "web-1")
        lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line
                 and not line.startswith(" ")}
        assert lines["Name"] == "web-1" and lines["Namespace"] == "default" and lines["Node"].startswith(NODE)
        assert lines["Labels"] == "app=web" and lines["Status"] == "Running"
        code, _, err = await edge.kubectl("describe", "pod", "nope", ok=False)
        assert code == 1 and 'pods "nope" not found' in err


async def test_kubectl_get_watch_prints_changes_as_they_are_stored(sqlite_path: Path, tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge:
        await seed(edge)
        proc = await asyncio.create_subprocess_exec(*edge.kubectl_argv("get", "pods", "-w", "--output-watch-events"),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None

        async def line() -> list[str]:
            assert proc.stdout is not None
            return (await asyncio.wait_for(proc.stdout.readline(), STEP)).decode().split()

        try:
            assert (await line())[:2] == ["EVENT", "NAME"]
            assert [(await line())[:2] for _ in range(3)] == [["ADDED", "db-1"], ["ADDED", "web-1"],
                                                              ["ADDED", "web-2"]]
            await edge.watches(1)
            await edge.push(put_pod("web-1", 30))
            assert (await line())[:2] == ["MODIFIED", "web-1"]
            await edge.push(cloud(Op.DELETE, "default/pod/db-1", pod("db-1", 31, app="db"), 31),
                            put_pod("web-3", 32), put_pod("elsewhere", 33, namespace="other"))
            assert [(await line())[:2] for _ in range(2)] == [["DELETED", "db-1"], ["ADDED", "web-3"]]
        finally:
            proc.kill()
            await proc.wait()


# -- the official kubernetes client -------------------------------------------------------------------


def collect(api: kubernetes.client.CoreV1Api, rv: str, seconds: int, namespace: str = "default",
            **kwargs: Any) -> list[tuple[str, str | None, str]]:
    """(type, name, resourceVersion) of a watch the server ends after `seconds`."""
    stream = kwatch.Watch().stream(api.list_namespaced_pod, namespace, resource_version=rv, timeout_seconds=seconds,
                                   _request_timeout=seconds + STEP, **kwargs)
    return [(e["type"], *_name_rv(e["object"])) for e in stream]


def _name_rv(obj: Any) -> tuple[str | None, str]:
    if isinstance(obj, dict):  # the client leaves BOOKMARK objects as they came
        return obj["metadata"].get("name"), obj["metadata"]["resourceVersion"]
    return obj.metadata.name, obj.metadata.resource_version


async def test_python_client_lists_and_watches_with_resume(sqlite_path: Path, tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge:
        await seed(edge)
        api = edge.api()
        listed = await asyncio.to_thread(api.list_namespaced_pod, "default")
        assert [p.metadata.name for p in listed.items] == ["db-1", "web-1", "web-2"]
        assert listed.metadata.resource_version == "21"  # the highest RV the store applied (the lease)
        everywhere = await asyncio.to_thread(api.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={NODE}")
        assert len(everywhere.items) == 4
        web = await asyncio.to_thread(api.list_namespaced_pod, "default", label_selector="app in (web),app!=db")
        assert [p.metadata.name for p in web.items] == ["web-1", "web-2"]
        page = await asyncio.to_thread(api.list_namespaced_pod, "default", limit=2)
        assert [p.metadata.name for p in page.items] == ["db-1", "web-1"] and page.metadata._continue
        rest = await asyncio.to_thread(api.list_namespaced_pod, "default", limit=2, _continue=page.metadata._continue)
        assert [p.metadata.name for p in rest.items] == ["web-2"] and not rest.metadata._continue
        assert rest.metadata.resource_version == "21"

        # live: changes stored while the watch is open
        watching = asyncio.create_task(asyncio.to_thread(collect, api, "21", 2))
        await edge.watches(1)
        await edge.push(put_pod("web-1", 40))
        await edge.push(cloud(Op.DELETE, "default/pod/web-2", pod("web-2", 41), 41))
        await edge.push(cloud(Op.INSERT, "default/configmap/other", obj("v1", "ConfigMap", "other", 42), 42))
        await edge.push(put_pod("web-4", 43))
        assert await watching == [("MODIFIED", "web-1", "40"), ("DELETED", "web-2", "41"), ("ADDED", "web-4", "43")]
        # resume from the RV of an event: only what came after it, the delete included
        assert await asyncio.to_thread(collect, api, "40", 1) == [("DELETED", "web-2", "41"), ("ADDED", "web-4", "43")]
        # resume from an RV of another kind's change still finds its place in the log
        assert await asyncio.to_thread(collect, api, "42", 1) == [("ADDED", "web-4", "43")]
        # resourceVersion 0: the current objects as ADDED, then live
        initial = await asyncio.to_thread(collect, api, "0", 1)
        assert [(t, n) for t, n, _ in initial] == [("ADDED", "db-1"), ("ADDED", "web-1"), ("ADDED", "web-4")]
        # a selector: an object leaving it is DELETED for this watch, one entering it ADDED
        await edge.push(put_pod("web-1", 44, app="db"), put_pod("db-1", 45, app="web"))
        assert await asyncio.to_thread(collect, api, "43", 1, label_selector="app=web") == [
            ("DELETED", "web-1", "44"), ("MODIFIED", "db-1", "45")]


async def test_watch_resumes_across_a_restart_and_expires_past_the_log(sqlite_path: Path, tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path, log_limit=4) as edge:
        await edge.push(put_pod("a", 10), put_pod("b", 11))
        rv = (await asyncio.to_thread(edge.api().list_namespaced_pod, "default")).metadata.resource_version
        assert rv == "11"
    async with running_edge(sqlite_path, tmp_path, log_limit=4) as edge:  # a restart: same database
        await edge.push(cloud(Op.DELETE, "default/pod/a", pod("a", 12), 12), put_pod("c", 13))
        api = edge.api()
        assert await asyncio.to_thread(collect, api, rv, 1) == [("DELETED", "a", "12"), ("ADDED", "c", "13")]
        await edge.push(put_pod("c", 14), put_pod("c", 15))  # the log keeps the newest 4: 12..15
        with pytest.raises(ApiException) as expired:
            await asyncio.to_thread(collect, api, rv, 1)
        assert expired.value.status == 410 and "too old resource version" in str(expired.value.reason)
        assert await asyncio.to_thread(collect, api, "13", 1) == [("MODIFIED", "c", "14"), ("MODIFIED", "c", "15")]
        assert await asyncio.to_thread(collect, api, "15", 1) == []


async def test_a_watcher_that_falls_behind_is_dropped_and_catches_up_from_the_log(sqlite_path: Path,
                                                                                  tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path, hub=EventHub(buffer=4)) as edge:
        await edge.push(put_pod("p", 10))
        async with aiohttp.ClientSession(edge.url) as session, session.get(
                "/api/v1/namespaces/default/pods", params={"watch": "1", "resourceVersion": "10"},
                timeout=aiohttp.ClientTimeout(total=STEP)) as response:
            await edge.watches(1)
            await edge.push(*(put_pod("p", rv) for rv in range(11, 21)))  # one batch: more than the buffer
            assert await response.content.read() == b""  # the stream ends without an event
        await edge.watches(0)
        replayed = await asyncio.to_thread(collect, edge.api(), "10", 1)
        assert [rv for _, _, rv in replayed] == [str(rv) for rv in range(11, 21)]


async def test_watch_list_initial_events_end_with_a_bookmark(sqlite_path: Path, tmp_path: Path) -> None:
    """sendInitialEvents (client-go's WatchList): the current objects, then a BOOKMARK marking their end."""
    async with running_edge(sqlite_path, tmp_path) as edge:
        await seed(edge)
        params = {"watch": "1", "sendInitialEvents": "true", "allowWatchBookmarks": "true",
                  "resourceVersionMatch": "NotOlderThan", "timeoutSeconds": "1", "labelSelector": "app=web"}
        async with aiohttp.ClientSession(edge.url) as session, session.get(
                "/api/v1/namespaces/default/pods", params=params, timeout=aiohttp.ClientTimeout(total=STEP)) as got:
            events = [orjson.loads(line) for line in (await got.read()).splitlines()]
        assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
            ("ADDED", "web-1"), ("ADDED", "web-2"), ("BOOKMARK", None)]
        assert events[-1]["object"]["metadata"] == {"resourceVersion": "21",
                                                    "annotations": {"k8s.io/initial-events-end": "true"}}


async def test_an_idle_watch_gets_bookmarks_at_its_position(sqlite_path: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metaserver_watch, "BOOKMARK_INTERVAL", 0.2)
    async with running_edge(sqlite_path, tmp_path) as edge:
        await seed(edge)
        # RV 15 is the Node's change, after every pod's: nothing to replay, so only bookmarks come
        events = await asyncio.to_thread(collect, edge.api(), "15", 1, allow_watch_bookmarks=True)
        assert len(events) >= 2 and set(events) == {("BOOKMARK", None, "15")}
        await edge.push(put_pod("web-1", 30))
        events = await asyncio.to_thread(collect, edge.api(), "15", 1, allow_watch_bookmarks=True)
        assert events[0] == ("MODIFIED", "web-1", "30") and set(events[1:]) == {("BOOKMARK", None, "30")}


# -- errors -------------------------------------------------------------------------------------------


async def status_of(session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, path, timeout=aiohttp.ClientTimeout(total=STEP), **kwargs) as response:
        body = await response.read()
        return response.status, orjson.loads(body) if body.startswith(b"{") else body


async def test_bad_requests_are_kubernetes_status_errors(sqlite_path: Path, tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge, aiohttp.ClientSession(edge.url) as session:
        await seed(edge)
        for path in ("/api/v1/widgets", "/api/v1/namespaces/default/widgets/x", "/apis/apps/v1",
                     "/apis/apps/v1/deployments", "/api/v1/namespaces/default/pods/web-1/log", "/nothing"):
            code, body = await status_of(session, "GET", path)
            assert (code, body["kind"], body["reason"]) == (404, "Status", "NotFound"), path
        code, body = await status_of(session, "GET", "/api/v1/namespaces/default/pods/nope")
        assert (code, body["reason"], body["message"]) == (404, "NotFound", 'pods "nope" not found')
        assert body["details"] == {"kind": "pods", "name": "nope"}
        bad = {"labelSelector": "app in (", "fieldSelector": "spec.nodeName~x", "limit": "many",
               "continue": "garbage", "resourceVersion": "abc"}
        for name, value in bad.items():
            code, body = await status_of(session, "GET", "/api/v1/pods", params={name: value})
            assert (code, body["reason"]) == (400, "BadRequest"), name
        code, body = await status_of(session, "GET", "/api/v1/pods", params={"fieldSelector": "spec.image=x"})
        assert (code, body["message"]) == (400, "field label not supported: spec.image")
        code, body = await status_of(session, "GET", "/api/v1/pods", params={"watch": "1", "resourceVersion": "x1"})
        assert (code, body["reason"]) == (400, "BadRequest")
        for method, path in (("DELETE", "/api/v1/namespaces/default/pods"), ("POST", "/api/v1/pods")):
            code, body = await status_of(session, method, path, data=b"{}")
            assert (code, body["reason"]) == (405, "MethodNotAllowed"), (method, path)
        code, body = await status_of(session, "GET", "/api/v1/pods/web-1")
        assert (code, body["reason"]) == (404, "NotFound")
        code, body = await status_of(session, "PATCH", "/api/v1/namespaces/default/pods/web-1", data=b"{}",
                                     headers={"Content-Type": "text/plain"})
        assert (code, body["reason"]) == (415, "UnsupportedMediaType")
        for path in ("/healthz", "/readyz", "/livez"):
            assert await status_of(session, "GET", path) == (200, b"ok")
        code, body = await status_of(session, "GET", "/version")
        assert code == 200 and body["major"] == "1"


# -- writes -------------------------------------------------------------------------------------------


async def test_writes_are_refused_offline_and_forwarded_to_the_cloud_online(sqlite_path: Path,
                                                                           tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge:
        await seed(edge)
        code, _, err = await edge.kubectl("delete", "pod", "web-1", ok=False)
        assert code == 1 and "ServiceUnavailable" in err and "the cloud is unreachable" in err

        await edge.set_connected(True)
        # on connecting, MetaServer asks for the cloud's discovery; a cloud without it refuses (reads go on)
        discover = await asyncio.wait_for(edge.to_cloud.get(), STEP)
        assert (discover.content["Verb"], discover.content["Key"]) == ("discover", "/")
        assert edge.bus.respond(discover.response({**discover.content, "Status": "Rejected", "Error": {"ErrStatus": {
            "status": "Failure", "reason": "Forbidden", "code": 403, "message": "verb 'discover' unknown"}}}))
        api = edge.api()
        body = obj("v1", "ConfigMap", "new", 0, data={"k": "v"})
        del body["metadata"]["resourceVersion"]
        creating = asyncio.create_task(asyncio.to_thread(api.create_namespaced_config_map, "default", body))
        request = await asyncio.wait_for(edge.to_cloud.get(), STEP)
        assert (request.source, request.group, request.resource, request.operation) == (
            "metaserver", "dynamiccontroller", "null", "null")
        app = request.content
        assert (app["Key"], app["Verb"], app["Nodename"], app["Status"]) == (
            "/core/v1/configmaps/default", "create", NODE, "InApplying")
        assert orjson.loads(base64.b64decode(app["ReqBody"]))["data"] == {"k": "v"}
        created = {**body, "metadata": {**body["metadata"], "resourceVersion": "50", "uid": "u-new"}}
        answer = {**app, "Status": "Approved", "RespBody": base64.b64encode(orjson.dumps(created)).decode()}
        assert edge.bus.respond(request.response(answer))
        result = await creating
        assert (result.metadata.name, result.metadata.resource_version) == ("new", "50")

        deleting = asyncio.create_task(asyncio.to_thread(api.delete_namespaced_pod, "web-1", "default"))
        request = await asyncio.wait_for(edge.to_cloud.get(), STEP)
        assert (request.content["Key"], request.content["Verb"]) == ("/core/v1/pods/default/web-1", "delete")
        refused = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                   "message": 'pods "web-1" is forbidden: not this node\'s to delete'}
        assert edge.bus.respond(request.response({**request.content, "Status": "Rejected",
                                                  "Error": {"ErrStatus": refused}}))
        with pytest.raises(ApiException) as forbidden:
            await deleting
        assert forbidden.value.status == 403 and "not this node" in str(forbidden.value.body)

        # nobody on the cloud side answers (no dynamiccontroller yet): 504 after the wait
        async with aiohttp.ClientSession(edge.url) as session:
            code, status = await status_of(session, "PATCH", f"/api/v1/nodes/{NODE}/status",
                                           data=b'{"status": {}}',
                                           headers={"Content-Type": "application/merge-patch+json"})
        assert (code, status["reason"]) == (504, "Timeout") and "dynamiccontroller" in status["message"]
        request = edge.to_cloud.get_nowait()
        patch = orjson.loads(base64.b64decode(request.content["ReqBody"]))
        assert (request.content["Key"], request.content["Verb"], request.content["Subresource"]) == (
            f"/core/v1/nodes/null/{NODE}", "patch", "status")
        assert (patch["PatchType"], base64.b64decode(patch["Data"])) == ("application/merge-patch+json",
                                                                         b'{"status": {}}')

        await edge.set_connected(False)
        _, out, _ = await edge.kubectl("get", "pod", "web-1", "-o", "name")  # reads never need the cloud
        assert out.strip() == "pod/web-1"


async def test_a_plain_list_sends_the_stored_objects_each_with_its_type(sqlite_path: Path, tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge, aiohttp.ClientSession(edge.url) as session:
        await seed(edge)
        bare = {"metadata": {"name": "bare", "namespace": "default", "resourceVersion": "30"}, "data": {"b": "2"}}
        await edge.push(cloud(Op.INSERT, "default/configmap/bare", bare, 30))  # stored without apiVersion/kind
        status, listed = await status_of(session, "GET", "/api/v1/namespaces/default/configmaps")
        assert status == 200 and (listed["kind"], listed["apiVersion"]) == ("ConfigMapList", "v1")
        assert [(i["kind"], i["apiVersion"], i["metadata"]["name"]) for i in listed["items"]] == [
            ("ConfigMap", "v1", "bare"), ("ConfigMap", "v1", "settings")]
        assert int(listed["metadata"]["resourceVersion"]) >= 30
        _, selected = await status_of(session, "GET", "/api/v1/namespaces/default/configmaps?fieldSelector="
                                                      "metadata.name%3Dbare")
        assert selected["items"] == [listed["items"][0]]  # the general path agrees with the plain one
