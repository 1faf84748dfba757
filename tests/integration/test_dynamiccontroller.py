"""DynamicController against a real control plane: an edge MetaServer's Applications (as CloudHub hands them
over, node-prefixed) become API reads, writes, watch subscriptions and discovery; the answers go back to
CloudHub for the node, refusals included."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from cloudcore.dynamiccontroller.application import decode_bytes
from cloudcore.dynamiccontroller.module import DynamicControllerModule
from common.bus import Mailbox, ModuleBus
from common.message import Message
from common.modules import ModuleContext
from tests.fixtures.controlplane import ControlPlaneProcess


def application(verb: str, key: str, body: Any = None) -> dict[str, Any]:
    return {"ID": "x", "Key": key, "Verb": verb, "Nodename": "edge-a", "Subresource": "",
            "Option": base64.b64encode(b"{}").decode(),
            "ReqBody": None if body is None else base64.b64encode(orjson.dumps(body)).decode()}


@contextlib.asynccontextmanager
async def running(plane: ControlPlaneProcess) -> AsyncIterator[tuple[ModuleBus, Mailbox]]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        bus = ModuleBus()
        cloudhub = bus.register("cloudhub", "cloudhub")
        module = DynamicControllerModule(api)
        task = asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))
        try:
            yield bus, cloudhub
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def ask(bus: ModuleBus, cloudhub: Mailbox, app: dict[str, Any]) -> tuple[Message, dict[str, Any]]:
    request = Message.new(source="metaserver", group="dynamiccontroller", operation="null",
                          resource="node/edge-a/null", content=app)
    await bus.send("dynamiccontroller", request)
    async with asyncio.timeout(10):
        answer = await cloudhub.get()
    assert (answer.parent_msg_id, answer.operation, answer.resource) == (request.msg_id, "response", request.resource)
    return answer, answer.content


async def test_writes_are_applied_and_refusals_answered(controlplane: ControlPlaneProcess) -> None:
    async with running(controlplane) as (bus, cloudhub):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-edge"}, "data": {"k": "v"}}
        _, answer = await ask(bus, cloudhub, application("create", "/core/v1/configmaps/default", cm))
        assert answer["Status"] == "Approved" and decode_bytes(answer["RespBody"])["data"] == {"k": "v"}
        stored = json.loads(controlplane.kubectl("get", "configmap", "from-edge", "-o", "json").stdout)
        assert stored["data"] == {"k": "v"}

        _, answer = await ask(bus, cloudhub, application("create", "/core/v1/configmaps/default", cm))
        assert answer["Status"] == "Rejected" and answer["Error"]["ErrStatus"]["code"] == 409

        _, answer = await ask(bus, cloudhub, application("update", "/core/v1/nodes/null/edge-b", {}))
        assert answer["Status"] == "Rejected" and answer["Error"]["ErrStatus"]["code"] == 403

        _, answer = await ask(bus, cloudhub, application("delete", "/core/v1/configmaps/default/from-edge"))
        assert answer["Status"] == "Approved"
        assert controlplane.kubectl("get", "configmap", "from-edge", check=False).returncode != 0


def deployment(name: str) -> str:
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "dyn"},
                       "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                                "template": {"metadata": {"labels": {"app": name}},
                                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})


async def next_push(cloudhub: Mailbox) -> Message:
    async with asyncio.timeout(10):
        while True:
            message = await cloudhub.get()
            if message.operation != "response":
                return message


async def test_reads_and_watch_subscriptions_for_kinds_the_node_does_not_sync(
        controlplane: ControlPlaneProcess) -> None:
    controlplane.kubectl("create", "namespace", "dyn")
    controlplane.kubectl("apply", "-f", "-", input_text=deployment("one"))
    async with running(controlplane) as (bus, cloudhub):
        _, answer = await ask(bus, cloudhub, application("get", "/apps/v1/deployments/dyn/one"))
        assert decode_bytes(answer["RespBody"])["metadata"]["name"] == "one"
        _, answer = await ask(bus, cloudhub, application("list", "/apps/v1/deployments/dyn"))
        assert [d["metadata"]["name"] for d in decode_bytes(answer["RespBody"])["items"]] == ["one"]
        _, answer = await ask(bus, cloudhub, application("get", "/core/v1/secrets/kube-system/anything"))
        assert answer["Error"]["ErrStatus"]["code"] == 403
        _, answer = await ask(bus, cloudhub, application("discover", "/"))  # ours: the API's discovery, bundled
        bundle = decode_bytes(answer["RespBody"])
        assert bundle["kind"] == "DiscoveryBundle" and "apps" in {g["name"] for g in bundle["groups"]}
        apps = next(r for r in bundle["resources"] if r["groupVersion"] == "apps/v1")
        assert "deployments" in {e["name"] for e in apps["resources"]}

        watch = Message.new(source="metaserver", group="dynamiccontroller", operation="null",
                            resource="node/edge-a/null", content=application("watch", "/apps/v1/deployments/dyn"))
        await bus.send("dynamiccontroller", watch)
        first = await next_push(cloudhub)
        assert (first.resource, first.operation) == ("node/edge-a/dyn/deployment/one", "insert")
        controlplane.kubectl("apply", "-f", "-", input_text=deployment("two"))
        second = await next_push(cloudhub)
        assert (second.resource, second.operation, second.source) == (
            "node/edge-a/dyn/deployment/two", "insert", "dynamiccontroller")
        assert second.header.resource_version == second.content["metadata"]["resourceVersion"]
        controlplane.kubectl("delete", "deployment", "one", "-n", "dyn")
        gone = await next_push(cloudhub)
        while gone.operation == "update":  # the deployment controller may touch it first
            gone = await next_push(cloudhub)
        assert (gone.resource, gone.operation) == ("node/edge-a/dyn/deployment/one", "delete")
