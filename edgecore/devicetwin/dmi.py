"""DeviceTwin's side of DMI: the backend of edgecore's DMI server, and the pushes of Device/DeviceModel changes.

Owns the Catalog (the node's Device and DeviceModel objects, from MetaManager), the registered mappers (kept
in `devicetwin_mapper` through DeviceTwinStore), the DMIServer and the Pusher. Reports from mappers go through
DeviceTwinModule's own twin and state paths, under its lock, so DMI and MQTT reports give the same MQTT
result/document/delta messages, tables and cloud reports. Never writes the `meta` table.

Register rule: edgecore/dmi/registry.py. Errors a mapper sees: INVALID_ARGUMENT (bad mapper info, a report
without values, a bad value or state), NOT_FOUND (a device that is not a member of this node), ALREADY_EXISTS
(the mapper it would displace still answers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import grpc
import orjson

from common.log import get_logger
from common.message import now_ms
from common.modules import ModuleContext
from edgecore.devicetwin import messages as m
from edgecore.devicetwin.twin import TwinError
from edgecore.dmi import registry
from edgecore.dmi.catalog import DEVICE, MODEL, Catalog, Key, Kind, key_from_resource
from edgecore.dmi.convert import device_model_id, twin_update_body
from edgecore.dmi.generate import DMIProto, load_protocol
from edgecore.dmi.pusher import Pusher
from edgecore.dmi.registry import MapperRecord
from edgecore.dmi.server import DMIError, DMIServer, Registered, socket_answers

if TYPE_CHECKING:
    from edgecore.devicetwin.module import DeviceTwinModule

log = get_logger("dmi")

ObjectLister = Callable[[str], Awaitable[list[tuple[str, str]]]]  # MetaStore.list_type: (key, JSON) by type
_STATUS_OF_CODE: Final = {m.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT, m.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
                          m.CONFLICT: grpc.StatusCode.ABORTED}


class DMIBridge:
    def __init__(self, module: DeviceTwinModule, socket: Path, lock: asyncio.Lock,
                 list_objects: ObjectLister | None = None, proto: DMIProto | None = None) -> None:
        self.module = module
        self.socket = socket
        self.lock = lock
        self.list_objects = list_objects
        self.proto = proto or load_protocol()
        self.catalog = Catalog()
        self.pusher = Pusher(self.proto, self.catalog)
        self.server = DMIServer(socket, self, self.proto)
        self._ctx: ModuleContext | None = None

    @property
    def mappers(self) -> dict[str, MapperRecord]:
        return self.module.store.mappers

    async def run(self, ctx: ModuleContext) -> None:
        """Load the catalog and the stored mappers, serve DMI until cancelled, then stop everything."""
        self._ctx = ctx
        try:
            async with self.lock:
                await self._load_catalog()
                for record in self.mappers.values():
                    self.pusher.attach(record, self.catalog.view(record.protocol))
            try:
                await self.server.start()
            except (DMIError, OSError) as exc:
                # MQTT mappers keep working; DMI mappers cannot register until this is fixed and edgecore restarts.
                log.error("DMI server not started; DMI mappers cannot register", socket=str(self.socket),
                          err=exc)
            await asyncio.Event().wait()
        finally:
            await self.server.stop()
            await self.pusher.close()

    async def _load_catalog(self) -> None:
        if self.list_objects is None:
            return
        for kind in (MODEL, DEVICE):
            for key, value in await self.list_objects(kind):
                try:
                    obj = orjson.loads(value)
                except orjson.JSONDecodeError:
                    continue
                item = key_from_resource(kind, key, obj) if isinstance(obj, dict) else None
                if item is not None:
                    self.catalog.put(item, obj)
        log.info("device objects loaded for DMI", objects=len(self.catalog), mappers=len(self.mappers))

    # -- changes of Device / DeviceModel objects (called under DeviceTwin's lock) ---------------------------
    def object_changed(self, kind: Kind, resource: str, obj: Any, deleted: bool) -> None:
        key = key_from_resource(kind, resource, obj)
        if key is None:
            return
        current: dict[str, Any] | None = None
        if deleted or not isinstance(obj, dict):
            old = self.catalog.remove(key)
            if old is None:
                return
        else:
            old, changed = self.catalog.put(key, obj)
            if not changed:
                return
            current = obj
        keys: list[Key] = [key]
        if kind == DEVICE:  # the model a device leaves or starts using may leave or enter a mapper's view
            for source in (old.obj if old is not None else None, current):
                model_id = device_model_id(source) if source is not None else None
                if model_id:
                    keys.append((MODEL, model_id))
        self.pusher.mark(keys)

    # -- ManagerBackend -----------------------------------------------------------------------------------
    async def register_mapper(self, mapper: MapperRecord, with_data: bool) -> Registered:
        problem = registry.validate(mapper)
        if problem:
            raise DMIError(grpc.StatusCode.INVALID_ARGUMENT, problem)
        async with self.lock:
            probed = registry.decide(self.mappers, mapper).to_probe
        answers = await asyncio.gather(*(socket_answers(d.address) for d in probed))
        alive = [d for d, up in zip(probed, answers, strict=True) if up]
        if alive:
            log.warning("mapper registration refused: the mapper it would replace still answers",
                        mapper=mapper.name, address=mapper.address, protocol=mapper.protocol,
                        running=alive[0].name, running_address=alive[0].address)
            raise DMIError(grpc.StatusCode.ALREADY_EXISTS, registry.conflict_message(mapper, alive[0]))
        async with self.lock:
            decision = registry.decide(self.mappers, mapper)
            if {d.name for d in decision.to_probe} - {d.name for d in probed}:
                raise DMIError(grpc.StatusCode.ABORTED, "another mapper registered meanwhile; register again")
            for old in decision.displaced:
                await self.module.store.remove_mapper(old.name)
                self.pusher.detach(old.name)
                log.info("mapper replaced: the registered one no longer answers", mapper=old.name,
                         address=old.address, protocol=old.protocol, by=mapper.name, new_address=mapper.address)
            await self.module.store.save_mapper(mapper)
            view = self.catalog.view(mapper.protocol)
            self.pusher.attach(mapper, view)
            answer = Registered(devices=[], models=[])
            if with_data:
                answer = Registered(
                    devices=[self._obj((DEVICE, ident)) for kind, ident in view if kind == DEVICE],
                    models=[self._obj((MODEL, ident)) for kind, ident in view if kind == MODEL])
        log.info("mapper registered again" if decision.refresh else "mapper registered", mapper=mapper.name,
                 protocol=mapper.protocol, address=mapper.address, version=mapper.version,
                 with_data=with_data, devices=len(answer.devices), models=len(answer.models))
        return answer

    def _obj(self, key: Key) -> dict[str, Any]:
        entry = self.catalog.get(key)
        assert entry is not None  # keys come from the catalog's own view, under the lock
        return entry.obj

    async def report_status(self, device_id: str, twins: list[Any]) -> None:
        body = twin_update_body(twins, now_ms())
        if not body["twin"]:
            raise DMIError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"the report for device {device_id} carries no twin with a value")
        async with self.lock:
            self._member(device_id)
            ctx = self._context()
            outcome: list[TwinError | None] = []

            async def update() -> None:
                outcome.append(await self.module.twin_update(ctx, device_id, body))

            if not await self.module.transaction(ctx, [update]):
                raise DMIError(grpc.StatusCode.INTERNAL, f"device {device_id}: the report could not be stored")
        error = outcome[0]
        if error is not None:
            raise DMIError(_STATUS_OF_CODE.get(error.code, grpc.StatusCode.INTERNAL),
                           f"device {device_id}: {error.reason}")

    async def report_state(self, device_id: str, state: str) -> None:
        state = state.strip()
        if state.lower() not in m.STATES:
            raise DMIError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"state {state!r} of device {device_id} is not one of {', '.join(sorted(m.STATES))} "
                           f"(any case)")
        async with self.lock:
            self._member(device_id)
            ctx = self._context()
            if not await self.module.transaction(
                    ctx, [lambda: self.module.state_update(ctx, device_id, {"state": state})]):
                raise DMIError(grpc.StatusCode.INTERNAL, f"device {device_id}: the state could not be stored")

    def _member(self, device_id: str) -> None:
        if device_id not in self.module.store.devices:
            raise DMIError(grpc.StatusCode.NOT_FOUND,
                           f"device {device_id} is not a member of node {self.module.node}")

    def _context(self) -> ModuleContext:
        if self._ctx is None:
            raise DMIError(grpc.StatusCode.UNAVAILABLE, "devicetwin is not running yet")
        return self._ctx
