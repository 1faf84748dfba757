"""The Edged module (group `edged`): registers the node with the cloud and keeps its status current.

Registration (`insert` of `<registerNodeNamespace>/node/<name>` with the v1.Node) is a request through
MetaManager, only possible while connected (as upstream); it is retried with back-off until the cloud
answers "OK". The status (`nodestatus` update, NodeStatusRequest) goes every
nodeStatusUpdateFrequency, and at once whenever the cloud connection comes back, through EdgeHub's
outbox: the latest one waits out a disconnect, so the node is Ready again as soon as the link is.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import UTC, datetime
from typing import Final

from common.config.base import local_ip
from common.config.edgecore import Edged as EdgedConfig
from common.constants import CLOUD_CONNECTED, RESOURCE_CLOUD_CONNECTION, EdgeModule, Group, Op, ResourceType
from common.errors import BusError
from common.log import get_logger
from common.message import Message
from common.modules import ModuleContext
from common.reliable import ReconnectBackoff
from edgecore.edged.nodestatus import NodeFacts, node_object, status_request

log = get_logger("edged")

REGISTER_TIMEOUT: Final = 60.0
_OK: Final = "OK"


class EdgedModule:
    name = EdgeModule.EDGED
    group = Group.EDGED

    def __init__(self, config: EdgedConfig) -> None:
        self.config = config
        kubelet = config.tailored_kubelet_config
        self.facts = NodeFacts(
            name=config.hostname_override, node_ip=config.node_ip or local_ip(), labels=dict(config.node_labels),
            taints=[t.model_dump(by_alias=True, exclude_none=True) for t in kubelet.register_with_taints or []],
            max_pods=int(kubelet.max_pods), kubelet_port=int(kubelet.read_only_port), started=datetime.now(UTC))
        self.interval = kubelet.node_status_update_frequency.nanoseconds / 1e9 or 10.0
        self.connected = asyncio.Event()
        self.registered = not kubelet.register_node
        self._report_now = asyncio.Event()

    async def run(self, ctx: ModuleContext) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._listen(ctx))
            tasks.create_task(self._report(ctx))

    async def _listen(self, ctx: ModuleContext) -> None:
        while True:
            message = await ctx.mailbox.get()
            if message.resource != RESOURCE_CLOUD_CONNECTION:
                log.v(3).info("message for pods ignored until pods are managed", msg_id=message.msg_id,
                              resource=message.resource)
                continue
            if message.content == CLOUD_CONNECTED:
                self.connected.set()
                self._report_now.set()
            else:
                self.connected.clear()

    async def _report(self, ctx: ModuleContext) -> None:
        backoff = ReconnectBackoff()
        while not self.registered:
            await self.connected.wait()
            if await self._register(ctx):
                break
            await asyncio.sleep(backoff.next_delay(time.monotonic(), random.random))
        while True:
            await self._send_status(ctx)
            self._report_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), self.interval)

    async def _register(self, ctx: ModuleContext) -> bool:
        node = node_object(self.facts, datetime.now(UTC))
        request = Message.new(source=EdgeModule.EDGED, group=Group.META, operation=Op.INSERT,
                              resource=self._resource(ResourceType.NODE), content=node)
        try:
            reply = await ctx.bus.request(EdgeModule.METAMANAGER, request, REGISTER_TIMEOUT)
        except (TimeoutError, BusError) as exc:
            log.warning("node registration not answered; retrying", node=self.facts.name, msg_id=request.msg_id,
                        err=exc)
            return False
        if reply.content != _OK:
            log.warning("node registration refused; retrying", node=self.facts.name, msg_id=request.msg_id,
                        reason=str(reply.content)[:200])
            return False
        self.registered = True
        log.info("node registered", node=self.facts.name, msg_id=request.msg_id)
        return True

    async def _send_status(self, ctx: ModuleContext) -> None:
        report = Message.new(source=EdgeModule.EDGED, group=Group.META, operation=Op.UPDATE,
                             resource=self._resource(ResourceType.NODESTATUS),
                             content=status_request(self.facts, datetime.now(UTC)))
        try:
            await ctx.bus.send(EdgeModule.METAMANAGER, report)
        except BusError as exc:
            log.warning("node status not handed to metamanager", node=self.facts.name, msg_id=report.msg_id, err=exc)
            return
        log.v(3).info("node status sent", node=self.facts.name, msg_id=report.msg_id)

    def _resource(self, resource_type: str) -> str:
        return f"{self.config.register_node_namespace}/{resource_type}/{self.facts.name}"
