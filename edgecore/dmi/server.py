"""Edgecore's DMI server: DeviceManagerService (grpc.aio) on a unix socket, thin over a `ManagerBackend`.

Owns the socket file: its parent directory is created, a stale socket left by a dead edgecore is removed (a
live one is an error: two edgecores must not share it), the socket is made 0600 (mappers run as root, like
edgecore) and removed on stop. Requests become backend calls with plain values; a `DMIError` from the backend
is the gRPC status the mapper sees. What a register, report or state means is the backend's business
(edgecore/devicetwin/dmi.py); this module holds no state of its own beyond the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import grpc

from common.errors import KubeEdgeError
from common.log import get_logger
from edgecore.dmi.convert import ConversionError, device_id, device_message, model_message
from edgecore.dmi.generate import MANAGER_SERVICE, PACKAGE, DMIProto
from edgecore.dmi.registry import MapperRecord, socket_path

log = get_logger("dmi")

PROBE_TIMEOUT: Final = 1.0
STOP_GRACE: Final = 2.0
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024


class DMIError(KubeEdgeError):
    """A DMI call fails with `code` (a grpc.StatusCode) and `details` the mapper sees."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass(frozen=True, slots=True)
class Registered:
    """What a MapperRegister answers: the objects (JSON) of the mapper's devices and their models."""

    devices: list[dict[str, Any]]
    models: list[dict[str, Any]]


class ManagerBackend(Protocol):
    async def register_mapper(self, mapper: MapperRecord, with_data: bool) -> Registered: ...

    async def report_status(self, device_id: str, twins: list[Any]) -> None: ...

    async def report_state(self, device_id: str, state: str) -> None: ...


async def socket_answers(path: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether something accepts connections on the unix socket `path` (within `timeout`)."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_unix_connection(path)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class DMIServer:
    def __init__(self, path: Path, backend: ManagerBackend, proto: DMIProto) -> None:
        self.path = path
        self.backend = backend
        self.proto = proto
        self._server: grpc.aio.Server | None = None
        self._inode: tuple[int, int] | None = None  # of the socket file we made: only that one is removed on stop

    async def start(self) -> None:
        """Listen on `path`; raises DMIError (FAILED_PRECONDITION) when it cannot."""
        await self._claim_path()
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                          ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        server.add_generic_rpc_handlers((self._handlers(),))
        try:
            bound = server.add_insecure_port(f"unix://{self.path}")
        except RuntimeError as exc:
            bound, error = 0, str(exc)
        else:
            error = ""
        if not bound:
            await server.stop(None)
            raise DMIError(grpc.StatusCode.FAILED_PRECONDITION, f"cannot listen on {self.path}: {error or 'bind'}")
        await server.start()
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)
            made = self.path.lstat()
            self._inode = (made.st_dev, made.st_ino)
        self._server = server
        log.info("DMI server listening", socket=str(self.path))

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(STOP_GRACE)
            with contextlib.suppress(FileNotFoundError):
                now = self.path.lstat()
                if (now.st_dev, now.st_ino) == self._inode:  # not one a newer edgecore made meanwhile
                    self.path.unlink()
            log.info("DMI server stopped", socket=str(self.path))

    async def _claim_path(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise DMIError(grpc.StatusCode.FAILED_PRECONDITION, f"{self.path} exists and is not a socket")
        if await socket_answers(str(self.path)):
            raise DMIError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"{self.path} is in use by a running process (another edgecore?)")
        self.path.unlink()
        log.info("stale DMI socket removed", socket=str(self.path))

    # -- handlers -----------------------------------------------------------------------------------------
    def _handlers(self) -> grpc.GenericRpcHandler:
        impl: dict[str, Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]] = {
            "MapperRegister": self._mapper_register, "ReportDeviceStatus": self._report_status,
            "ReportDeviceStates": self._report_states}
        handlers = {}
        for method in self.proto.service_methods(MANAGER_SERVICE):
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _guarded(method.name, impl[method.name]), request_deserializer=method.request.FromString,
                response_serializer=method.response.SerializeToString)
        return grpc.method_handlers_generic_handler(f"{PACKAGE}.{MANAGER_SERVICE}", handlers)

    async def _mapper_register(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        info = request.mapper
        record = MapperRecord(name=info.name, protocol=info.protocol,
                              address=socket_path(bytes(info.address).decode(errors="replace")),
                              version=info.version, api_version=info.api_version, state=info.state)
        registered = await self.backend.register_mapper(record, bool(request.withData))
        response = self.proto.methods["MapperRegister"].response()
        for kind, objects, convert, target in (
                ("DeviceModel", registered.models, model_message, response.modelList),
                ("Device", registered.devices, device_message, response.deviceList)):
            for obj in objects:
                try:
                    target.append(convert(self.proto, obj))
                except ConversionError as exc:
                    log.warning("object left out of a mapper's register answer", mapper=record.name, kind=kind,
                                err=exc)
        return response

    async def _report_status(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ident = _device(request.deviceNamespace, request.deviceName)
        await self.backend.report_status(ident, list(request.reportedDevice.twins))
        return self.proto.methods["ReportDeviceStatus"].response()

    async def _report_states(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ident = _device(request.deviceNamespace, request.deviceName)
        await self.backend.report_state(ident, request.state)
        return self.proto.methods["ReportDeviceStates"].response()


def _device(namespace: str, name: str) -> str:
    if not name:
        raise DMIError(grpc.StatusCode.INVALID_ARGUMENT, "deviceName is empty")
    return device_id(namespace, name)


def _guarded(name: str, handler: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
             ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """DMIError becomes its status; anything else INTERNAL (logged), never a hung or crashed call."""
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(request, context)
        except DMIError as exc:
            log.v(2).info("DMI call refused", rpc=name, code=exc.code.name, details=exc.details)
            await context.abort(exc.code, exc.details)
        except Exception as exc:
            log.error("DMI call failed", rpc=name, err=f"{type(exc).__name__}: {exc}")
            await context.abort(grpc.StatusCode.INTERNAL, f"{name} failed in edgecore: {type(exc).__name__}")
        raise AssertionError("unreachable: context.abort raises")

    return call
