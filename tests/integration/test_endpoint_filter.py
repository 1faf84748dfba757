"""The node-group endpoint filter against a real control plane, on both paths to the edge: the edgecontroller's
pushes and the dynamiccontroller's list/watch answers. A fake `cloudhub` mailbox captures what goes down; each
node's edge view is rebuilt from it with the rule CloudHub's queue and the edge's store both apply (a copy is
taken only when its resourceVersion is newer than the one held), so a re-filtered view that an edge would
drop fails the test. Every wait is bounded."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from cloudcore.dynamiccontroller.application import decode_bytes
from cloudcore.dynamiccontroller.module import DynamicControllerModule
from cloudcore.edgecontroller import EdgeControllerModule
from cloudcore.edgecontroller.kinds import NODE, Object
from cloudcore.edgecontroller.kubeapi import KubeJSON
from cloudcore.edgecontroller.topology import ANNOTATION_SERVICE_TOPOLOGY, LABEL_BELONGING_TO, LABEL_SERVICE_NAME
from common.bus import ModuleBus
from common.config.cloudcore import EdgeController as EdgeControllerConfig
from common.constants import CloudModule
from common.message import Message
from common.modules import ModuleContext
from common.resource import node_of, parse_resource
from tests.fixtures.controlplane import ControlPlaneProcess

WAIT = 30.0
MOVE_DEADLINE = 10.0  # a relabel must reach both nodes' views within this


@dataclass
class Capture:
    bus: ModuleBus
    kube: KubeJSON
    received: list[Message] = field(default_factory=list)

    def edge_view(self, node: str) -> dict[str, Object]:
        """{`<ns>/<type>/<name>`: content} as the node's store would hold it after the pushes so far."""
        held: dict[str, tuple[int, Object]] = {}
        for message in self.received:
            if message.parent_msg_id or message.operation == "response" or node_of(message.resource) != node:
                continue
            parsed = parse_resource(message.resource)
            key = f"{parsed.namespace}/{parsed.type}/{parsed.name}"
            if message.operation == "delete":
                held.pop(key, None)
                continue
            rv = int(message.header.resource_version or 0)
            if key not in held or rv > held[key][0]:
                held[key] = (rv, message.content)
        return {key: content for key, (_, content) in held.items()}

    def slice_ips(self, node: str, namespace: str, name: str) -> list[str] | None:
        found = self.edge_view(node).get(f"{namespace}/endpointslice/{name}")
        return None if found is None else sorted(e["addresses"][0] for e in found.get("endpoints") or [])

    def endpoints_ips(self, node: str, namespace: str, name: str) -> list[str] | None:
        found = self.edge_view(node).get(f"{namespace}/endpoints/{name}")
        if found is None:
            return None
        return sorted(a["ip"] for s in found.get("subsets") or [] for f in ("addresses", "notReadyAddresses")
                      for a in s.get(f) or [])

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():  # noqa: ASYNC110 - the modules fill `received` from their own tasks
                    await asyncio.sleep(0.05)
        except TimeoutError:
            summary = "\n".join(f"{m.operation} {m.resource} rv={m.header.resource_version}" for m in self.received
                                if "endpoint" in m.resource)
            raise AssertionError(f"timed out waiting for {what}; endpoint messages:\n{summary}") from None


@contextlib.asynccontextmanager
async def running(plane: ControlPlaneProcess, *modules: str) -> AsyncIterator[Capture]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        bus = ModuleBus()
        hub = bus.register(CloudModule.CLOUDHUB, CloudModule.CLOUDHUB)
        capture = Capture(bus, KubeJSON(api))

        async def collect() -> None:
            while True:
                capture.received.append(await hub.get())

        tasks = [asyncio.create_task(collect())]
        for name in modules:
            module: EdgeControllerModule | DynamicControllerModule = (
                EdgeControllerModule(EdgeControllerConfig(), api) if name == CloudModule.EDGECONTROLLER
                else DynamicControllerModule(api))
            tasks.append(asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group)))))
        try:
            yield capture
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            bus.close()


# -- cluster setup ---------------------------------------------------------------------------------
async def setup(kube: KubeJSON, ns: str, nodes: dict[str, str | None]) -> None:
    await kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for node, group in nodes.items():
        labels = {"node-role.kubernetes.io/edge": ""} | ({LABEL_BELONGING_TO: group} if group else {})
        await kube.create(NODE.collection_path(), {"apiVersion": "v1", "kind": "Node",
                                                   "metadata": {"name": node, "labels": labels}})


async def service(kube: KubeJSON, ns: str, name: str, annotated: bool) -> Object:
    annotations = {ANNOTATION_SERVICE_TOPOLOGY: "range-nodegroup"} if annotated else {}
    return await kube.create(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "annotations": annotations},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})


async def endpoint_slice(kube: KubeJSON, ns: str, service_name: str, hosts: dict[str, str | None]) -> Object:
    endpoints = [{"addresses": [ip], **({"nodeName": node} if node else {})} for ip, node in hosts.items()]
    return await kube.create(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": f"{service_name}-1", "labels": {LABEL_SERVICE_NAME: service_name}},
        "endpoints": endpoints, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})


async def endpoints(kube: KubeJSON, ns: str, name: str, ready: dict[str, str], not_ready: dict[str, str]) -> Object:
    def addresses(hosts: dict[str, str]) -> list[dict[str, str]]:
        return [{"ip": ip, "nodeName": node} for ip, node in hosts.items()]

    return await kube.create(f"/api/v1/namespaces/{ns}/endpoints", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
        "subsets": [{"addresses": addresses(ready), "notReadyAddresses": addresses(not_ready),
                     "ports": [{"port": 80, "protocol": "TCP"}]}]})


async def relabel(kube: KubeJSON, node: str, group: str | None) -> None:
    await kube.patch(NODE.object_path("", node), {"metadata": {"labels": {LABEL_BELONGING_TO: group}}})


# -- the edgecontroller's pushes ---------------------------------------------------------------------
async def test_each_edge_node_receives_only_its_groups_endpoints_and_a_move_updates_both_views(
        controlplane: ControlPlaneProcess) -> None:
    ns, a, b = "epf", "epf-a", "epf-b"
    async with running(controlplane, CloudModule.EDGECONTROLLER) as h:
        await setup(h.kube, ns, {a: "hangzhou", b: "beijing"})
        await service(h.kube, ns, "web", annotated=True)
        await service(h.kube, ns, "plain", annotated=False)
        await endpoint_slice(h.kube, ns, "web", {"10.0.0.1": a, "10.0.0.2": b, "10.0.0.3": None})
        await endpoint_slice(h.kube, ns, "plain", {"10.0.1.1": a, "10.0.1.2": b})
        await endpoints(h.kube, ns, "web", {"10.0.0.1": a, "10.0.0.2": b}, {"10.0.0.9": b})

        def views_are(expected: dict[str, list[str]]) -> Callable[[], bool]:
            return lambda: all(h.slice_ips(node, ns, "web-1") == ips for node, ips in expected.items())

        await h.wait_for(views_are({a: ["10.0.0.1"], b: ["10.0.0.2"]}), "each node's own group's endpoints")
        await h.wait_for(lambda: h.endpoints_ips(a, ns, "web") == ["10.0.0.1"]
                         and h.endpoints_ips(b, ns, "web") == ["10.0.0.2", "10.0.0.9"], "the Endpoints views")
        await h.wait_for(lambda: h.slice_ips(a, ns, "plain-1") == h.slice_ips(b, ns, "plain-1")
                         == ["10.0.1.1", "10.0.1.2"], "the unannotated Service's slice, unchanged")

        started = time.monotonic()
        await relabel(h.kube, a, "beijing")
        await h.wait_for(views_are({a: ["10.0.0.1", "10.0.0.2"], b: ["10.0.0.1", "10.0.0.2"]}),
                         "both views after the move", timeout=MOVE_DEADLINE)
        await h.wait_for(lambda: h.endpoints_ips(b, ns, "web") == ["10.0.0.1", "10.0.0.2", "10.0.0.9"],
                         "the Endpoints view after the move", timeout=MOVE_DEADLINE)
        assert time.monotonic() - started < MOVE_DEADLINE

        await relabel(h.kube, a, None)  # no group any more: the endpoints on nodes without a group
        await h.wait_for(views_are({a: ["10.0.0.1"], b: ["10.0.0.2"]}), "the views after the label is removed",
                         timeout=MOVE_DEADLINE)

        await h.kube.patch(f"/api/v1/namespaces/{ns}/services/web",
                           {"metadata": {"annotations": {ANNOTATION_SERVICE_TOPOLOGY: None}}})
        await h.wait_for(views_are({a: ["10.0.0.1", "10.0.0.2", "10.0.0.3"], b: ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}),
                         "every endpoint once the annotation is gone", timeout=MOVE_DEADLINE)


async def test_a_restarted_edgecontroller_sends_views_of_the_current_groups(controlplane: ControlPlaneProcess) -> None:
    ns, a, b = "epf-restart", "epf-r-a", "epf-r-b"
    async with running(controlplane, CloudModule.EDGECONTROLLER) as h:
        await setup(h.kube, ns, {a: "g1", b: "g2"})
        await service(h.kube, ns, "web", annotated=True)
        await endpoint_slice(h.kube, ns, "web", {"10.0.0.1": a, "10.0.0.2": b})
        await h.wait_for(lambda: h.slice_ips(a, ns, "web-1") == ["10.0.0.1"], "the first view")
        first = list(h.received)
    controlplane.kubectl("label", "node", a, f"{LABEL_BELONGING_TO}=g2", "--overwrite")  # while no cloudcore runs
    async with running(controlplane, CloudModule.EDGECONTROLLER) as h2:
        h2.received[:0] = first  # what the edge holds from before
        await h2.wait_for(lambda: h2.slice_ips(a, ns, "web-1") == ["10.0.0.1", "10.0.0.2"],
                          "the view of the group it moved to while cloudcore was down")


# -- the dynamiccontroller's answers and watch events ---------------------------------------------------
def application(verb: str, key: str, node: str) -> dict[str, Any]:
    return {"ID": "x", "Key": key, "Verb": verb, "Nodename": node, "Subresource": "",
            "Option": base64.b64encode(b"{}").decode(), "ReqBody": None}


async def ask(h: Capture, node: str, verb: str, key: str) -> dict[str, Any]:
    request = Message.new(source="metaserver", group="dynamiccontroller", operation="null",
                          resource=f"node/{node}/null", content=application(verb, key, node))
    await h.bus.send("dynamiccontroller", request)
    answers: list[Message] = []

    def answered() -> bool:
        answers[:] = [m for m in h.received if m.parent_msg_id == request.msg_id]
        return bool(answers)

    await h.wait_for(answered, f"the answer to {verb} {key}")
    app = answers[0].content
    assert app["Status"] == "Approved", app
    found = decode_bytes(app["RespBody"])
    assert isinstance(found, dict)
    return found


async def test_metaserver_lists_gets_and_watches_are_filtered_and_follow_a_move(
        controlplane: ControlPlaneProcess) -> None:
    ns, a, b = "epf-dyn", "epf-d-a", "epf-d-b"
    async with running(controlplane, CloudModule.DYNAMICCONTROLLER) as h:
        await setup(h.kube, ns, {a: "north", b: "south"})
        await service(h.kube, ns, "web", annotated=True)
        await endpoint_slice(h.kube, ns, "web", {"10.0.0.1": a, "10.0.0.2": b, "10.0.0.3": None})
        await endpoints(h.kube, ns, "web", {"10.0.0.1": a, "10.0.0.2": b}, {})

        listed = await ask(h, a, "list", f"/discovery.k8s.io/v1/endpointslices/{ns}")
        assert [[e["addresses"][0] for e in s["endpoints"]] for s in listed["items"]] == [["10.0.0.1"]]
        got = await ask(h, b, "get", f"/core/v1/endpoints/{ns}/web")
        assert [x["ip"] for x in got["subsets"][0]["addresses"]] == ["10.0.0.2"]

        for node in (a, b):
            await ask(h, node, "watch", f"/discovery.k8s.io/v1/endpointslices/{ns}")
        await h.wait_for(lambda: h.slice_ips(a, ns, "web-1") == ["10.0.0.1"]
                         and h.slice_ips(b, ns, "web-1") == ["10.0.0.2"], "each node's watch view")

        await relabel(h.kube, b, "north")
        await h.wait_for(lambda: h.slice_ips(a, ns, "web-1") == h.slice_ips(b, ns, "web-1") == ["10.0.0.1", "10.0.0.2"],
                         "both watch views after the move", timeout=MOVE_DEADLINE)
        listed = await ask(h, b, "list", f"/discovery.k8s.io/v1/endpointslices/{ns}")
        assert sorted(e["addresses"][0] for e in listed["items"][0]["endpoints"]) == ["10.0.0.1", "10.0.0.2"]


async def test_metaserver_reads_of_the_master_slice_point_at_the_metaserver(controlplane: ControlPlaneProcess) -> None:
    async with running(controlplane, CloudModule.DYNAMICCONTROLLER) as h:
        found = await ask(h, "epf-m", "get", "/discovery.k8s.io/v1/endpointslices/default/kubernetes")
        assert found["endpoints"][0]["addresses"] == ["127.0.0.1"]
        assert {p["port"] for p in found["ports"] if p.get("name") == "https"} == {10550}
        orjson.dumps(found)


async def test_a_late_slice_update_reaches_the_edges_at_a_fresh_revision(controlplane: ControlPlaneProcess) -> None:
    ns, a, b = "epf-late", "epf-l-a", "epf-l-b"
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(controlplane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        bus = ModuleBus()
        hub = bus.register(CloudModule.CLOUDHUB, CloudModule.CLOUDHUB)
        h = Capture(bus, KubeJSON(api))
        module = EdgeControllerModule(EdgeControllerConfig(), api)

        async def collect() -> None:
            while True:
                h.received.append(await hub.get())

        tasks = [asyncio.create_task(collect()),
                 asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))]
        try:
            await setup(h.kube, ns, {a: "g1", b: "g2"})
            await service(h.kube, ns, "web", annotated=True)
            first = await endpoint_slice(h.kube, ns, "web", {"10.0.0.1": a, "10.0.0.2": b})
            await h.wait_for(lambda: h.slice_ips(a, ns, "web-1") == ["10.0.0.1"], "the first view")
            await relabel(h.kube, a, "g2")
            await h.wait_for(lambda: h.slice_ips(a, ns, "web-1") == ["10.0.0.1", "10.0.0.2"], "the moved view")
            # A change committed before the relabel whose event comes after it: older than the floor.
            assert module.downstream is not None
            informer = module.downstream.broadcast["endpointslice"]
            late_rv = int(first["metadata"]["resourceVersion"]) + 1
            late = {**informer.cache[f"{ns}/web-1"], "endpoints": [{"addresses": ["10.0.0.2"], "nodeName": b}]}
            late["metadata"] = {**late["metadata"], "resourceVersion": str(late_rv)}
            await h.kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": f"{ns}-later"}})  # the cluster moves on
            await informer.offer(late)
            await h.wait_for(lambda: h.slice_ips(a, ns, "web-1") == h.slice_ips(b, ns, "web-1") == ["10.0.0.2"],
                             "the late update on both edges", timeout=MOVE_DEADLINE)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            bus.close()


async def test_a_late_slice_update_reaches_metaserver_watchers_at_a_fresh_revision(
        controlplane: ControlPlaneProcess) -> None:
    ns, a, b = "epf-dlate", "epf-dl-a", "epf-dl-b"
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(controlplane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        bus = ModuleBus()
        hub = bus.register(CloudModule.CLOUDHUB, CloudModule.CLOUDHUB)
        h = Capture(bus, KubeJSON(api))
        module = DynamicControllerModule(api)

        async def collect() -> None:
            while True:
                h.received.append(await hub.get())

        tasks = [asyncio.create_task(collect()),
                 asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))]
        try:
            await setup(h.kube, ns, {a: "g1", b: "g2"})
            await service(h.kube, ns, "web", annotated=True)
            first = await endpoint_slice(h.kube, ns, "web", {"10.0.0.1": a, "10.0.0.2": b})
            for node in (a, b):
                await ask(h, node, "watch", f"/discovery.k8s.io/v1/endpointslices/{ns}")
            await h.wait_for(lambda: h.slice_ips(a, ns, "web-1") == ["10.0.0.1"], "the first view")
            await relabel(h.kube, a, "g2")
            await h.wait_for(lambda: h.slice_ips(a, ns, "web-1") == ["10.0.0.1", "10.0.0.2"], "the moved view")
            assert module._subscriptions is not None
            feed = next(f for r, f in module._subscriptions._feeds.items() if r.plural == "endpointslices")
            late = {**feed.informer.cache[f"{ns}/web-1"], "endpoints": [{"addresses": ["10.0.0.2"], "nodeName": b}]}
            late_rv = int(first["metadata"]["resourceVersion"]) + 1
            late["metadata"] = {**late["metadata"], "resourceVersion": str(late_rv)}
            await h.kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": f"{ns}-later"}})  # the cluster moves on
            await feed.informer.offer(late)
            await h.wait_for(lambda: h.slice_ips(a, ns, "web-1") == h.slice_ips(b, ns, "web-1") == ["10.0.0.2"],
                             "the late update on both watchers", timeout=MOVE_DEADLINE)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            bus.close()
