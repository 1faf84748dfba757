"""The edge asks for one object (op `query`): answered from the API, if the node may read it.

Node authorization (DESIGN: an edge node reads only its own objects): its own Node, pods bound to it,
ConfigMaps and Secrets that a pod on it references, and Services/Endpoints/EndpointSlices (every edge
node receives those anyway). Anything else gets an `error` reply, and so does a missing object; the
answer to an allowed query is a `response` carrying the object (parent = the query's msg_id).
References and edge nodes are known once the pod informer has synced (it starts after the node
informer): until then (cloudcore just started) such queries wait a few seconds rather than being
refused by mistake.
"""

from __future__ import annotations

import asyncio
from typing import Final

from cloudcore.edgecontroller.kinds import BY_TYPE, NODE, POD, Kind, with_type_meta
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from cloudcore.edgecontroller.messages import error_reply, reply
from cloudcore.edgecontroller.planner import Planner
from common.log import get_logger
from common.message import Message
from common.resource import CloudResource

log = get_logger("edgecontroller")

REFS_READY_WAIT: Final = 10.0


class QueryHandlers:
    def __init__(self, client: KubeJSON, planner: Planner, refs_ready: asyncio.Event) -> None:
        self.client = client
        self.planner = planner
        self.refs_ready = refs_ready

    async def query(self, res: CloudResource, message: Message) -> Message:
        kind = BY_TYPE[res.type]
        namespace = res.namespace if kind.namespaced else ""
        if not res.name:
            return self._refuse(res, message, f"query of {res.type} needs a name (lists are not served)")
        if kind not in (NODE, POD) and not await self._refs_ready():
            return self._refuse(res, message, "cloudcore is still starting, retry the query")
        # Refused before reading, so a query cannot even learn whether another node's object exists.
        if kind is not POD and not self.planner.authorized(res.node, kind, namespace, res.name):
            return self._refuse(res, message, _forbidden(res, kind, namespace))
        try:
            obj = await self.client.get(kind.object_path(namespace, res.name))
        except KubeError as exc:
            log.v(2).info("query failed", node=res.node, msg_id=message.msg_id, resource=message.resource, err=exc)
            return error_reply(message, str(exc))
        if kind is POD and not self.planner.authorized(res.node, kind, namespace, res.name, obj):
            return self._refuse(res, message, _forbidden(res, kind, namespace))
        log.v(3).info("query answered", node=res.node, msg_id=message.msg_id, resource=message.resource)
        return reply(message, with_type_meta(kind, self.planner.view(res.node, kind, obj)))  # group-filtered endpoints

    async def _refs_ready(self) -> bool:
        try:
            async with asyncio.timeout(REFS_READY_WAIT):
                await self.refs_ready.wait()
        except TimeoutError:
            return False
        return True

    @staticmethod
    def _refuse(res: CloudResource, message: Message, reason: str) -> Message:
        log.warning("query refused", node=res.node, msg_id=message.msg_id, resource=message.resource, reason=reason)
        return error_reply(message, reason)


def _forbidden(res: CloudResource, kind: Kind, namespace: str) -> str:
    target = f"{namespace}/{res.name}" if namespace else res.name
    return f"forbidden: node {res.node} may not read {kind.type} {target}"
