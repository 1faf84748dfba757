"""EdgeController against a real control plane process and the real module bus.

A fake `cloudhub` mailbox on the bus captures what the edgecontroller sends down (pushes and replies);
edge requests are sent into the edgecontroller's group as CloudHub would route them (`node/<node>/...`).
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from cloudcore.edgecontroller import EdgeControllerModule
from cloudcore.edgecontroller.informer import Event, Informer
from cloudcore.edgecontroller.kinds import CONFIGMAP, LEASE, NODE, POD, SECRET, SERVICE, Kind, Object
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from common.bus import ModuleBus
from common.config.cloudcore import EdgeController as EdgeControllerConfig
from common.constants import CloudModule
from common.message import Message
from common.modules import ModuleContext
from common.resource import node_of, parse_resource
from common.version import KUBELET_VERSION
from tests.fixtures.controlplane import ControlPlaneProcess

WAIT = 30.0
EDGE_LABELS = {"node-role.kubernetes.io/edge": ""}
NODE_INFO = {
    "machineID": "m",
    "systemUUID": "s",
    "bootID": "b",
    "kernelVersion": "6.1.0",
    "osImage": "test",
    "containerRuntimeVersion": "containerd://1.7.0",
    "kubeProxyVersion": "",
    "operatingSystem": "linux",
    "architecture": "amd64",
}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    instance = ControlPlaneProcess(tmp_path_factory.mktemp("edgecontroller-cp"))
    instance.start()
    yield instance
    instance.stop()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Harness:
    bus: ModuleBus
    module: EdgeControllerModule
    kube: KubeJSON
    received: list[Message] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    # -- what went down ----------------------------------------------------------------------------
    def pushes(self, node: str, *types: str) -> list[tuple[str, str, str]]:
        """(operation, resource, rv) of the pushes to `node` (of these types), in order."""
        found = []
        for message in self.received:
            if message.parent_msg_id or node_of(message.resource) != node:
                continue
            if not types or parse_resource(message.resource).type in types:
                found.append((message.operation, message.resource, message.header.resource_version))
        return found

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():  # noqa: ASYNC110 - the module fills `received` from its own tasks
                    await asyncio.sleep(0.05)
        except TimeoutError:
            summary = "\n".join(f"{m.operation} {m.resource} rv={m.header.resource_version}" for m in self.received)
            raise AssertionError(f"timed out waiting for {what}; received:\n{summary}") from None

    async def wait_push(self, node: str, operation: str, resource: str, rv: str = "") -> None:
        def arrived() -> bool:
            return any(
                op == operation and res == resource and (not rv or got == rv) for op, res, got in self.pushes(node)
            )

        await self.wait_for(arrived, f"{operation} {resource} rv={rv or 'any'}")

    # -- edge requests -----------------------------------------------------------------------------
    async def send(self, node: str, operation: str, resource: str, content: Any = None) -> Message:
        message = Message.new(
            source="edged", group="meta", operation=operation, resource=f"node/{node}/{resource}", content=content
        )
        await self.bus.send_to_group(CloudModule.EDGECONTROLLER, message)
        return message

    async def request(self, node: str, operation: str, resource: str, content: Any = None) -> Message:
        message = await self.send(node, operation, resource, content)
        answers: list[Message] = []

        def answered() -> bool:
            answers[:] = [m for m in self.received if m.parent_msg_id == message.msg_id]
            return bool(answers)

        await self.wait_for(answered, f"the answer to {operation} {resource}")
        return answers[0]

    # -- cluster setup -----------------------------------------------------------------------------
    async def namespace(self, name: str) -> str:
        await self.kube.create(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        return name

    async def node(self, name: str, edge: bool = True) -> Object:
        labels = EDGE_LABELS if edge else {}
        return await self.kube.create(
            NODE.collection_path(), {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        )

    async def create(self, kind: Kind, namespace: str, body: Object) -> Object:
        return await self.kube.create(
            kind.collection_path(namespace), {"apiVersion": kind.api_version, "kind": kind.kind, **body}
        )


@contextlib.asynccontextmanager
async def controller(plane: ControlPlaneProcess) -> AsyncIterator[Harness]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        bus = ModuleBus()
        hub = bus.register(CloudModule.CLOUDHUB, CloudModule.CLOUDHUB)
        module = EdgeControllerModule(EdgeControllerConfig(), api)
        harness = Harness(bus, module, KubeJSON(api))

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


def pod_body(name: str, node: str, configmaps: tuple[str, ...] = (), secrets: tuple[str, ...] = ()) -> Object:
    env = [{"name": f"S{i}", "valueFrom": {"secretKeyRef": {"name": s, "key": "k"}}} for i, s in enumerate(secrets)]
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "volumes": [{"name": f"v{i}", "configMap": {"name": c}} for i, c in enumerate(configmaps)],
            "containers": [{"name": "c", "image": "busybox", "env": env}],
        },
    }


def cm_body(name: str, value: str = "v1") -> Object:
    return {"metadata": {"name": name}, "data": {"k": value}}


def secret_body(name: str) -> Object:
    return {"metadata": {"name": name}, "type": "Opaque", "data": {"k": base64.b64encode(b"secret-value").decode()}}


def rv(obj: Object) -> str:
    return str(obj["metadata"]["resourceVersion"])


# -- cloud to edge ---------------------------------------------------------------------------------
async def test_a_pod_brings_its_configmap_and_secret_to_its_node_only(plane: ControlPlaneProcess) -> None:
    async with controller(plane) as h:
        ns = await h.namespace("ec-pods")
        for name in ("ec-pods-e1", "ec-pods-e2"):
            await h.node(name)
        await h.node("ec-pods-cloud", edge=False)
        used = await h.create(CONFIGMAP, ns, cm_body("used"))
        await h.create(CONFIGMAP, ns, cm_body("unused"))
        await h.create(CONFIGMAP, ns, cm_body("cloud-only"))
        creds = await h.create(SECRET, ns, secret_body("creds"))
        web = await h.create(POD, ns, pod_body("web", "ec-pods-e1", configmaps=("used",), secrets=("creds",)))
        await h.create(POD, ns, pod_body("cloud-pod", "ec-pods-cloud", configmaps=("cloud-only",)))

        await h.wait_push("ec-pods-e1", "insert", f"node/ec-pods-e1/{ns}/pod/web", rv(web))
        e1 = h.pushes("ec-pods-e1", "pod", "configmap", "secret")
        assert ("insert", f"node/ec-pods-e1/{ns}/configmap/used", rv(used)) in e1
        assert ("insert", f"node/ec-pods-e1/{ns}/secret/creds", rv(creds)) in e1
        order = [resource for _, resource, _ in e1]
        assert order.index(f"node/ec-pods-e1/{ns}/configmap/used") < order.index(f"node/ec-pods-e1/{ns}/pod/web")
        message = next(m for m in h.received if m.resource == f"node/ec-pods-e1/{ns}/secret/creds")
        assert message.content["kind"] == "Secret" and message.content["data"]["k"]
        assert message.source == "edgecontroller" and message.group == "resource"

        # the configmap changes: its user hears of it, nobody else
        changed = await h.kube.patch(CONFIGMAP.object_path(ns, "used"), {"data": {"k": "v2"}})
        await h.wait_push("ec-pods-e1", "update", f"node/ec-pods-e1/{ns}/configmap/used", rv(changed))
        await asyncio.sleep(0.5)
        assert h.pushes("ec-pods-e2", "pod", "configmap", "secret") == []
        assert h.pushes("ec-pods-cloud") == []
        assert not [m for m in h.received if m.resource.endswith(("/configmap/unused", "/configmap/cloud-only"))]

        # the informer cache answers for the node's own objects only
        cached = h.module.lookup(f"node/ec-pods-e1/{ns}/configmap/used")
        assert cached is not None and cached.content["data"] == {"k": "v2"}
        assert cached.header.resource_version == rv(changed)
        assert h.module.lookup(f"node/ec-pods-e2/{ns}/configmap/used") is None
        assert h.module.lookup(f"node/ec-pods-e1/{ns}/configmap/unused") is None

        # a second pod on another edge node starts using the configmap: it goes there too
        await h.create(POD, ns, pod_body("web2", "ec-pods-e2", configmaps=("used",)))
        await h.wait_push("ec-pods-e2", "insert", f"node/ec-pods-e2/{ns}/configmap/used", rv(changed))

        # the pod goes away: its node gets the delete, the configmap stays (no delete), as upstream
        await h.kube.delete(POD.object_path(ns, "web"), {"gracePeriodSeconds": 0})
        await h.wait_push("ec-pods-e1", "delete", f"node/ec-pods-e1/{ns}/pod/web")
        await asyncio.sleep(0.5)
        assert not [p for p in h.pushes("ec-pods-e1", "configmap") if p[0] == "delete"]


async def test_services_and_endpoints_go_to_every_edge_node(plane: ControlPlaneProcess) -> None:
    async with controller(plane) as h:
        ns = await h.namespace("ec-svc")
        for name in ("ec-svc-e1", "ec-svc-e2"):
            await h.node(name)
        await h.node("ec-svc-cloud", edge=False)
        service = await h.create(
            SERVICE, ns, {"metadata": {"name": "api"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}
        )
        endpoints = await h.kube.create(
            f"/api/v1/namespaces/{ns}/endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "api"},
                "subsets": [{"addresses": [{"ip": "10.0.0.7"}], "ports": [{"port": 80, "protocol": "TCP"}]}],
            },
        )
        for node in ("ec-svc-e1", "ec-svc-e2"):
            await h.wait_push(node, "insert", f"node/{node}/{ns}/service/api", rv(service))
            await h.wait_push(node, "insert", f"node/{node}/{ns}/endpoints/api", rv(endpoints))
        assert h.pushes("ec-svc-cloud") == []

        # a node that becomes an edge node later gets them as well, with its own Node
        await h.kube.patch(NODE.object_path("", "ec-svc-cloud"), {"metadata": {"labels": EDGE_LABELS}})
        await h.wait_push("ec-svc-cloud", "insert", "node/ec-svc-cloud/null/node/ec-svc-cloud")
        await h.wait_push("ec-svc-cloud", "insert", f"node/ec-svc-cloud/{ns}/service/api", rv(service))


# -- edge to cloud ---------------------------------------------------------------------------------
async def test_registration_creates_the_node_and_its_status_makes_it_ready(plane: ControlPlaneProcess) -> None:
    node = "ec-reg-1"
    async with controller(plane) as h:
        registration = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "zone": "a"}},
            "status": {"nodeInfo": NODE_INFO},
        }
        answer = await h.request(node, "insert", f"default/node/{node}", registration)
        assert (answer.operation, answer.content) == ("response", "OK")
        assert answer.resource == f"node/{node}/default/node/{node}"
        created = await h.kube.get(NODE.object_path("", node))
        assert created["metadata"]["labels"] == {
            **EDGE_LABELS,
            "node-role.kubernetes.io/agent": "",
            "kubernetes.io/hostname": node,
            "zone": "a",
        }
        assert created["status"]["nodeInfo"]["kubeletVersion"] == KUBELET_VERSION
        await h.wait_push(node, "insert", f"node/{node}/null/node/{node}")  # now an edge node: its own Node

        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "EdgeReady",
            "message": "edge is posting ready status",
            "lastHeartbeatTime": now(),
            "lastTransitionTime": now(),
        }
        status = {
            "UID": created["metadata"]["uid"],
            "Status": {
                "conditions": [ready],
                "nodeInfo": created["status"]["nodeInfo"],
                "capacity": {"cpu": "2", "memory": "2Gi", "pods": "110"},
                "allocatable": {"cpu": "2", "memory": "2Gi", "pods": "110"},
            },
        }
        answer = await h.request(node, "update", f"default/nodestatus/{node}", status)
        assert answer.content == "OK" and answer.header.resource_version
        columns = (await asyncio.to_thread(plane.kubectl, "get", "node", node, "--no-headers")).stdout.split()
        assert columns[1] == "Ready" and columns[2] == "agent,edge" and columns[-1] == KUBELET_VERSION

        # the v1.20 path: a strategic-merge patch of the status
        patch = '{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady"}]}}'
        answer = await h.request(node, "patch", f"default/nodepatch/{node}", patch)
        assert answer.content["Err"] is None
        conditions = answer.content["Object"]["status"]["conditions"]
        assert [c["status"] for c in conditions if c["type"] == "Ready"] == ["False"]

        # registering again adopts the node as it is
        answer = await h.request(node, "insert", f"default/node/{node}", registration)
        assert answer.content == "OK"

        # the lease: created, then renewed
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": "2025-01-01T00:00:00.000000Z"},
        }
        first = await h.request(node, "insert", f"kube-node-lease/lease/{node}", lease)
        assert first.content["Err"] is None and first.content["Object"]["spec"]["holderIdentity"] == node
        lease["spec"]["renewTime"] = "2025-01-01T00:00:10.000000Z"
        renewed = await h.request(node, "update", f"kube-node-lease/lease/{node}", lease)
        stored = await h.kube.get(LEASE.object_path("kube-node-lease", node))
        assert stored["spec"]["renewTime"] == "2025-01-01T00:00:10.000000Z"
        assert int(rv(renewed.content["Object"])) > int(rv(first.content["Object"]))
        queried = await h.request(node, "query", f"kube-node-lease/lease/{node}")
        assert queried.content["Object"]["metadata"]["name"] == node


async def test_pod_status_and_the_deletion_handshake(plane: ControlPlaneProcess) -> None:
    async with controller(plane) as h:
        ns = await h.namespace("ec-status")
        await h.node("ec-status-e1")
        await h.node("ec-status-e2")
        job = await h.create(POD, ns, pod_body("job", "ec-status-e1"))
        uid = job["metadata"]["uid"]
        await h.wait_push("ec-status-e1", "insert", f"node/ec-status-e1/{ns}/pod/job")

        running = {
            "phase": "Running",
            "podIP": "10.1.0.4",
            "startTime": now(),
            "containerStatuses": [
                {
                    "name": "c",
                    "ready": True,
                    "restartCount": 0,
                    "image": "busybox",
                    "imageID": "",
                    "state": {"running": {"startedAt": now()}},
                }
            ],
        }
        # answered, so the edge's outbox stops resending the report
        answer = await h.request("ec-status-e1", "update", f"{ns}/podstatus/job",
                                 {"UID": uid, "Name": "job", "Status": running})
        assert answer.content == "OK"

        async def phase() -> str:
            return str((await h.kube.get(POD.object_path(ns, "job"))).get("status", {}).get("phase", ""))

        async with asyncio.timeout(WAIT):
            while await phase() != "Running":  # noqa: ASYNC110 - polling the API server's state
                await asyncio.sleep(0.1)

        answer = await h.request("ec-status-e1", "patch", f"{ns}/podpatch/job", '{"status":{"podIP":"10.1.0.5"}}')
        assert answer.content["Err"] is None and answer.content["Object"]["status"]["podIP"] == "10.1.0.5"
        foreign = await h.request("ec-status-e2", "patch", f"{ns}/podpatch/job", '{"status":{"podIP":"6.6.6.6"}}')
        assert foreign.content["Object"] is None and "not bound to node ec-status-e2" in foreign.content["Err"]

        # graceful deletion: the edge hears of it, stops the pod and confirms; the pod then goes at once
        await h.kube.delete(POD.object_path(ns, "job"))
        await h.wait_for(
            lambda: any(
                m.operation == "update"
                and m.resource.endswith("/pod/job")
                and m.content["metadata"].get("deletionTimestamp")
                for m in h.received
            ),
            "the pod's deletionTimestamp at its node",
        )
        await h.send("ec-status-e2", "delete", f"{ns}/pod/job", uid)  # another node cannot end it
        await asyncio.sleep(0.5)
        assert (await h.kube.get(POD.object_path(ns, "job")))["metadata"]["uid"] == uid
        await h.send("ec-status-e1", "delete", f"{ns}/pod/job", uid)
        await h.wait_push("ec-status-e1", "delete", f"node/ec-status-e1/{ns}/pod/job")
        with pytest.raises(KubeError) as gone:
            await h.kube.get(POD.object_path(ns, "job"))
        assert gone.value.not_found


async def test_queries_are_answered_only_within_the_nodes_scope(plane: ControlPlaneProcess) -> None:
    async with controller(plane) as h:
        ns = await h.namespace("ec-query")
        await h.node("ec-query-e1")
        await h.node("ec-query-e2")
        await h.create(SECRET, ns, secret_body("creds"))
        await h.create(CONFIGMAP, ns, cm_body("free"))
        await h.create(SERVICE, ns, {"metadata": {"name": "api"}, "spec": {"ports": [{"port": 80}]}})
        await h.create(POD, ns, pod_body("web", "ec-query-e1", secrets=("creds",)))
        await h.wait_push("ec-query-e1", "insert", f"node/ec-query-e1/{ns}/pod/web")

        own = await h.request("ec-query-e1", "query", f"{ns}/secret/creds")
        assert own.operation == "response" and own.content["kind"] == "Secret" and own.content["data"]["k"]
        refused = await h.request("ec-query-e2", "query", f"{ns}/secret/creds")
        assert refused.operation == "error" and "forbidden" in refused.content
        unreferenced = await h.request("ec-query-e1", "query", f"{ns}/configmap/free")
        assert unreferenced.operation == "error"
        foreign_pod = await h.request("ec-query-e2", "query", f"{ns}/pod/web")
        assert foreign_pod.operation == "error"
        service = await h.request("ec-query-e2", "query", f"{ns}/service/api")
        assert service.operation == "response" and service.content["metadata"]["name"] == "api"
        node = await h.request("ec-query-e1", "query", "default/node/ec-query-e1")
        assert node.operation == "response" and node.content["metadata"]["name"] == "ec-query-e1"
        unsupported = await h.request("ec-query-e1", "upload", f"{ns}/configmap/free")
        assert unsupported.operation == "error"


# -- restarts --------------------------------------------------------------------------------------
async def test_watches_resume_after_a_control_plane_restart_without_resending(tmp_path: Path) -> None:
    own_plane = ControlPlaneProcess(tmp_path / "cp")
    own_plane.start()
    try:
        async with controller(own_plane) as h:
            ns = await h.namespace("ec-restart")
            await h.node("ec-restart-e1")
            await h.create(CONFIGMAP, ns, cm_body("settings"))
            await h.create(SECRET, ns, secret_body("creds"))
            await h.create(SERVICE, ns, {"metadata": {"name": "api"}, "spec": {"ports": [{"port": 80}]}})
            await h.create(POD, ns, pod_body("web", "ec-restart-e1", configmaps=("settings",), secrets=("creds",)))
            await h.wait_push("ec-restart-e1", "insert", f"node/ec-restart-e1/{ns}/pod/web")
            await h.wait_push("ec-restart-e1", "insert", f"node/ec-restart-e1/{ns}/service/api")
            before = {resource: version for _, resource, version in h.pushes("ec-restart-e1")}
            sent_before = len(h.received)

            await asyncio.to_thread(own_plane.stop)
            await asyncio.sleep(1.0)  # the informers notice and back off
            await asyncio.to_thread(own_plane.start)
            changed = await _retrying(
                lambda: h.kube.patch(CONFIGMAP.object_path(ns, "settings"), {"data": {"k": "after-restart"}})
            )
            resource = f"node/ec-restart-e1/{ns}/configmap/settings"
            await h.wait_push("ec-restart-e1", "update", resource, rv(changed))
            await asyncio.sleep(1.0)
            after = h.received[sent_before:]
            # only the changed object went down again; nothing unchanged was re-sent
            assert [m.resource for m in after if parse_resource(m.resource).type != "node"] == [resource]
            assert all(m.header.resource_version != before.get(m.resource) for m in after)

        # a restarted edgecontroller sends the current state; unchanged objects keep their versions,
        # so CloudHub's queues (acked RVs from ObjectSync) drop them
        async with controller(own_plane) as h2:
            unchanged = {
                res: version
                for res, version in before.items()
                if parse_resource(res).type in ("pod", "secret", "service")
            }
            for res, version in unchanged.items():
                await h2.wait_push("ec-restart-e1", "insert", res, version)
            await h2.wait_push("ec-restart-e1", "insert", resource, rv(changed))
            again = {res: version for _, res, version in h2.pushes("ec-restart-e1", "pod", "secret", "service")}
            assert again == unchanged
    finally:
        own_plane.stop()


async def _retrying(call: Callable[[], Awaitable[Object]], attempts: int = 20) -> Object:
    """The first call after the restart may meet a connection the old server closed."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except (aiohttp.ClientError, OSError, KubeError, TimeoutError):
            await asyncio.sleep(0.2)
    return await call()


async def test_an_informer_resumes_its_watch_and_relists_only_the_difference_after_410(
    plane: ControlPlaneProcess,
) -> None:
    events: list[tuple[str, str, str]] = []

    async def record(event: Event) -> None:
        events.append((event.type.value, event.key, rv(event.obj)))

    def wanted(obj: Object) -> bool:
        return bool((obj["metadata"].get("labels") or {}).get("wanted"))

    async with controller(plane) as h:
        ns = await h.namespace("ec-informer")
        labels = {"labels": {"wanted": "yes"}}
        for name in ("a", "b", "c", "d"):
            await h.create(CONFIGMAP, ns, {"metadata": {"name": name, **labels}, "data": {"k": "1"}})
        informer = Informer(h.kube, CONFIGMAP, record, keep=wanted)
        task = asyncio.create_task(informer.run())
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        assert sorted(k for t, k, _ in events if t == "ADDED" and k.startswith(ns)) == [f"{ns}/{n}" for n in "abcd"]

        # stopped and run again: it resumes the watch from its version, and misses nothing
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        events.clear()
        b1 = await h.kube.patch(CONFIGMAP.object_path(ns, "b"), {"data": {"k": "2"}})
        task = asyncio.create_task(informer.run())
        await h.wait_for(lambda: ("MODIFIED", f"{ns}/b", rv(b1)) in events, "b modified through the watch")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        # its version is gone (as after a compaction): 410, relist, and only the differences become events
        events.clear()
        informer.rv = "999999999"
        await h.kube.delete(CONFIGMAP.object_path(ns, "a"))
        b2 = await h.kube.patch(CONFIGMAP.object_path(ns, "b"), {"data": {"k": "3"}})
        await h.kube.patch(CONFIGMAP.object_path(ns, "d"), {"metadata": {"labels": {"wanted": None}}})
        task = asyncio.create_task(informer.run())
        try:
            await h.wait_for(lambda: len([e for e in events if e[1].startswith(ns)]) >= 3, "the relist's events")
            await asyncio.sleep(0.5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        mine = sorted((t, k) for t, k, _ in events if k.startswith(ns))
        assert mine == [("DELETED", f"{ns}/a"), ("DROPPED", f"{ns}/d"), ("MODIFIED", f"{ns}/b")]
        assert informer.cache[f"{ns}/b"]["metadata"]["resourceVersion"] == rv(b2)
        assert f"{ns}/a" not in informer.cache and f"{ns}/d" not in informer.cache
