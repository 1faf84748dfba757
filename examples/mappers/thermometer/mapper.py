"""The thermometer mapper: DMI on both sides, one asyncio task per device.

- serves `v1beta1.DeviceMapperService` on its own unix socket (`--socket`), where edgecore registers, updates
  and removes devices and models;
- registers with edgecore (`MapperRegister`, withData) on `--edgecore-socket`, and again, with back-off,
  whenever edgecore stops answering (an edgecore restart);
- per device, every reportCycle: reads the thermometer and calls `ReportDeviceStatus` (temperature, and the
  threshold with the desired value it applied as observedDesired); `ReportDeviceStates` "ok" when the device
  starts and every `--state-period` seconds.

The DMI messages come from kubeedge-py's own proto (edgecore.dmi.generate); see README.md in this directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc

from common.daemon import sd_notify
from common.log import add_verbosity_flag, get_logger, setup
from common.reliable.policy import ReconnectBackoff, ReconnectPolicy
from edgecore.dmi.generate import MAPPER_SERVICE, PACKAGE, DMIProto, load_protocol
from examples.mappers.thermometer.device import TEMPERATURE, THRESHOLD, DeviceConfig, Thermometer, config_of

log = get_logger("thermometer")

VERSION: Final = "0.1.0"
API_VERSION: Final = "v1beta1"
DEFAULT_SOCKET: Final = "/etc/kubeedge/thermometer.sock"
DEFAULT_EDGECORE_SOCKET: Final = "/etc/kubeedge/dmi.sock"
DEFAULT_PROTOCOL: Final = "virtual-thermometer"
RPC_TIMEOUT: Final = 5.0
STOP_GRACE: Final = 2.0
REGISTER_POLICY: Final = ReconnectPolicy(base=0.5, cap=15.0, stable_after=10.0)


@dataclass(frozen=True, slots=True)
class Options:
    socket: Path
    edgecore_socket: Path
    name: str = "thermometer"
    protocol: str = DEFAULT_PROTOCOL
    state_period: float = 30.0
    seed: int | None = None


class _Device:
    """One device this mapper serves: its config, the simulated hardware and its report task."""

    def __init__(self, config: DeviceConfig, thermometer: Thermometer) -> None:
        self.config = config
        self.thermometer = thermometer
        self.task: asyncio.Task[None] | None = None
        self.next_state_at = 0.0
        self.last_error = ""


class ThermometerMapper:
    def __init__(self, options: Options, proto: DMIProto) -> None:
        self.options = options
        self.proto = proto
        self.rng = random.Random(options.seed)
        self.devices: dict[str, _Device] = {}
        self.models: dict[str, Any] = {}
        self.lost = asyncio.Event()  # edgecore stopped answering: register again
        self.answered = asyncio.Event()  # edgecore took a report: it is back, cut a register back-off short
        self.refused = ""  # why edgecore refused the registration for good
        self._edgecore: grpc.aio.Channel | None = None

    # -- lifetime -------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> int:
        server = await self._serve()
        self._edgecore = grpc.aio.insecure_channel(f"unix://{self.options.edgecore_socket}")
        register = asyncio.create_task(self._register_loop(stop), name="register")
        try:
            await stop.wait()
        finally:
            register.cancel()
            for device in list(self.devices.values()):
                self._stop_device(device)
            tasks = [register, *(d.task for d in self.devices.values() if d.task)]
            await asyncio.wait(tasks, timeout=STOP_GRACE)
            await server.stop(STOP_GRACE)
            await self._edgecore.close()
            with contextlib.suppress(FileNotFoundError):
                self.options.socket.unlink()
            log.info("mapper stopped", name=self.options.name)
        return 1 if self.refused else 0

    async def _serve(self) -> grpc.aio.Server:
        path = self.options.socket
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # left by an earlier run of this mapper
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self._handlers(),))
        if not server.add_insecure_port(f"unix://{path}"):
            raise SystemExit(f"cannot listen on {path}")
        await server.start()
        os.chmod(path, 0o600)
        log.info("mapper listening", name=self.options.name, socket=str(path), protocol=self.options.protocol)
        return server

    # -- edgecore side: register, report ----------------------------------------------------------------------
    async def _call(self, rpc: str, request: Any) -> Any:
        method = self.proto.methods[rpc]
        assert self._edgecore is not None
        call = self._edgecore.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                          response_deserializer=method.response.FromString)
        return await call(request, timeout=RPC_TIMEOUT)

    async def _register_loop(self, stop: asyncio.Event) -> None:
        backoff = ReconnectBackoff(REGISTER_POLICY)
        loop = asyncio.get_running_loop()
        info = self.proto.message("MapperInfo")(
            name=self.options.name, version=VERSION, api_version=API_VERSION, protocol=self.options.protocol,
            address=str(self.options.socket).encode(), state="ok")
        request = self.proto.methods["MapperRegister"].request(withData=True, mapper=info)
        while True:
            try:
                response = await self._call("MapperRegister", request)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INVALID_ARGUMENT):
                    self.refused = exc.details() or exc.code().name
                    log.error("edgecore refused the registration", name=self.options.name,
                              code=exc.code().name, details=self.refused)
                    stop.set()
                    return
                delay = backoff.next_delay(loop.time(), random.random)
                log.warning("cannot register with edgecore, retrying", socket=str(self.options.edgecore_socket),
                            code=exc.code().name, delay_s=round(delay, 2))
                self.answered.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.answered.wait()
                continue
            backoff.connected(loop.time())
            self._adopt(response)
            self.lost.clear()
            await self.lost.wait()
            log.warning("edgecore stopped answering, registering again", name=self.options.name)

    def _adopt(self, response: Any) -> None:
        """The register answer is the full list: start what is new, update the rest, stop what is gone."""
        self.models = {f"{m.namespace}/{m.name}": m for m in response.modelList}
        configs = {c.id: c for c in (config_of(d) for d in response.deviceList)}
        for ident in [i for i in self.devices if i not in configs]:
            self._stop_device(self.devices.pop(ident))
        for config in configs.values():
            self._upsert(config)
        for device in self.devices.values():
            device.next_state_at = 0.0  # tell the (maybe restarted) edgecore the state at once
        log.info("registered with edgecore", name=self.options.name, devices=len(configs), models=len(self.models))
        sd_notify("READY=1")  # under systemd (Type=notify) or a supervisor: registered is ready

    async def _device_loop(self, device: _Device) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._report(device, loop.time())
            await asyncio.sleep(max(0.0, device.config.report_cycle - (loop.time() - started)))

    async def _report(self, device: _Device, now: float) -> None:
        config, thermometer = device.config, device.thermometer
        stamp = str(int(time.time() * 1000))
        status = self.proto.message("DeviceStatus")()
        temperature = status.twins.add(propertyName=TEMPERATURE)
        temperature.reported.value = f"{thermometer.read_temperature(now):.2f}"
        temperature.reported.metadata.update({"type": "float", "timestamp": stamp})
        threshold = status.twins.add(propertyName=THRESHOLD)
        threshold.reported.value = thermometer.threshold_text()
        threshold.reported.metadata.update({"type": "float", "timestamp": stamp})
        if thermometer.applied_desired:
            threshold.observedDesired.value = thermometer.applied_desired
        request = self.proto.methods["ReportDeviceStatus"].request(
            deviceName=config.name, deviceNamespace=config.namespace, reportedDevice=status)
        if not await self._send(device, "ReportDeviceStatus", request):
            return
        if now >= device.next_state_at:
            state = self.proto.methods["ReportDeviceStates"].request(
                deviceName=config.name, deviceNamespace=config.namespace, state="ok")
            if await self._send(device, "ReportDeviceStates", state):
                device.next_state_at = now + self.options.state_period

    async def _send(self, device: _Device, rpc: str, request: Any) -> bool:
        try:
            await self._call(rpc, request)
        except grpc.aio.AioRpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self.lost.set()
            if error != device.last_error:  # once per kind of failure, not every cycle
                log.warning("report not taken by edgecore", device=device.config.id, rpc=rpc, err=error)
            device.last_error = error
            return False
        self.answered.set()
        if device.last_error:
            log.info("reports taken again", device=device.config.id)
            device.last_error = ""
        return True

    # -- DeviceMapperService (edgecore calls these) -----------------------------------------------------------
    def _handlers(self) -> grpc.GenericRpcHandler:
        impl: dict[str, Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]] = {
            "RegisterDevice": self.register_device, "UpdateDevice": self.update_device,
            "RemoveDevice": self.remove_device, "CreateDeviceModel": self.create_model,
            "UpdateDeviceModel": self.update_model, "RemoveDeviceModel": self.remove_model,
            "GetDevice": self.get_device}
        handlers = {m.name: grpc.unary_unary_rpc_method_handler(
            impl[m.name], request_deserializer=m.request.FromString, response_serializer=m.response.SerializeToString)
            for m in self.proto.service_methods(MAPPER_SERVICE)}
        return grpc.method_handlers_generic_handler(f"{PACKAGE}.{MAPPER_SERVICE}", handlers)

    async def register_device(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        config = await self._accept(request.device, context)
        self._upsert(config)
        return self.proto.methods["RegisterDevice"].response(deviceName=config.name, deviceNamespace=config.namespace)

    async def update_device(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._upsert(await self._accept(request.device, context))
        return self.proto.methods["UpdateDevice"].response()

    async def remove_device(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ident = f"{request.deviceNamespace or 'default'}/{request.deviceName}"
        device = self.devices.pop(ident, None)
        if device is not None:
            self._stop_device(device)
            log.info("device removed", device=ident)
        return self.proto.methods["RemoveDevice"].response()

    async def create_model(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = self._store_model(request.model)
        return self.proto.methods["CreateDeviceModel"].response(deviceModelName=model.name,
                                                                deviceModelNamespace=model.namespace)

    async def update_model(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._store_model(request.model)
        return self.proto.methods["UpdateDeviceModel"].response()

    def _store_model(self, model: Any) -> Any:
        """Models only describe the properties (type, unit, range); this mapper keeps them for reference."""
        ident = f"{model.namespace or 'default'}/{model.name}"
        self.models[ident] = model
        log.info("device model stored", model=ident, properties=len(model.spec.properties))
        return model

    async def remove_model(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.models.pop(f"{request.modelNamespace or 'default'}/{request.modelName}", None)
        return self.proto.methods["RemoveDeviceModel"].response()

    async def get_device(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ident = f"{request.deviceNamespace or 'default'}/{request.deviceName}"
        device = self.devices.get(ident)
        if device is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"device {ident} is not served by this mapper")
            raise AssertionError("unreachable")
        out = self.proto.message("Device")(name=device.config.name, namespace=device.config.namespace)
        out.spec.deviceModelReference = device.config.model
        out.spec.protocol.protocolName = self.options.protocol
        twin = out.status.twins.add(propertyName=TEMPERATURE)
        twin.reported.value = f"{device.thermometer.read_temperature(asyncio.get_running_loop().time()):.2f}"
        twin = out.status.twins.add(propertyName=THRESHOLD)
        twin.reported.value = device.thermometer.threshold_text()
        return self.proto.methods["GetDevice"].response(device=out)

    async def _accept(self, device: Any, context: grpc.aio.ServicerContext) -> DeviceConfig:
        protocol = device.spec.protocol.protocolName
        if not device.name or protocol != self.options.protocol:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"device {device.namespace}/{device.name}: protocol {protocol!r} is not "
                                f"{self.options.protocol!r}")
        return config_of(device)

    def _upsert(self, config: DeviceConfig) -> None:
        device = self.devices.get(config.id)
        if device is None:
            device = self.devices[config.id] = _Device(config, Thermometer(config, self.rng))
            log.info("device added", device=config.id, cycle_s=config.report_cycle)
        device.config = config
        before = device.thermometer.applied_desired
        problem = device.thermometer.configure(config)
        if problem:
            log.warning("desired value not applied", device=config.id, err=problem)
        elif device.thermometer.applied_desired != before:
            log.info("threshold set", device=config.id, threshold=device.thermometer.applied_desired)
        if device.task is None or device.task.done():
            device.task = asyncio.create_task(self._device_loop(device), name=f"device:{config.id}")

    def _stop_device(self, device: _Device) -> None:
        if device.task is not None:
            device.task.cancel()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.mappers.thermometer",
        description="A sample KubeEdge device mapper (DMI v1beta1): serves simulated thermometers of protocol "
                    f"{DEFAULT_PROTOCOL!r}, registers with edgecore and reports temperature and threshold.")
    parser.add_argument("--socket", type=Path, default=Path(DEFAULT_SOCKET),
                        help=f"unix socket this mapper serves DeviceMapperService on (default {DEFAULT_SOCKET})")
    parser.add_argument("--edgecore-socket", type=Path, default=Path(DEFAULT_EDGECORE_SOCKET),
                        help="edgecore's DMI socket, modules.deviceTwin.dmiSockPath "
                             f"(default {DEFAULT_EDGECORE_SOCKET})")
    parser.add_argument("--name", default="thermometer", help="mapper name given to edgecore (default thermometer)")
    parser.add_argument("--protocol", default=DEFAULT_PROTOCOL,
                        help="the spec.protocol.protocolName of the devices served (default %(default)s)")
    parser.add_argument("--state-period", type=float, default=30.0, metavar="SECONDS",
                        help="how often to report each device's state 'ok' (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the simulated noise (repeatable runs)")
    add_verbosity_flag(parser)
    return parser.parse_args(argv)


async def _main(options: Options) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await ThermometerMapper(options, load_protocol()).run(stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup(args.v)
    if args.state_period <= 0:
        raise SystemExit("--state-period must be > 0")
    options = Options(socket=args.socket, edgecore_socket=args.edgecore_socket, name=args.name,
                      protocol=args.protocol, state_period=args.state_period, seed=args.seed)
    return asyncio.run(_main(options))
