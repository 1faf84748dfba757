"""The DynamicController module: carries out the Applications edge MetaServers send (ref/devices-groups.md 5.2):
reads and writes through the API, watch subscriptions (subscriptions.py), and the API's discovery
(discovery.py; our `discover` verb, which upstream does not have).

CloudHub routes every message from source `metaserver` here with the node prefix on its resource; the
node is that prefix (its certificate), never the Application's `Nodename`. Each Application becomes one
API request through cloudcore's client (application.py says which, and what a node may not write);
the answer goes back to the node as a `response` whose parent is the request, which the edge's bus
hands to the waiting MetaServer request. At most `CONCURRENCY` requests are in flight; every one has
the client's timeout.

EndpointSlices and Endpoints read (get, list) or watched are each node's view: the node-group endpoint
filter (topology.py), then the `default/kubernetes` rewrite (cloudcore/edgecontroller/filters.py), as
upstream's dynamiccontroller filters do. Until the filter's index is synced such reads fail (the edge
then serves its own store) rather than answer unfiltered.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from kubernetes_asyncio.client import ApiClient

from cloudcore.dynamiccontroller.application import ApplicationError, api_call, watch_target
from cloudcore.dynamiccontroller.discovery import Discovery
from cloudcore.dynamiccontroller.subscriptions import READY_TIMEOUT, Resource, Subscriptions
from cloudcore.dynamiccontroller.topology import Change, EndpointTopology, is_endpoint_resource
from cloudcore.edgecontroller.filters import for_edge
from cloudcore.edgecontroller.kinds import ENDPOINTS, ENDPOINTSLICE, Kind, Object
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from cloudcore.edgecontroller.messages import status_body
from cloudcore.edgecontroller.sender import Sender
from common.application import Key, Verb, approved, failed, rejected
from common.constants import CloudModule, Group, Op
from common.errors import BusError, ResourceError
from common.log import get_logger
from common.message import Message
from common.modules import ModuleContext
from common.resource import node_of

log = get_logger("dynamiccontroller")

CONCURRENCY: Final = 32


class DynamicControllerModule:
    name = CloudModule.DYNAMICCONTROLLER
    group = CloudModule.DYNAMICCONTROLLER

    def __init__(self, kube: ApiClient) -> None:
        self.client = KubeJSON(kube)
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._discovery = Discovery(self.client)
        self._subscriptions: Subscriptions | None = None
        self.topology = EndpointTopology(self.client, self._refilter)

    async def run(self, ctx: ModuleContext) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.topology.run(), name="dynamiccontroller:endpoint-topology")
            self._subscriptions = Subscriptions(self.client, Sender(ctx.bus).send, tasks, self.topology)
            while True:
                message = await ctx.mailbox.get()
                await self._slots.acquire()
                tasks.create_task(self._serve(ctx, message))

    async def _serve(self, ctx: ModuleContext, message: Message) -> None:
        try:
            answer = await self._answer(message)
            if answer is not None:
                await ctx.bus.send(CloudModule.CLOUDHUB, answer)
        except BusError as exc:
            log.warning("answer not handed to cloudhub", msg_id=message.msg_id, err=exc)
        finally:
            self._slots.release()

    async def _answer(self, message: Message) -> Message | None:
        try:
            node = node_of(message.resource)
        except ResourceError as exc:
            log.warning("application without a node dropped", msg_id=message.msg_id, err=exc)
            return None
        app = message.content
        if not isinstance(app, dict):
            log.warning("message that is not an application dropped", node=node, msg_id=message.msg_id)
            return None
        return _reply(message, await self._apply(node, message.msg_id, app))

    async def _apply(self, node: str, msg_id: str, app: dict[str, Any]) -> dict[str, Any]:
        if app.get("Verb") == Verb.WATCH:
            return await self._subscribe(node, msg_id, app)
        if app.get("Verb") == Verb.DISCOVER:
            return await self._discover(node, app)
        try:
            call = api_call(app, node)
        except ApplicationError as exc:
            log.warning("application refused", node=node, msg_id=msg_id, verb=app.get("Verb"), key=app.get("Key"),
                        reason=str(exc))
            return rejected(app, _forbidden(str(exc)))
        try:
            obj = await self.client.request(call.method, call.path, call.query, body=call.body,
                                            content_type=call.content_type)
        except KubeError as exc:
            if exc.unreachable:
                return failed(app, str(exc))
            log.v(2).info("application rejected by the API", node=node, msg_id=msg_id, path=call.path,
                          code=exc.status)
            return rejected(app, status_body(exc)["ErrStatus"])
        log.v(2).info("application applied", node=node, msg_id=msg_id, verb=app.get("Verb"), path=call.path)
        kind = _endpoint_read(app)
        if kind is not None and isinstance(obj, dict):
            if not await self.topology.wait_ready(READY_TIMEOUT):
                return failed(app, "the node-group endpoint filter is not synced yet")
            obj = self._node_view(kind, obj, node)
        return approved(app, obj)

    def _node_view(self, kind: Kind, obj: Object, node: str) -> Object:
        """A read's answer (one object or a list) as `node` may see it."""
        items = obj.get("items")
        if not isinstance(items, list):
            return for_edge(kind, self.topology.view(kind, obj, node))
        return {**obj, "items": [for_edge(kind, self.topology.view(kind, item, node)) if isinstance(item, dict)
                                 else item for item in items]}

    async def _refilter(self, change: Change) -> None:
        if self._subscriptions is not None:
            await self._subscriptions.refilter(change)

    async def _discover(self, node: str, app: dict[str, Any]) -> dict[str, Any]:
        try:
            bundle = await self._discovery.bundle()
        except KubeError as exc:
            log.warning("discovery for an edge node failed", node=node, err=exc)
            return failed(app, str(exc)) if exc.unreachable else rejected(app, status_body(exc)["ErrStatus"])
        return approved(app, bundle)

    async def _subscribe(self, node: str, msg_id: str, app: dict[str, Any]) -> dict[str, Any]:
        assert self._subscriptions is not None  # made by run() before any message is served
        try:
            key = watch_target(app, node)
            await self._subscriptions.subscribe(node, Resource(key.group, key.version, key.plural), key.namespace)
        except ApplicationError as exc:
            log.warning("watch refused", node=node, msg_id=msg_id, key=app.get("Key"), reason=str(exc))
            return rejected(app, _forbidden(str(exc)))
        except KubeError as exc:
            return failed(app, str(exc)) if exc.unreachable else rejected(app, status_body(exc)["ErrStatus"])
        return approved(app, {})


def _endpoint_read(app: dict[str, Any]) -> Kind | None:
    """The kind when the Application reads EndpointSlices or Endpoints; None otherwise."""
    if app.get("Verb") not in (Verb.GET, Verb.LIST):
        return None
    try:
        key = Key.parse(str(app.get("Key") or ""))
    except ApplicationError:
        return None
    if not is_endpoint_resource(key.group, key.plural):
        return None
    return ENDPOINTSLICE if key.plural == ENDPOINTSLICE.plural else ENDPOINTS


def _forbidden(message: str) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403, "message": message}


def _reply(request: Message, app: dict[str, Any]) -> Message:
    return Message.new(source=CloudModule.DYNAMICCONTROLLER, group=Group.META, operation=Op.RESPONSE,
                       resource=request.resource, content=app, parent_msg_id=request.msg_id)
