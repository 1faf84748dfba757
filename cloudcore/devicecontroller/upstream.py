"""Edge to cloud: reported twins and device states written back onto the Device.

CloudHub routes messages from the edge's `twin` source to this module's group with the resource
`node/<node>/device/<ns>/<name>/twin/edge_updated` or `.../state/update`. The Device CRD has no status
subresource, so both are JSON merge patches of `.status` on the Device itself; `status.twins` is a list
(replaced whole by a merge patch), so the twins are merged by property onto the Device as read and the
patch carries that resourceVersion (a conflict means read again and retry).

Batching: the reports already waiting in the mailbox (up to `BATCH_LIMIT`) are handled together, and all the
reports of one Device in a batch become one patch (twin reports applied in arrival order, the last state
wins). The Device as this module last wrote it is kept (`written_by_key`, bounded), so a device that reports
often costs one PATCH per batch, not a GET and a PATCH per report; a stale copy only costs a conflict and a
fresh read.

Answers (what the edge's pending reports wait for: `node/<node>/twin`, parent = the report's msg_id), one per
report: op `response` "OK" once its patch is written; op `error` with the reason when the report can never
apply (the Device does not exist, is bound to another node, or the body is malformed), so the edge stops
resending it. An API failure (unreachable, 5xx, conflicts past the retries) is not answered: the edge resends
a twin report after its resend interval. A state report is answered the same way; the edge does not wait for
that answer (upstream sends none), so it is harmless to an edge that ignores it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

from cloudcore.devicecontroller.kinds import DEVICE, node_name
from cloudcore.devicecontroller.messages import (
    TWIN_EDGE_UPDATED,
    Report,
    body_of,
    merged_twins,
    parse_report,
    report_ack,
    report_refused,
    reported_twins,
    state_patch,
)
from cloudcore.edgecontroller.kinds import Object, rv_of
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from cloudcore.edgecontroller.sender import Sender
from common.bus import Mailbox
from common.constants import Op
from common.log import get_logger
from common.message import Message

log = get_logger("devicecontroller")

BATCH_LIMIT: Final = 256
WRITTEN_LIMIT: Final = 1024  # Devices kept as last written
_ATTEMPTS: Final = 3
_INVALID: Final = frozenset({400, 422})  # the API will refuse this patch every time
_IGNORED_OPERATIONS: Final = frozenset({Op.RESPONSE, Op.ERROR, Op.CONNECTED, Op.DISCONNECTED, Op.KEEPALIVE})

DeviceKey = tuple[str, str, str]  # node, namespace, name


class Refused(Exception):
    """The report can never be applied; the text is the reason sent back to the edge."""


@dataclass
class _DeviceReports:
    """The reports of one Device in a batch, in arrival order."""

    report: Report
    twins: list[tuple[Message, dict[str, Any]]] = field(default_factory=list)
    states: list[tuple[Message, dict[str, Any]]] = field(default_factory=list)  # (message, status fields)

    @property
    def messages(self) -> list[Message]:
        return [m for m, _ in self.twins] + [m for m, _ in self.states]


class Upstream:
    def __init__(self, client: KubeJSON, sender: Sender) -> None:
        self.client = client
        self.sender = sender
        self.written_by_key: OrderedDict[tuple[str, str], Object] = OrderedDict()

    async def run(self, mailbox: Mailbox) -> None:
        while True:
            batch = [await mailbox.get(), *mailbox.take_ready(BATCH_LIMIT - 1)]
            await self.handle_batch(batch)

    async def handle(self, message: Message) -> None:
        await self.handle_batch([message])

    async def handle_batch(self, messages: list[Message]) -> None:
        by_device: dict[DeviceKey, _DeviceReports] = {}
        for message in messages:
            if message.operation in _IGNORED_OPERATIONS:
                continue
            report = parse_report(message.resource)
            if report is None:
                log.v(2).info("not a device report, ignored", resource=message.resource, op=message.operation)
                continue
            key = (report.node, report.namespace, report.name)
            reports = by_device.get(key) or _DeviceReports(report)
            try:
                self._add(reports, report, message)
            except Refused as exc:
                await self._refuse(message, report.node, str(exc))
                continue
            by_device[key] = reports
        for reports in by_device.values():
            try:
                await self._apply(reports)
            except Refused as exc:
                for message in reports.messages:
                    await self._refuse(message, reports.report.node, str(exc))
                continue
            except KubeError as exc:
                log.warning("device reports not applied, the edge will resend", node=reports.report.node,
                            device=f"{reports.report.namespace}/{reports.report.name}",
                            reports=len(reports.messages), err=exc)
                continue
            for message in reports.messages:
                await self.sender.send(report_ack(message, reports.report.node))

    @staticmethod
    def _add(reports: _DeviceReports, report: Report, message: Message) -> None:
        """Check one report's body and queue it for its Device's patch (Refused if malformed)."""
        try:
            body = body_of(message)
        except ValueError as exc:
            raise Refused(f"malformed report: {exc}") from None
        if report.action == TWIN_EDGE_UPDATED:
            try:
                reports.twins.append((message, reported_twins(body)))
            except ValueError as exc:
                raise Refused(f"malformed twin report: {exc}") from None
            return
        patch = state_patch(body)
        if patch is None:
            raise Refused("the state is missing or not one of online, offline, ok, unknown, unhealthy")
        reports.states.append((message, patch["status"]))

    async def _refuse(self, message: Message, node: str, reason: str) -> None:
        log.warning("device report refused", resource=message.resource, msg_id=message.msg_id, reason=reason)
        await self.sender.send(report_refused(message, node, reason))

    async def _apply(self, reports: _DeviceReports) -> None:
        """One merge patch of `.status` for all of a Device's reports (Refused: none of them can apply)."""
        report = reports.report
        key, path = (report.namespace, report.name), DEVICE.object_path(report.namespace, report.name)
        for attempt in range(1, _ATTEMPTS + 1):
            current = self.written_by_key.get(key) if attempt == 1 else None
            if current is None:
                current = await self._read(report)
            bound = node_name(current)
            if bound != report.node:
                self.written_by_key.pop(key, None)
                raise Refused(f"device {report.namespace}/{report.name} is bound to node {bound!r}, "
                              f"not {report.node!r}")
            status: dict[str, Any] = {}
            if reports.twins:
                twins_now = current
                for _message, twins in reports.twins:
                    twins_now = {"status": {"twins": merged_twins(twins_now, twins)}}
                status["twins"] = twins_now["status"]["twins"]
            if reports.states:
                status.update(reports.states[-1][1])
            try:
                written = await self.client.patch(path, {"metadata": {"resourceVersion": rv_of(current)},
                                                         "status": status})
            except KubeError as exc:
                self.written_by_key.pop(key, None)
                if exc.not_found:
                    raise Refused(f"device {report.namespace}/{report.name} does not exist") from None
                if exc.status in _INVALID:
                    raise Refused(f"the API refused the status patch: {exc.message}") from None
                if not exc.conflict or attempt == _ATTEMPTS:
                    raise
                continue
            self._remember(key, written)
            log.v(3).info("device reports written", device=f"{report.namespace}/{report.name}",
                          twin_reports=len(reports.twins), state_reports=len(reports.states))
            return

    async def _read(self, report: Report) -> Object:
        try:
            return await self.client.get(DEVICE.object_path(report.namespace, report.name))
        except KubeError as exc:
            if exc.not_found:
                raise Refused(f"device {report.namespace}/{report.name} does not exist") from None
            raise

    def _remember(self, key: tuple[str, str], device: Object) -> None:
        if not isinstance(device, dict) or not rv_of(device):
            return
        self.written_by_key[key] = device
        self.written_by_key.move_to_end(key)
        while len(self.written_by_key) > WRITTEN_LIMIT:
            self.written_by_key.popitem(last=False)
