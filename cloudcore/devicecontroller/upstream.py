"""Edge to cloud: reported twins and device states written back onto the Device.

CloudHub routes messages from the edge's `twin` source to this module's group with the resource
`node/<node>/device/<ns>/<name>/twin/edge_updated` or `.../state/update`. The Device CRD has no status
subresource, so both are JSON merge patches of `.status` on the Device itself; `status.twins` is a list
(replaced whole by a merge patch), so the twin path reads the Device, merges the report by property and
patches with the read resourceVersion, retrying on a conflict. A twin report is answered as upstream
does (`node/<node>/twin`, op response, "OK"); a state report is not answered. A report for a Device
that does not exist or is bound to another node is dropped with a log line.
"""

from __future__ import annotations

from typing import Final

from cloudcore.devicecontroller.kinds import DEVICE, node_name
from cloudcore.devicecontroller.messages import (
    TWIN_EDGE_UPDATED,
    Report,
    body_of,
    parse_report,
    state_patch,
    twin_ack,
    twin_patch,
)
from cloudcore.edgecontroller.kinds import rv_of
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from cloudcore.edgecontroller.sender import Sender
from common.bus import Mailbox
from common.constants import Op
from common.log import get_logger
from common.message import Message

log = get_logger("devicecontroller")

_ATTEMPTS: Final = 3
_IGNORED_OPERATIONS: Final = frozenset({Op.RESPONSE, Op.ERROR, Op.CONNECTED, Op.DISCONNECTED, Op.KEEPALIVE})


class Upstream:
    def __init__(self, client: KubeJSON, sender: Sender) -> None:
        self.client = client
        self.sender = sender

    async def run(self, mailbox: Mailbox) -> None:
        while True:
            message = await mailbox.get()
            try:
                await self.handle(message)
            except KubeError as exc:
                log.warning("device report not applied", resource=message.resource, err=exc)
            except ValueError as exc:
                log.warning("bad device report", resource=message.resource, msg_id=message.msg_id, err=exc)

    async def handle(self, message: Message) -> None:
        if message.operation in _IGNORED_OPERATIONS:
            return
        report = parse_report(message.resource)
        if report is None:
            log.v(2).info("not a device report, ignored", resource=message.resource, op=message.operation)
            return
        body = body_of(message)
        if report.action == TWIN_EDGE_UPDATED:
            if await self._patch_twins(report, body):
                await self.sender.send(twin_ack(message, report.node))
            return
        patch = state_patch(body)
        if patch is None:
            raise ValueError(f"device state {body.get('state', body.get('State'))!r} is not one of upstream's")
        if await self._current(report) is not None:
            await self.client.patch(DEVICE.object_path(report.namespace, report.name), patch)

    async def _current(self, report: Report) -> dict[str, object] | None:
        device = await self.client.get(DEVICE.object_path(report.namespace, report.name))
        if node_name(device) != report.node:
            log.warning("report from a node the device is not bound to, dropped",
                        device=f"{report.namespace}/{report.name}", node=report.node, bound=node_name(device))
            return None
        return device

    async def _patch_twins(self, report: Report, body: dict[str, object]) -> bool:
        path = DEVICE.object_path(report.namespace, report.name)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                current = await self._current(report)
            except KubeError as exc:
                if exc.not_found:
                    log.warning("twin report for an unknown device, dropped", device=path)
                    return False
                raise
            if current is None:
                return False
            patch = twin_patch(current, body)
            patch["metadata"] = {"resourceVersion": rv_of(current)}  # the list merge is only valid on that RV
            try:
                await self.client.patch(path, patch)
                return True
            except KubeError as exc:
                if not exc.conflict or attempt == _ATTEMPTS:
                    raise
        return False
