"""The node's Lease (coordination.k8s.io/v1 `kube-node-lease/<node>`), renewed as kubelet's node lease
controller does: every 10 s (a quarter of leaseDurationSeconds, tailoredKubeletConfig.nodeLeaseDurationSeconds,
40 by default), holderIdentity the node, renewTime now. The cloud's node lifecycle controller reads it.

It goes up the path of node status (MetaManager, then EdgeHub; cloudcore's edgecontroller creates the Lease
or updates its spec), but as a request, not a status report: EdgeHub keeps no outbox entry for it and refuses
it at once while the cloud is unreachable. So an offline edge skips renewals (a renewTime from the past is
worth nothing once delivered), and renews at once when the connection is back.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Final

from common.constants import NODE_LEASE_NAMESPACE, EdgeModule, Group, Op, ResourceType
from common.errors import BusError
from common.log import get_logger
from common.message import Message
from common.modules import ModuleContext

log = get_logger("edged")

RENEW_FRACTION: Final = 0.25  # kubelet's renewInterval = leaseDuration * 0.25


def lease_object(node: str, duration_seconds: int, now: datetime) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node, "namespace": NODE_LEASE_NAMESPACE},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": duration_seconds,
                     "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}  # a MicroTime, as kubelet writes it


class LeaseRenewer:
    def __init__(self, node: str, duration_seconds: int, connected: asyncio.Event) -> None:
        self.node = node
        self.duration_seconds = duration_seconds
        self.interval = duration_seconds * RENEW_FRACTION
        self.connected = connected

    async def run(self, ctx: ModuleContext) -> None:
        while True:
            await self.connected.wait()
            await self.renew(ctx)
            await asyncio.sleep(self.interval)

    async def renew(self, ctx: ModuleContext) -> bool:
        request = Message.new(source=EdgeModule.EDGED, group=Group.META, operation=Op.UPDATE,
                              resource=f"{NODE_LEASE_NAMESPACE}/{ResourceType.LEASE}/{self.node}",
                              content=lease_object(self.node, self.duration_seconds, datetime.now(UTC)))
        try:
            reply = await ctx.bus.request(EdgeModule.METAMANAGER, request, self.interval)
        except (TimeoutError, BusError) as exc:
            log.v(2).info("node lease not renewed", node=self.node, msg_id=request.msg_id, err=exc)
            return False
        error = reply.content.get("Err") if isinstance(reply.content, dict) else reply.content
        if reply.operation == Op.ERROR or error:
            log.v(2).info("node lease not renewed", node=self.node, msg_id=request.msg_id, err=str(error)[:200])
            return False
        log.v(4).info("node lease renewed", node=self.node, msg_id=request.msg_id)
        return True
