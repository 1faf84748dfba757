"""MetaServer serving kinds the node does not sync (deployments, namespaces, a custom resource) through the
cloud's dynamiccontroller, over a real SQLite file, bus and socket; a stand-in cloud answers the
Applications from objects in memory (as tests/integration/test_dynamiccontroller.py shows the real one
does) and streams subscribed kinds as resource messages. The machine's kubectl resolves those kinds
through the cached discovery, reads them cloud-first, then from the cache offline and after a restart;
watch subscriptions are renewed on reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from cloudcore.controlplane.api import discovery
from cloudcore.controlplane.api.resources import Registry, ResourceInfo
from common import application
from common.application import Key
from common.constants import Group, Op
from common.message import Message
from edgecore.metaserver import http as metaserver_http
from tests.integration.test_metaserver import STEP, Edge, eventually, obj, rows, running_edge

# (group, plural) -> (store type, namespaced) of the kinds the stand-in cloud serves
KINDS = {("apps", "deployments"): ("deployment", True), ("", "namespaces"): ("namespace", False),
         ("example.com", "widgets"): ("widget", True), ("example.com", "gadgets"): ("gadget", True)}


def crd(plural: str, kind: str) -> tuple[ResourceInfo, ...]:
    return (ResourceInfo("example.com", "v1", plural, kind, kind.lower(), True, crd_name=f"{plural}.example.com",
                         storage_version="v1"),)


def bundle(*extra: str) -> dict[str, Any]:
    """The control plane's own discovery, plus custom resources, as the dynamiccontroller bundles it."""
    registry = Registry()
    registry.set_crd("widgets.example.com", crd("widgets", "Widget"))
    if "gadgets" in extra:
        registry.set_crd("gadgets.example.com", crd("gadgets", "Gadget"))
    lists = [discovery.api_resource_list(registry, g, v) for g, vs in registry.group_versions().items() for v in vs]
    return {"kind": application.DISCOVERY_BUNDLE, "groups": discovery.api_group_list(registry)["groups"],
            "resources": lists}


def deployment(name: str, rv: int, namespace: str = "dyn") -> dict[str, Any]:
    return obj("apps/v1", "Deployment", name, rv, namespace, spec={"replicas": 1},
               status={"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1})


@dataclass
class Cloud:
    """Answers MetaServer's Applications as CloudCore's dynamiccontroller would."""

    edge: Edge
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)  # (group, plural, ns, name)
    rv: int = 100
    asked: list[tuple[str, str]] = field(default_factory=list)  # (verb, key)
    watches: set[Key] = field(default_factory=set)
    crds: tuple[str, ...] = ()  # custom resources created after the start

    def put(self, group: str, plural: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.objects[(group, plural, meta.get("namespace", ""), meta["name"])] = body
        self.rv = max(self.rv, int(meta["resourceVersion"]))

    async def push(self, operation: str, group: str, plural: str, body: dict[str, Any]) -> None:
        """A change of a subscribed kind, streamed to the node (as subscriptions.py sends it)."""
        store_type, namespaced = KINDS[(group, plural)]
        meta = body["metadata"]
        namespace = meta.get("namespace", "") if namespaced else "null"
        await self.edge.push(Message.new(source="dynamiccontroller", group=Group.RESOURCE, operation=operation,
                                         resource=f"{namespace}/{store_type}/{meta['name']}", content=body,
                                         resource_version=meta["resourceVersion"]))

    async def serve(self) -> None:
        while True:
            request = await self.edge.to_cloud.get()
            app = request.content
            self.asked.append((app["Verb"], app["Key"]))
            answer, pushes = self.answer(app)
            assert self.edge.bus.respond(request.response(answer))
            for body in pushes:
                key = Key.parse(app["Key"])
                await self.push(Op.INSERT, key.group, key.plural, body)

    def answer(self, app: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        verb = app["Verb"]
        if verb == "discover":
            return application.approved(app, bundle(*self.crds)), []
        key = Key.parse(app["Key"])
        if verb == "get":
            found = self.objects.get((key.group, key.plural, key.namespace, key.name))
            if found is None:
                return application.rejected(app, {"status": "Failure", "reason": "NotFound", "code": 404,
                                                  "message": f'{key.plural} "{key.name}" not found'}), []
            return application.approved(app, found), []
        items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")}  # as a List's items come
                 for (g, p, ns, _), o in sorted(self.objects.items())
                 if (g, p) == (key.group, key.plural) and (not key.namespace or ns == key.namespace)]
        if verb == "list":
            return application.approved(app, {"metadata": {"resourceVersion": str(self.rv)}, "items": items}), []
        if verb == "watch":
            self.watches.add(key)
            return application.approved(app, {}), items
        if verb == "create":
            created = application.decode_bytes(app["ReqBody"])
            self.rv += 1
            created["metadata"].update(namespace=key.namespace, resourceVersion=str(self.rv), uid="u")
            self.put(key.group, key.plural, created)
            return application.approved(app, created), []
        raise AssertionError(f"unexpected application {verb} {key}")


@contextlib.asynccontextmanager
async def with_cloud(edge: Edge) -> AsyncIterator[Cloud]:
    cloud = Cloud(edge)
    cloud.put("apps", "deployments", deployment("one", 50))
    cloud.put("apps", "deployments", deployment("two", 51))
    cloud.put("", "namespaces", obj("v1", "Namespace", "dyn", 52, None, status={"phase": "Active"}))
    cloud.put("example.com", "widgets", obj("example.com/v1", "Widget", "w", 53, "dyn", spec={"size": 3}))
    task = asyncio.create_task(cloud.serve())
    try:
        yield cloud
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def connect(edge: Edge, cloud: Cloud) -> None:
    """Connect and wait until the cloud's discovery is served."""
    asked = len(cloud.asked)
    await edge.set_connected(True)
    await eventually(lambda: ("discover", "/") in cloud.asked[asked:], "discovery asked for")
    api = edge.server.api
    assert api is not None
    await eventually(lambda: api.kinds.get("apps", "v1", "deployments") is not None, "deployments served")


def stored(sqlite_path: Path, store_type: str) -> dict[str, str]:
    """key -> name of the `meta` rows of a type, read as another process would."""
    with contextlib.closing(sqlite3.connect(sqlite_path)) as db:
        found = db.execute("SELECT key, value FROM meta WHERE type = ? ORDER BY key", (store_type,)).fetchall()
    return {key: orjson.loads(value)["metadata"]["name"] for key, value in found}


async def test_kinds_the_node_does_not_sync_are_read_from_the_cloud_then_from_the_cache(sqlite_path: Path,
                                                                                         tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge, with_cloud(edge) as cloud:
        await connect(edge, cloud)
        _, out, _ = await edge.kubectl("get", "deployments", "-n", "dyn")
        assert [r[:4] for r in rows(out)] == [["NAME", "READY", "UP-TO-DATE", "AVAILABLE"], ["one", "1/1", "1", "1"],
                                              ["two", "1/1", "1", "1"]]
        assert ("list", "/apps/v1/deployments/dyn") in cloud.asked
        assert stored(sqlite_path, "deployment") == {"dyn/deployment/one": "one", "dyn/deployment/two": "two"}
        _, out, _ = await edge.kubectl("get", "namespaces", "-o", "name")  # cluster-scoped
        assert out.split() == ["namespace/dyn"] and stored(sqlite_path, "namespace") == {"null/namespace/dyn": "dyn"}
        _, out, _ = await edge.kubectl("get", "widgets", "w", "-n", "dyn", "-o", "jsonpath={.spec.size}")
        assert out == "3" and ("get", "/example.com/v1/widgets/dyn/w") in cloud.asked
        # the cloud is the authority while connected: its deletions reach the cache
        del cloud.objects[("apps", "deployments", "dyn", "two")]
        _, out, _ = await edge.kubectl("get", "deployments", "-n", "dyn", "-o", "name")
        assert out.split() == ["deployment.apps/one"] and list(stored(sqlite_path, "deployment")) == [
            "dyn/deployment/one"]
        code, _, err = await edge.kubectl("get", "widget", "gone", "-n", "dyn", ok=False)
        assert code == 1 and 'widgets "gone" not found' in err

        await edge.set_connected(False)
        asked = len(cloud.asked)
        _, out, _ = await edge.kubectl("get", "deployments", "-n", "dyn", "-o", "name")
        assert out.split() == ["deployment.apps/one"]
        _, out, _ = await edge.kubectl("get", "deployment", "one", "-n", "dyn", "-o", "jsonpath={.kind}")
        assert out == "Deployment"
        code, _, err = await edge.kubectl("get", "deployments", "-n", "elsewhere", ok=False)
        assert code == 1 and "NotFound" in err and "offline" in err and "no cached copy" in err
        code, _, err = await edge.kubectl("get", "deployment", "never", "-n", "dyn", ok=False)
        assert code == 1 and 'deployments.apps "never" not found' in err  # a cached collection: plainly absent
        assert len(cloud.asked) == asked  # offline: nothing was sent

    async with running_edge(sqlite_path, tmp_path) as edge:  # a restart, offline: the discovery was kept
        _, out, _ = await edge.kubectl("get", "deployments,widgets", "-n", "dyn", "-o", "name")
        assert out.split() == ["deployment.apps/one", "widget.example.com/w"]
        _, out, _ = await edge.kubectl("api-resources", "--api-group", "apps", "-o", "name")
        assert "deployments.apps" in out.split()


async def test_a_watch_subscribes_the_node_and_is_renewed_on_every_connection(sqlite_path: Path,
                                                                             tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge, with_cloud(edge) as cloud:
        await connect(edge, cloud)
        proc = await asyncio.create_subprocess_exec(
            *edge.kubectl_argv("get", "deployments", "-n", "dyn", "-w", "--output-watch-events"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

        async def line() -> list[str]:
            assert proc.stdout is not None
            return (await asyncio.wait_for(proc.stdout.readline(), STEP)).decode().split()[:2]

        try:
            assert [await line() for _ in range(3)] == [["EVENT", "NAME"], ["ADDED", "one"], ["ADDED", "two"]]
            await eventually(lambda: Key("apps", "v1", "deployments", "dyn") in cloud.watches, "subscribed")
            await cloud.push(Op.INSERT, "apps", "deployments", deployment("three", 60))
            assert await line() == ["ADDED", "three"]
            await cloud.push(Op.DELETE, "apps", "deployments", deployment("one", 61))
            assert await line() == ["DELETED", "one"]
        finally:
            proc.kill()
            await proc.wait()

        # reconnecting renews the subscription, then catches up with a list
        cloud.watches.clear()
        await edge.set_connected(False)
        asked = len(cloud.asked)
        await connect(edge, cloud)
        await eventually(lambda: ("list", "/apps/v1/deployments/dyn") in cloud.asked[asked:], "caught up")
        assert cloud.asked[asked:] == [("discover", "/"), ("watch", "/apps/v1/deployments/dyn"),
                                       ("list", "/apps/v1/deployments/dyn")]
        # ... which drops what the cloud deleted meanwhile ("three" was only streamed, never in its objects)
        await eventually(lambda: sorted(stored(sqlite_path, "deployment")) == ["dyn/deployment/one",
                                                                               "dyn/deployment/two"], "caught up")

    async with running_edge(sqlite_path, tmp_path) as edge, with_cloud(edge) as cloud:
        await connect(edge, cloud)  # the subscription outlived the restart
        await eventually(lambda: Key("apps", "v1", "deployments", "dyn") in cloud.watches, "renewed")


async def test_writes_of_kinds_the_node_does_not_sync_go_to_the_cloud_and_are_cached(sqlite_path: Path,
                                                                                    tmp_path: Path) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge, with_cloud(edge) as cloud:
        await connect(edge, cloud)
        manifest = tmp_path / "deploy.json"
        body = deployment("made-here", 0)
        del body["metadata"]["resourceVersion"], body["status"]
        manifest.write_bytes(orjson.dumps(body))
        _, out, _ = await edge.kubectl("create", "--validate=false", "-f", str(manifest))  # no OpenAPI here
        assert out.strip() == "deployment.apps/made-here created"
        assert ("create", "/apps/v1/deployments/dyn") in cloud.asked
        assert "dyn/deployment/made-here" in stored(sqlite_path, "deployment")
        await edge.set_connected(False)
        _, out, _ = await edge.kubectl("get", "deployment", "made-here", "-n", "dyn", "-o", "name")
        assert out.strip() == "deployment.apps/made-here"


async def test_a_kind_created_in_the_cloud_later_is_discovered_when_asked_for(sqlite_path: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_edge(sqlite_path, tmp_path) as edge, with_cloud(edge) as cloud:
        await connect(edge, cloud)
        cloud.crds = ("gadgets",)
        cloud.put("example.com", "gadgets", obj("example.com/v1", "Gadget", "g", 70, "dyn"))
        # a client naming it: the edge refetches (at most every MISS_INTERVAL s)
        monkeypatch.setattr(metaserver_http, "MISS_INTERVAL", 0.0)
        async with aiohttp.ClientSession(edge.url) as session, session.get(
                "/apis/example.com/v1/namespaces/dyn/gadgets/g", timeout=aiohttp.ClientTimeout(total=STEP)) as got:
            assert got.status == 200 and (await got.json())["metadata"]["name"] == "g"
        # kubectl relists /apis when it misses a kind; that refetches once the copy is MAX_AGE s old
        monkeypatch.setattr(metaserver_http, "MAX_AGE", 0.0)
        asked = len(cloud.asked)
        _, out, _ = await edge.kubectl("get", "gadgets", "-n", "dyn", "-o", "name")
        assert out.split() == ["gadget.example.com/g"] and ("discover", "/") in cloud.asked[asked:]
