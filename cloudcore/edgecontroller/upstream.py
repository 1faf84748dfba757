"""Edge to cloud: routes what CloudHub forwards (`node/<node>/<ns>/<type>/<name>`) to its handler.

Messages are spread over a fixed number of worker shards by node, so one node's messages are handled
in the order it sent them (a status report never overtakes a newer one) while nodes proceed in
parallel. Each shard's backlog is bounded: a full shard makes the dispatcher wait, which leaves the
messages in the module's bounded mailbox, where CloudHub's send waits too. A handler returns the
reply to send, if any; a handler that fails unexpectedly gets the request an `error` reply and a log
line, and never stops the module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from cloudcore.edgecontroller.events import EventHandlers
from cloudcore.edgecontroller.kubeapi import KubeJSON
from cloudcore.edgecontroller.messages import error_reply
from cloudcore.edgecontroller.nodes import NodeHandlers
from cloudcore.edgecontroller.planner import Planner
from cloudcore.edgecontroller.pods import PodHandlers
from cloudcore.edgecontroller.queries import QueryHandlers
from cloudcore.edgecontroller.sender import Sender
from common.bus import Mailbox
from common.constants import Op
from common.constants import ResourceType as T
from common.errors import ResourceError
from common.log import get_logger
from common.message import Message
from common.resource import CloudResource, node_of, parse_resource

log = get_logger("edgecontroller")

SHARDS: Final = 16
SHARD_BACKLOG: Final = 256
_QUERYABLE: Final = (T.NODE, T.POD, T.CONFIGMAP, T.SECRET, T.SERVICE, T.ENDPOINTS, T.ENDPOINTSLICE)
# Answers and notices that need no handling here: ACKs CloudHub did not match, session events.
_IGNORED_OPERATIONS: Final = frozenset({Op.RESPONSE, Op.ERROR, Op.CONNECTED, Op.DISCONNECTED, Op.KEEPALIVE})

Handle = Callable[[CloudResource, Message], Awaitable[Message | None]]


class Upstream:
    def __init__(
        self,
        client: KubeJSON,
        planner: Planner,
        refs_ready: asyncio.Event,
        sender: Sender,
        node_update_frequency: float,
        shards: int = SHARDS,
    ) -> None:
        self.sender = sender
        self.shards = shards
        nodes = NodeHandlers(client, node_update_frequency)
        pods = PodHandlers(client)
        queries = QueryHandlers(client, planner, refs_ready)
        events = EventHandlers(client)
        self.routes: dict[tuple[str, str], Handle] = {
            (T.NODE, Op.INSERT): nodes.register,
            (T.NODE, Op.UPDATE): nodes.update,
            (T.NODESTATUS, Op.UPDATE): nodes.update_status,
            (T.NODEPATCH, Op.PATCH): nodes.patch_status,
            (T.LEASE, Op.INSERT): nodes.put_lease,
            (T.LEASE, Op.UPDATE): nodes.put_lease,
            (T.LEASE, Op.QUERY): nodes.query_lease,
            (T.PODSTATUS, Op.UPDATE): pods.update_status,
            (T.PODPATCH, Op.PATCH): pods.patch_status,
            (T.POD, Op.DELETE): pods.delete,
            (T.EVENT, Op.INSERT): events.write,
            (T.EVENT, Op.UPDATE): events.write,
            (T.EVENT, Op.PATCH): events.patch,
            **{(resource_type, Op.QUERY): queries.query for resource_type in _QUERYABLE},
        }

    async def run(self, mailbox: Mailbox) -> None:
        """Take messages from the module's mailbox until cancelled (the bus closing ends it too)."""
        backlogs: list[asyncio.Queue[Message]] = [asyncio.Queue(SHARD_BACKLOG) for _ in range(self.shards)]
        async with asyncio.TaskGroup() as tasks:
            for index, backlog in enumerate(backlogs):
                tasks.create_task(self._worker(backlog), name=f"edgecontroller:upstream-{index}")
            while True:
                message = await mailbox.get()
                if message.operation in _IGNORED_OPERATIONS:
                    log.v(4).info(
                        "upstream notice ignored",
                        msg_id=message.msg_id,
                        operation=message.operation,
                        resource=message.resource,
                    )
                    continue
                await backlogs[hash(_node_token(message.resource)) % self.shards].put(message)

    async def _worker(self, backlog: asyncio.Queue[Message]) -> None:
        while True:
            message = await backlog.get()
            await self.handle(message)

    async def handle(self, message: Message) -> None:
        try:
            res = parse_resource(message.resource)
        except ResourceError as exc:
            log.warning("upstream message with a bad resource dropped", msg_id=message.msg_id, err=exc)
            return
        handler = self.routes.get((res.type, message.operation))
        if handler is None:
            log.v(2).info(  # not bad input: kinds we do not handle yet (CSRs, ...) come often
                "unsupported upstream message",
                node=res.node,
                msg_id=message.msg_id,
                operation=message.operation,
                resource=message.resource,
            )
            await self.sender.send(
                error_reply(message, f"edgecontroller: {message.operation} of {res.type} is not supported")
            )
            return
        log.v(4).info(
            "upstream message",
            node=res.node,
            msg_id=message.msg_id,
            operation=message.operation,
            resource=message.resource,
        )
        try:
            answer = await handler(res, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("upstream handler failed", node=res.node, msg_id=message.msg_id, resource=message.resource)
            answer = error_reply(message, f"edgecontroller: internal error: {type(exc).__name__}")
        if answer is not None:
            await self.sender.send(answer)


def _node_token(resource: str) -> str:
    try:
        return node_of(resource)
    except ResourceError:
        return ""  # refused by `handle`, from whichever shard
