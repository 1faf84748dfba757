"""The DeviceTwin module (upstream name `twin`, group `twin`): the asyncio shell around `twin` and `store`.

In (all through the module bus):
- from EventBus (source `bus`, resource = base64url(topic), content = the MQTT payload): `.../twin/update`,
  `.../twin/get`, `.../twin/cloud_updated`, `.../state/update` and `$hw/events/node/<node>/membership/get`;
- from the cloud through EdgeHub (group `twin`): `membership` updates (added/removed devices), `twin/cloud_updated`,
  and the ACKs of our twin reports (op response, parent = the report's msg_id);
- the Device objects the cloud pushes (stored by MetaManager, read here from its change feed, or delivered to this
  group as upstream MetaManager does): their desired values become expected values; with DMI on, they and the
  DeviceModels also go to the registered mappers (edgecore/devicetwin/dmi.py);
- mappers over DMI (gRPC on `dmiSockPath`, when `serve_dmi`): their reports take the same twin and state paths
  as MQTT reports;
- EdgeHub's `node/connection` events.

Out: MQTT publishes through EventBus (group `bus`, op `publish`, resource = topic, content = the body) and
twin/state reports to the cloud through EdgeHub (module `websocket`), kept in `PendingReports` (persisted) until
the cloud has them. Handling is serial (one lock), so twins, tables and published messages stay in order.

Batches: the messages already waiting in the mailbox (at most `_BATCH`) are handled together as one
transaction: their twin/device changes apply in memory at once, then one commit stores them with the pending
reports, and only then are their MQTT answers published (nothing is answered that is not stored). If the commit
fails, everything the batch changed in memory is undone and its messages are handled again one per
transaction; a twin update whose own transaction fails is answered with a 500 result. DMI reports and the
device feed use the same transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from common.config.edgecore import DeviceTwin as DeviceTwinConfig
from common.constants import CLOUD_CONNECTED, RESOURCE_CLOUD_CONNECTION, EdgeModule, Group, Op, ResourceType
from common.errors import BusError
from common.log import get_logger
from common.message import Message, now_ms
from common.modules import ModuleContext
from edgecore.devicetwin import messages as m
from edgecore.devicetwin.dmi import DMIBridge, ObjectLister
from edgecore.devicetwin.pending import RESEND_AFTER, PendingReports
from edgecore.devicetwin.store import Device, DeviceTwinStore
from edgecore.devicetwin.twin import (
    Outcome,
    TwinError,
    apply_cloud_sync,
    apply_desired,
    apply_edge_update,
    build_delta,
    check_update,
    desired_of,
    document_body,
    get_result,
    twin_body,
    without_versions,
)
from edgecore.dmi.catalog import DEVICE, MODEL, Kind
from edgecore.dmi.generate import DMIProtoError
from edgecore.metamanager.events import DELETED, MetaEvent, Subscription, SubscriptionClosed

log = get_logger("devicetwin")

BUS_SOURCE: Final = "bus"  # EventBus's source name on upstream's messages
_WAITING_LIMIT: Final = 4096  # desired values of Devices not (yet) members of this node
_FEED_POLL: Final = 5.0
_BATCH: Final = 256  # mailbox messages handled in one transaction at most
Step = Callable[[], Awaitable[object]]
_Publish = tuple[str, dict[str, Any]]


class DeviceTwinModule:
    name = EdgeModule.TWIN
    group = Group.TWIN

    def __init__(self, config: DeviceTwinConfig, node: str, store: DeviceTwinStore,
                 device_feed: Subscription | None = None, clock: Callable[[], float] = time.monotonic, *,
                 serve_dmi: bool = False, list_objects: ObjectLister | None = None) -> None:
        self.config = config
        self.node = node
        self.store = store
        self.device_feed = device_feed
        self.clock = clock
        self.pending = PendingReports.restore(store.pending_rows)
        self.cloud_connected = False
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._waiting_desired: dict[str, dict[str, str]] = {}
        self._ctx: ModuleContext | None = None
        # the open transaction (under the lock): publishes held until the commit, the answers to publish
        # instead if it fails, and `_waiting_desired` entries as they were before it
        self._outbox: list[_Publish] | None = None
        self._on_fail: list[_Publish] = []
        self._waiting_undo: dict[str, dict[str, str] | None] = {}
        # DMI: `list_objects` (MetaStore.list_type) gives the Device/DeviceModel objects stored before the feed began.
        self.dmi: DMIBridge | None = None
        if serve_dmi:
            try:
                self.dmi = DMIBridge(self, Path(config.dmi_sock_path), self._lock, list_objects)
            except DMIProtoError as exc:  # MQTT mappers still work; say why DMI ones cannot
                log.error("DMI disabled: its proto cannot be loaded", err=exc)

    async def run(self, ctx: ModuleContext) -> None:
        self._ctx = ctx
        log.info("devicetwin started", node=self.node, devices=len(self.store.devices), pending=len(self.pending))
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._flush_loop(ctx), name="devicetwin:flush")
            if self.device_feed is not None:
                tasks.create_task(self._feed_loop(ctx, self.device_feed), name="devicetwin:devices")
            if self.dmi is not None:
                tasks.create_task(self.dmi.run(ctx), name="devicetwin:dmi")
            while True:
                messages = [await ctx.mailbox.get(), *ctx.mailbox.take_ready(_BATCH - 1)]
                async with self._lock:
                    await self._handle_batch(ctx, messages)

    async def _handle_batch(self, ctx: ModuleContext, messages: list[Message]) -> None:
        """`messages` in one transaction; if it cannot commit, each in its own."""
        steps: list[Step] = [functools.partial(self._dispatch, ctx, message) for message in messages]
        if await self.transaction(ctx, steps, quiet=len(steps) > 1):
            return
        if len(steps) > 1:
            log.warning("device batch not stored, handling its messages one by one", messages=len(steps))
            for message, step in zip(messages, steps, strict=True):
                if not await self.transaction(ctx, [step]):
                    log.error("device message not stored", msg_id=message.msg_id, resource=message.resource)

    async def transaction(self, ctx: ModuleContext, steps: Sequence[Step], *, quiet: bool = False) -> bool:
        """Run `steps` (under the lock) as one transaction: commit their changes and the pending reports, then
        publish what they published. False if the commit failed: their changes are undone, and (unless `quiet`,
        for a batch to be retried) the answers they left for that case are published."""
        self._outbox, self._on_fail, self._waiting_undo = [], [], {}
        self.pending.begin()
        try:
            for step in steps:
                await step()
            await self.store.commit(self.pending.take_dirty())
        except BaseException as exc:
            self.store.rollback()
            self.pending.rollback()
            for device_id, before in self._waiting_undo.items():
                if before is None:
                    self._waiting_desired.pop(device_id, None)
                else:
                    self._waiting_desired[device_id] = before
            answers, self._outbox, self._on_fail = self._on_fail, None, []
            if not isinstance(exc, sqlite3.Error):
                raise
            log.error("device changes not stored, undone", steps=len(steps), err=exc)
            if not quiet:
                for topic, body in answers:
                    await self._publish(ctx, topic, body)
            return False
        self.pending.commit()
        outbox, self._outbox, self._on_fail = self._outbox, None, []
        for topic, body in outbox:
            await self._publish(ctx, topic, body)
        if self.cloud_connected and self.pending.has_unsent(self.clock()):
            await self._flush(ctx)
        if self.pending.take_timer_changed():
            self._wakeup.set()  # a hot device's report is due at a time the flush loop does not wait for yet
        return True

    # -- dispatch -----------------------------------------------------------------------------------------
    async def handle(self, ctx: ModuleContext, message: Message) -> bool:
        """One message in a transaction of its own (the run loop batches them); False if it was not stored."""
        return await self.transaction(ctx, [functools.partial(self._dispatch, ctx, message)])

    async def _dispatch(self, ctx: ModuleContext, message: Message) -> None:
        if message.resource == RESOURCE_CLOUD_CONNECTION:
            self._connection(message.content == CLOUD_CONNECTED)
            return
        if message.parent_msg_id and message.operation in (Op.RESPONSE, Op.ERROR):
            key = self.pending.ack(message.parent_msg_id)
            if key is not None:
                log.v(3).info("report acknowledged by the cloud", device=key.rsplit("/", 1)[0],
                              msg_id=message.parent_msg_id, answer=str(message.content)[:40])
            return
        if message.source == BUS_SOURCE:
            await self._from_mqtt(ctx, message)
        elif message.group == Group.TWIN:
            await self._from_cloud(ctx, message)
        elif message.group == Group.RESOURCE and (kind := _object_kind(message.resource)) is not None:
            await self._device_object(ctx, message.operation, message.resource, message.content, kind)
        else:
            log.v(2).info("message not for devicetwin ignored", msg_id=message.msg_id, source=message.source,
                          resource=message.resource, operation=message.operation)

    def _connection(self, connected: bool) -> None:
        self.cloud_connected = connected
        if connected:
            log.info("cloud connected, sending pending device reports", node=self.node, pending=len(self.pending))
            self._wakeup.set()
        else:
            self.pending.disconnected()
            log.info("cloud disconnected, device reports kept", node=self.node, pending=len(self.pending))

    async def _from_mqtt(self, ctx: ModuleContext, message: Message) -> None:
        try:
            topic = m.decode_topic(message.resource)
        except (ValueError, UnicodeDecodeError):
            log.warning("bus message with a bad topic ignored", msg_id=message.msg_id, resource=message.resource[:80])
            return
        event = m.parse_topic(topic)
        if event is None:
            log.v(2).info("topic without a devicetwin action ignored", topic=topic)
            return
        payload = message.content
        if event.action is m.Action.TWIN_UPDATE:
            await self.twin_update(ctx, event.identity, payload)
        elif event.action is m.Action.TWIN_GET:
            await self.twin_get(ctx, event.identity, payload)
        elif event.action is m.Action.TWIN_CLOUD_SYNC:
            await self.cloud_sync(ctx, event.identity, payload)
        elif event.action is m.Action.STATE_UPDATE:
            await self.state_update(ctx, event.identity, payload)
        elif event.action is m.Action.MEMBERSHIP_GET:
            await self.membership_get(ctx, payload)

    async def _from_cloud(self, ctx: ModuleContext, message: Message) -> None:
        resource = message.resource
        if "membership/detail" in resource:
            log.v(2).info("membership detail ignored (not sent by the cloud since v1.15)", msg_id=message.msg_id)
        elif resource.endswith(f"/{ResourceType.MEMBERSHIP}") or resource == ResourceType.MEMBERSHIP:
            await self.membership_update(ctx, message.content)
        elif resource.endswith(m.TWIN_CLOUD_UPDATED):
            device_id = resource.removeprefix("device/")[: -len(m.TWIN_CLOUD_UPDATED)]
            await self.cloud_sync(ctx, device_id, message.content)
        else:
            log.v(2).info("cloud twin message ignored", msg_id=message.msg_id, resource=resource,
                          operation=message.operation)

    # -- twin ---------------------------------------------------------------------------------------------
    async def twin_update(self, ctx: ModuleContext, device_id: str, payload: Any) -> TwinError | None:
        """An edge twin update (MQTT `.../twin/update` or a DMI report); the refusal, if any, is also returned."""
        now = now_ms()
        topic = m.device_topic(device_id, m.TWIN_UPDATE_RESULT)
        body = _json_object(payload)
        event_id = _event_id(body)
        if body is None:
            await self._publish(ctx, topic, m.error_result("", now, m.BAD_REQUEST, m.ERR_UNMARSHAL))
            log.warning("twin update is not a JSON object", device=device_id)
            return TwinError(m.BAD_REQUEST, m.ERR_UNMARSHAL)
        device = self.store.devices.get(device_id)
        try:
            if "twin" not in body or not isinstance(body["twin"], dict):
                raise TwinError(m.BAD_REQUEST, m.ERR_NO_TWIN)
            update = check_update(body["twin"])
            if device is None:
                raise TwinError(m.NOT_FOUND, m.ERR_NO_DEVICE)
            outcome = apply_edge_update(device.twins, update, now)
        except TwinError as exc:
            log.warning("twin update rejected", device=device_id, event_id=event_id, code=exc.code, reason=exc.reason)
            await self._publish(ctx, topic, m.error_result(event_id, now, exc.code, exc.reason))
            return exc
        self.store.save_twins(device_id, outcome.changed, outcome.twins)
        self._on_fail.append((topic, m.error_result(event_id, now, m.INTERNAL_ERROR,
                                                    "the twin update could not be stored")))
        log.v(3).info("twin updated", device=device_id, event_id=event_id, properties=",".join(sorted(update)))
        result = {k: without_versions(v) for k, v in outcome.result.items()}
        await self._publish(ctx, topic, twin_body(event_id, now, result))
        await self._after_change(ctx, device_id, event_id, now, outcome)
        return None

    async def cloud_sync(self, ctx: ModuleContext, device_id: str, payload: Any) -> None:
        now = now_ms()
        body = _json_object(payload)
        device = self.store.devices.get(device_id)
        if body is None or not isinstance(body.get("twin"), dict):
            log.warning("cloud twin sync without a twin map ignored", device=device_id)
            return
        if device is None:
            log.warning("cloud twin sync for an unknown device ignored", device=device_id)
            return
        outcome = apply_cloud_sync(device.twins, body["twin"], now)
        self.store.save_twins(device_id, outcome.changed, outcome.twins)
        log.v(2).info("twin synced from the cloud", device=device_id, changed=len(outcome.changed),
                      refused=len(outcome.sync))
        await self._after_change(ctx, device_id, _event_id(body), now, outcome)

    async def apply_device_desired(self, ctx: ModuleContext, device_id: str, desired: dict[str, str]) -> None:
        device = self.store.devices.get(device_id)
        if device is None:
            if device_id in self._waiting_desired or len(self._waiting_desired) < _WAITING_LIMIT:
                self._set_waiting(device_id, desired)
            return
        now = now_ms()
        outcome = apply_desired(device.twins, desired, now)
        if not outcome.changed:
            return
        self.store.save_twins(device_id, outcome.changed, outcome.twins)
        log.info("desired values from the cloud", device=device_id, properties=",".join(sorted(outcome.changed)))
        await self._after_change(ctx, device_id, m.new_event_id(), now, outcome)

    async def _after_change(self, ctx: ModuleContext, device_id: str, event_id: str, now: int,
                            outcome: Outcome) -> None:
        """Document, delta and the report to the cloud, as upstream after any twin change."""
        if outcome.document:
            await self._publish(ctx, m.device_topic(device_id, m.TWIN_DOCUMENT),
                                document_body(event_id, now, outcome.document))
        delta = build_delta(m.new_event_id(), now_ms(), outcome.twins)
        if delta is not None:
            await self._publish(ctx, m.device_topic(device_id, m.TWIN_DELTA), delta)
        if outcome.sync:
            self.pending.put_twin(device_id, outcome.sync)
            log.v(3).info("twin report queued for the cloud", device=device_id, connected=self.cloud_connected)

    async def twin_get(self, ctx: ModuleContext, device_id: str, payload: Any) -> None:
        now = now_ms()
        topic = m.device_topic(device_id, m.TWIN_GET_RESULT)
        body = _json_object(payload)
        if body is None:
            await self._publish(ctx, topic, m.error_result("", now, m.BAD_REQUEST, "Unmarshal twin info failed"))
            return
        event_id = _event_id(body)
        device = self.store.devices.get(device_id)
        if device is None:
            log.v(2).info("twin get for an unknown device", device=device_id)
            await self._publish(ctx, topic, m.error_result(
                event_id, now, m.NOT_FOUND, f"Device {device_id} not found while getting twin"))
            return
        await self._publish(ctx, topic, twin_body(event_id, now, get_result(device.twins)))

    # -- device state -------------------------------------------------------------------------------------
    async def state_update(self, ctx: ModuleContext, device_id: str, payload: Any) -> None:
        body = _json_object(payload)
        device = self.store.devices.get(device_id)
        state = m.state_of(body) if body is not None else None
        if device is None or state is None or state.lower() not in m.STATES:
            log.warning("device state update ignored", device=device_id, state=str(state),
                        known=device is not None)
            return
        last_online = device.last_online
        if state.lower() in m.ONLINE_STATES:
            last_online = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.store.update_state(device_id, state, last_online)
        log.v(2).info("device state updated", device=device_id, state=state)
        result = m.device_state_body(m.new_event_id(), now_ms(), device.name, state, last_online)
        await self._publish(ctx, m.device_topic(device_id, m.STATE_UPDATE_RESULT), result)
        # Upstream's body plus a top-level `state`, which cloud decoders reading either shape understand.
        self.pending.put_state(device_id, {**result, "state": state})

    # -- membership ---------------------------------------------------------------------------------------
    async def membership_update(self, ctx: ModuleContext, payload: Any) -> None:
        body = _json_object(payload)
        if body is None:
            log.warning("membership update is not a JSON object", node=self.node)
            return
        topic = m.node_topic(self.node, m.MEMBERSHIP_UPDATED)
        for raw in body.get("added_devices") or []:
            if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
                continue
            device_id = raw["id"]
            if device_id in self.store.devices:
                log.v(2).info("device already a member", device=device_id)
                continue
            self.store.add_device(Device(device_id, _str(raw, "name"), _str(raw, "description"),
                                               _str(raw, "state")))
            log.info("device added", device=device_id, node=self.node)
            await self._publish(ctx, topic, {**m.base(m.new_event_id(), now_ms()),
                                             "added_devices": [m.membership_device(raw)], "removed_devices": None})
            waiting = self._pop_waiting(device_id)
            if waiting:
                await self.apply_device_desired(ctx, device_id, waiting)
        for raw in body.get("removed_devices") or []:
            if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
                continue
            device_id = raw["id"]
            self._pop_waiting(device_id)
            if device_id not in self.store.devices:
                log.v(2).info("removed device was not a member", device=device_id)
                continue
            self.store.remove_device(device_id)
            self.pending.forget_device(device_id)
            log.info("device removed", device=device_id, node=self.node)
            await self._publish(ctx, topic, {**m.base(m.new_event_id(), now_ms()), "added_devices": None,
                                             "removed_devices": [m.membership_device(raw)]})

    async def membership_get(self, ctx: ModuleContext, payload: Any) -> None:
        now = now_ms()
        topic = m.node_topic(self.node, m.MEMBERSHIP_GET_RESULT)
        body = _json_object(payload)
        if body is None:
            await self._publish(ctx, topic, m.error_result("", now, m.BAD_REQUEST, "Unmarshal get membership failed"))
            return
        devices = [m.membership_device(d.membership_view()) for _, d in sorted(self.store.devices.items())]
        await self._publish(ctx, topic, {**m.base(_event_id(body), now), "devices": devices})

    # -- Device / DeviceModel objects (desired values; DMI pushes) -----------------------------------------
    async def _device_object(self, ctx: ModuleContext, operation: str, resource: str, obj: Any,
                             kind: Kind = DEVICE) -> None:
        if self.dmi is not None:
            self.dmi.object_changed(kind, resource, obj, deleted=operation == Op.DELETE)
        if kind != DEVICE:
            return
        device_id = _device_id_of(resource, obj)
        if device_id is None:
            return
        if operation == Op.DELETE:
            self._pop_waiting(device_id)
            return
        desired = desired_of(obj)
        if desired:
            await self.apply_device_desired(ctx, device_id, desired)

    async def _feed_loop(self, ctx: ModuleContext, feed: Subscription) -> None:
        """MetaManager's change feed of `device` (and `devicemodel`) objects (upstream MetaManager hands them to
        DeviceTwin)."""
        while True:
            try:
                event = await feed.next(_FEED_POLL)
            except SubscriptionClosed as exc:
                log.error("device feed closed", dropped=exc.dropped)
                return
            if event is None:
                continue
            async with self._lock:
                if not await self.transaction(ctx, [functools.partial(self._feed_event, ctx, event)]):
                    log.error("desired values not stored", key=event.key)

    async def _feed_event(self, ctx: ModuleContext, event: MetaEvent) -> None:
        try:
            obj = orjson.loads(event.value) if event.value else None
        except orjson.JSONDecodeError:
            return
        await self._device_object(ctx, Op.DELETE if event.event == DELETED else Op.UPDATE, event.key, obj,
                                  MODEL if event.type == MODEL else DEVICE)

    # -- output -------------------------------------------------------------------------------------------
    def _set_waiting(self, device_id: str, desired: dict[str, str]) -> None:
        self._waiting_undo.setdefault(device_id, self._waiting_desired.get(device_id))
        self._waiting_desired[device_id] = desired

    def _pop_waiting(self, device_id: str) -> dict[str, str] | None:
        self._waiting_undo.setdefault(device_id, self._waiting_desired.get(device_id))
        return self._waiting_desired.pop(device_id, None)

    async def _publish(self, ctx: ModuleContext, topic: str, body: dict[str, Any]) -> None:
        if self._outbox is not None:  # in a transaction: published once it is stored
            self._outbox.append((topic, body))
            return
        message = Message.new(source=EdgeModule.TWIN, group=Group.BUS, operation=Op.PUBLISH, resource=topic,
                              content=body)
        try:
            await ctx.bus.send_to_group(Group.BUS, message)
        except BusError as exc:
            log.v(2).info("MQTT publish not handed to eventbus", topic=topic, err=exc)

    async def _persist_pending(self) -> None:
        try:
            await self.store.commit(self.pending.take_dirty())
        except sqlite3.Error:
            self.pending.rollback()  # the rows taken are written again next time
            raise

    async def _flush_loop(self, ctx: ModuleContext) -> None:
        while True:
            self._wakeup.clear()
            if self.cloud_connected:
                async with self._lock:
                    await self._flush(ctx)
            deadline = self.pending.next_due()
            timeout = RESEND_AFTER if deadline is None else max(0.005, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()

    async def _flush(self, ctx: ModuleContext) -> None:
        for message in self.pending.due(self.clock()):
            try:
                await ctx.bus.send(EdgeModule.EDGEHUB, message)
                log.v(3).info("device report sent to the cloud", resource=message.resource, msg_id=message.msg_id)
            except BusError as exc:
                self.pending.unsend(message)
                log.warning("device report not handed to edgehub, kept", resource=message.resource, err=exc)
                break
        try:
            await self._persist_pending()
        except sqlite3.Error as exc:
            log.error("pending device reports not stored", err=exc)


def _json_object(payload: Any) -> dict[str, Any] | None:
    if isinstance(payload, str | bytes):
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
    return payload if isinstance(payload, dict) else None


def _event_id(body: dict[str, Any] | None) -> str:
    value = body.get("event_id") if body else None
    return value if isinstance(value, str) else ""


def _str(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


def _object_kind(resource: str) -> Kind | None:
    """`device` or `devicemodel` for a resource `[node/<node>/]<ns>/<kind>/<name>`, else None."""
    parts = resource.split("/")
    kind = parts[-2] if len(parts) >= 3 else ""
    return DEVICE if kind == DEVICE else MODEL if kind == MODEL else None


def _device_id_of(resource: str, obj: Any) -> str | None:
    """`<ns>/<name>` from a Device object, else from its resource `[node/<node>/]<ns>/device/<name>`."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(metadata, dict) and metadata.get("name"):
        return f"{metadata.get('namespace') or 'default'}/{metadata['name']}"
    parts = resource.split("/")
    if len(parts) >= 3 and parts[-2] == ResourceType.DEVICE:
        return f"{parts[-3]}/{parts[-1]}"
    return None
