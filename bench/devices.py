#!/usr/bin/env python3
"""Devices (issue 8): MQTT twin traffic through edgecore and a real mosquitto, and the cloud legs, beside a bare
paho baseline through the same broker in the same run. Real processes on loopback.

Processes: the embedded control plane (reliablesyncs and device CRDs applied), cloudcore (CloudHub,
DeviceController; WebSocket), edgecore (EventBus in mqttMode 0: the mosquitto it starts and owns, on a free port;
DeviceTwin, MetaManager, EdgeHub), all at `--v=2`; a bare paho echo process (the baseline's peer: it republishes
every message it gets, where edgecore would answer); and this script: the mapper side (paho-mqtt, QoS 0 as
edgecore's default mqttQOS) and the cloud client (aiohttp, admin client certificate). The broker is edgecore's
own because its config has `set_tcp_nodelay true`; a stock mosquitto (Nagle on) adds a delayed ACK (~20 ms) to
most round trips, since edgecore answers a twin update with several messages back to back (see bench/README.md).

Figures:

- baseline: bare paho round trip: publish -> mosquitto -> echo process -> mosquitto -> back, one at a time;
  and the echo throughput with the same window as below;
- twin round trip: `$hw/events/device/<ns>/<name>/twin/update` (one reported float) -> the edge's
  `.../twin/update/result` with the same event_id, one at a time (after a warm-up); p50 / p99;
- twin updates/s: updates over 10 devices published with at most 256 unanswered, from the first publish to
  the last result (each update: validation, its share of a batched SQLite commit, result + document publishes;
  its properties reach the cloud in the device's next report, one in flight per device);
- cloud desired -> MQTT delta: a JSON patch of `spec.properties[setpoint].desired.value` (from the API call
  being made) -> the `.../twin/update/delta` carrying the new value at the mapper, one at a time. This is the
  cloud -> edge leg up to MQTT;
- cloud desired -> mapper (DMI): the bench serves a minimal `DeviceMapperService` on a unix socket of its own and
  registers it with edgecore over DMI (`MapperRegister`, withData, protocol `bench`: the 10 devices); then a JSON
  patch of another Device's desired value (from the API call being made) -> the `UpdateDevice` call carrying the
  new value arriving at that mapper, one at a time;
- reported -> cloud status: a twin update with a new temperature published -> a Device watch event in the
  cloud showing it in `status.twins[].reported`, one at a time.

    .venv/bin/python bench/devices.py [--quick] [--profile-edge FILE.prof] [--profile-cloud FILE.prof]

`--profile-*` runs that daemon under cProfile (written when it stops); its figures are then not comparable.
Last lines: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import select
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
import grpc
import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.edgesync import (  # noqa: E402
    NODE,
    Daemon,
    Rig,
    cloud_tls,
    cpu_seconds,
    expect_json,
    percentile,
    rss_mib,
    settle,
    write_configs,
)
from common.hostsvc.process import stop_from_pidfile  # noqa: E402
from edgecore.dmi.generate import MAPPER_SERVICE, PACKAGE, DMIProto, load_protocol  # noqa: E402
from tests.fixtures.mosquitto import free_port  # noqa: E402

NS: Final = "default"
DEVICES: Final = 10
WINDOW: Final = 256
WARM_UP: Final = 20
QOS: Final = 0
DEVICE_API: Final = f"/apis/devices.kubeedge.io/v1beta1/namespaces/{NS}/devices"
MODEL_API: Final = f"/apis/devices.kubeedge.io/v1beta1/namespaces/{NS}/devicemodels"

ECHO: Final = """
import sys, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
host, port = sys.argv[1], int(sys.argv[2])
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-echo")
def on_connect(c, u, f, rc, p):
    c.subscribe("bench/echo/in", qos=0)
def on_subscribe(c, u, mid, rc, p):
    print("ready", flush=True)
client.on_connect, client.on_subscribe = on_connect, on_subscribe
client.on_message = lambda c, u, m: c.publish("bench/echo/out", m.payload, qos=0)
client.connect(host, port)
client.loop_forever()
"""


def topic(device: str, suffix: str) -> str:
    return f"$hw/events/device/{NS}/{device}/{suffix}"


def model() -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "bench-model", "namespace": NS},
            "spec": {"protocol": "bench", "properties": [
                {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
                {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"}]}}


def device(name: str) -> dict[str, Any]:
    return {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": {"name": name, "namespace": NS},
            "spec": {"deviceModelRef": {"name": "bench-model"}, "nodeName": NODE,
                     "protocol": {"protocolName": "bench"},
                     "properties": [{"name": "temperature", "reportToCloud": True},
                                    {"name": "setpoint", "desired": {"value": "0"}}]}}


def update(event_id: str, value: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "timestamp": 1, "twin": {
        "temperature": {"actual": {"value": value}, "metadata": {"type": "float"}}}})


# -- the mapper side -------------------------------------------------------------------------------------------

class Mapper:
    """A paho client in its own network thread. `expect(key)` gives a future resolved (on the event loop, with the
    perf_counter of arrival) by the first message whose `key_of` is `key`; `count_on` counts a topic's messages."""

    def __init__(self, host: str, port: int, subscriptions: list[str], key_of: Callable[[str, bytes], str | None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.key_of = key_of
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.count_topics: frozenset[str] = frozenset()
        self.on_count: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.connect(host, port)
        self.client.subscribe([(t, QOS) for t in subscriptions])
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("mapper client not subscribed")

    def expect(self, key: str) -> asyncio.Future[float]:
        future = self.loop.create_future()
        with self._lock:
            self.waiting[key] = future
        return future

    def publish(self, topic_name: str, payload: bytes) -> None:
        self.client.publish(topic_name, payload, qos=QOS)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        on_count = self.on_count
        if on_count is not None and message.topic in self.count_topics:
            self.loop.call_soon_threadsafe(on_count)
            return
        key = self.key_of(message.topic, bytes(message.payload))
        if key is None:
            return
        with self._lock:
            future = self.waiting.pop(key, None)
        if future is not None:
            self.loop.call_soon_threadsafe(_resolve, future, now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _resolve(future: asyncio.Future[float], when: float) -> None:
    if not future.done():
        future.set_result(when)


def event_key(_topic: str, payload: bytes) -> str | None:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    if "delta" in body:
        return f"delta:{(body.get('delta') or {}).get('setpoint')}"
    return str(body.get("event_id") or "") or None


async def round_trips(send: Callable[[str], None], mapper: Mapper, count: int, timeout: float = 10) -> list[float]:
    """ms of `count` request -> answer trips, one at a time, after WARM_UP unmeasured ones."""
    samples: list[float] = []
    for i in range(WARM_UP + count):
        key = uuid.uuid4().hex
        future = mapper.expect(key)
        began = time.perf_counter()
        send(key)
        arrived = await asyncio.wait_for(future, timeout)
        if i >= WARM_UP:
            samples.append((arrived - began) * 1000)
    return samples


async def throughput(send: Callable[[int], None], mapper: Mapper, answer_topics: set[str], count: int,
                     timeout: float = 120) -> float:
    """Messages per second: `count` sends with at most WINDOW unanswered, first send -> last answer (an answer is
    any message on `answer_topics`; not parsed)."""
    window = asyncio.Semaphore(WINDOW)
    done = asyncio.Event()
    answered = 0

    def on_answer() -> None:
        nonlocal answered
        answered += 1
        window.release()
        if answered >= count:
            done.set()

    mapper.count_topics, mapper.on_count = frozenset(answer_topics), on_answer
    try:
        began = time.perf_counter()
        for i in range(count):
            await asyncio.wait_for(window.acquire(), timeout)
            send(i)
        await asyncio.wait_for(done.wait(), timeout)
        return count / (time.perf_counter() - began)
    finally:
        mapper.count_topics, mapper.on_count = frozenset(), None


# -- a DMI mapper ----------------------------------------------------------------------------------------------

class DMIMapper:
    """A minimal DeviceMapperService on a unix socket, registered with edgecore over DMI: records when each
    (device name, desired `setpoint`) first arrives (RegisterDevice or UpdateDevice); answers every call OK."""

    def __init__(self, socket: Path, edgecore_socket: Path) -> None:
        self.socket, self.edgecore_socket = socket, edgecore_socket
        self.proto: DMIProto = load_protocol()
        self.seen: dict[tuple[str, str], float] = {}
        self.changed = asyncio.Event()
        self.server = grpc.aio.server()
        handlers = {m.name: grpc.unary_unary_rpc_method_handler(
            self._handler(m.name), request_deserializer=m.request.FromString,
            response_serializer=m.response.SerializeToString) for m in self.proto.service_methods(MAPPER_SERVICE)}
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(f"{PACKAGE}.{MAPPER_SERVICE}", handlers),))

    def _handler(self, rpc: str) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
        async def handle(request: Any, _context: grpc.aio.ServicerContext) -> Any:
            now = time.perf_counter()
            if rpc in ("RegisterDevice", "UpdateDevice"):
                for prop in request.device.spec.properties:
                    if prop.name == "setpoint":
                        self.seen.setdefault((request.device.name, prop.desired.value), now)
                self.changed.set()
            return self.proto.methods[rpc].response()
        return handle

    async def start(self) -> int:
        """Serve, then register (withData); the number of devices edgecore answered with."""
        self.server.add_insecure_port(f"unix://{self.socket}")
        await self.server.start()
        method = self.proto.methods["MapperRegister"]
        info = self.proto.message("MapperInfo")(name="bench-mapper", version="v1", api_version="v1beta1",
                                                protocol="bench", address=str(self.socket).encode(), state="ok")
        async with grpc.aio.insecure_channel(f"unix://{self.edgecore_socket}") as channel:
            call = channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                       response_deserializer=method.response.FromString)
            answer = await call(method.request(withData=True, mapper=info), timeout=10)
        now = time.perf_counter()
        for dev in answer.deviceList:
            for prop in dev.spec.properties:
                if prop.name == "setpoint":
                    self.seen.setdefault((dev.name, prop.desired.value), now)
        return len(answer.deviceList)

    async def wait(self, key: tuple[str, str], timeout: float) -> float:
        async with asyncio.timeout(timeout):
            while key not in self.seen:
                self.changed.clear()
                await self.changed.wait()
        return self.seen[key]

    async def stop(self) -> None:
        await self.server.stop(None)


# -- the run ---------------------------------------------------------------------------------------------------

class DeviceRig(Rig):
    """bench/edgesync.py's rig (control plane, cloudcore, edgecore) plus the device CRDs; edgecore in mqttMode 0."""

    def __init__(self, work: Path, edge_profile: Path | None, cloud_profile: Path | None) -> None:
        super().__init__(work, edge_profile)
        self.cloud = Daemon("cloudcore", work / "cloudcore.yaml", work / "cloudcore.log", cloud_profile)
        self.mqtt_port = free_port()

    @property
    def broker_pid(self) -> int:
        """The mosquitto edgecore started (its pidfile beside the edge database)."""
        return int((self.work / "edge" / "eventbus-broker" / "mosquitto.pid").read_text().split()[0])

    def start(self) -> None:
        self.plane.start()
        self.plane.kubectl("apply", "-R", "-f", str(ROOT / "config/crds"))
        self.plane.kubectl("wait", "--for=condition=established", "--timeout=30s",
                           "crd/objectsyncs.reliablesyncs.kubeedge.io",
                           "crd/clusterobjectsyncs.reliablesyncs.kubeedge.io",
                           "crd/devices.devices.kubeedge.io", "crd/devicemodels.devices.kubeedge.io")
        write_configs(self.work, self.plane, self.ports, "")
        self.cloud.start()

    async def start_edge(self) -> None:
        await self.cloud.wait_log('"websocket server listening"')
        token = base64.b64decode(self.plane.kubectl("get", "secret", "tokensecret", "-n", "kubeedge", "-o",
                                                    "jsonpath={.data.tokendata}").stdout).decode()
        write_configs(self.work, self.plane, self.ports, token)
        config = yaml.safe_load((self.work / "edgecore.yaml").read_text())
        config["modules"]["eventBus"] = {"mqttMode": 0, "mqttServerInternal": f"tcp://127.0.0.1:{self.mqtt_port}"}
        config["modules"]["deviceTwin"] = {"dmiSockPath": str(self.work / "dmi.sock")}
        (self.work / "edgecore.yaml").write_text(yaml.safe_dump(config))
        self.edge.start()
        await self.edge.wait_log('"connected to cloudcore"', timeout=60)
        await self.edge.wait_log('"mqtt connected"', timeout=30)

    def stop(self) -> None:
        try:
            super().stop()
        finally:  # edgecore stops its broker; if edgecore had to be killed, its pidfile still names it
            stop_from_pidfile(self.work / "edge" / "eventbus-broker" / "mosquitto.pid")


@contextlib.contextmanager
def echo_process(port: int) -> Any:
    proc = subprocess.Popen([sys.executable, "-c", ECHO, "127.0.0.1", str(port)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 15)
        ready = proc.stdout.readline() if readable else ""  # the echo prints "ready" once subscribed
        if ready.strip() != "ready":
            raise RuntimeError(f"echo process not ready within 15 s: {ready!r}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def api(cloud: aiohttp.ClientSession, method: str, url: str, body: Any, content_type: str,
              *statuses: int) -> Any:
    async with cloud.request(method, url, data=orjson.dumps(body), headers={"Content-Type": content_type}) as response:
        return await expect_json(response, *statuses)


class DeviceWatch:
    """A cloud watch on the namespace's Devices: when each (device, reported temperature) was first seen."""

    def __init__(self, cloud: aiohttp.ClientSession, url: str) -> None:
        self.cloud, self.url = cloud, url
        self.seen: dict[tuple[str, str], float] = {}
        self.changed = asyncio.Event()
        self.opened = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        rv = ""
        while True:
            params = {"watch": "1", **({"resourceVersion": rv} if rv else {})}
            async with self.cloud.get(self.url, params=params,
                                      timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
                if response.status != 200:
                    raise RuntimeError(f"device watch: {response.status} {await response.text()}")
                self.opened.set()
                async for line in response.content:
                    now = time.perf_counter()
                    event = orjson.loads(line)
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    name = (obj.get("metadata") or {}).get("name", "")
                    for twin in (obj.get("status") or {}).get("twins") or []:
                        if twin.get("propertyName") == "temperature":
                            key = (name, str((twin.get("reported") or {}).get("value")))
                            self.seen.setdefault(key, now)
                    self.changed.set()

    async def wait(self, key: tuple[str, str], timeout: float) -> float:
        async with asyncio.timeout(timeout):
            while key not in self.seen:
                if self.task is not None and self.task.done():
                    raise RuntimeError("the device watch ended") from self.task.exception()
                self.changed.clear()
                await self.changed.wait()
        return self.seen[key]


async def run(rig: DeviceRig, cloud: aiohttp.ClientSession, quick: bool, began_run: float) -> list[str]:
    rtts, updates, cloud_samples = (200, 4_000, 20) if quick else (1_000, 20_000, 100)
    loop = asyncio.get_running_loop()
    base = rig.plane.url
    await api(cloud, "POST", f"{base}{MODEL_API}", model(), "application/json", 201)
    names = [f"bench-{i}" for i in range(DEVICES)]
    for name in names:
        await api(cloud, "POST", f"{base}{DEVICE_API}", device(name), "application/json", 201)
    host, port = "127.0.0.1", rig.mqtt_port
    subscriptions = [topic("+", "twin/update/result"), topic("+", "twin/update/delta"), topic("+", "twin/get/result"),
                     "bench/echo/out"]
    mapper = Mapper(host, port, subscriptions, event_key, loop)
    try:
        # every device at the edge: a twin get answered without an error code
        deadline = time.monotonic() + 60
        for name in names:
            while True:
                key = uuid.uuid4().hex
                future = mapper.expect(key)
                mapper.publish(topic(name, "twin/get"), orjson.dumps({"event_id": key}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, 1)
                    if _at_edge(rig, name):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"device {name} not at the edge within 60 s")
                await asyncio.sleep(0.2)
        waited = await settle([*rig.pids, rig.broker_pid])
        print(f"setup: mosquitto, control plane, cloudcore, edgecore up, {DEVICES} devices at the edge, "
              f"{time.monotonic() - began_run:.1f} s; settled in {waited:.1f} s; "
              f"edgecore RSS {rss_mib(rig.edge.pid):.1f} MB")

        # baseline: the bare paho echo through the same mosquitto
        with echo_process(port):
            base_rtt = await round_trips(lambda key: mapper.publish("bench/echo/in", orjson.dumps({"event_id": key})),
                                         mapper, rtts)
            payload = update("echo", "20.5")
            base_rate = await throughput(lambda _i: mapper.publish("bench/echo/in", payload), mapper,
                                         {"bench/echo/out"}, updates)
        print(f"baseline (bare paho echo process, same mosquitto, QoS {QOS}): round trip p50 "
              f"{percentile(base_rtt, 50):.2f} ms, p99 {percentile(base_rtt, 99):.2f} ms ({rtts} after {WARM_UP}); "
              f"{base_rate:,.0f} msgs/s with {WINDOW} in flight ({updates:,} messages)")

        await settle(rig.pids)
        counter = itertools.count()
        twin_rtt = await round_trips(
            lambda key: mapper.publish(topic("bench-0", "twin/update"), update(key, f"{next(counter) % 500}.5")),
            mapper, rtts)
        print(f"twin update -> result: p50 {percentile(twin_rtt, 50):.2f} ms, p99 {percentile(twin_rtt, 99):.2f} ms, "
              f"max {max(twin_rtt):.2f} ms ({rtts} after {WARM_UP}, one at a time)")

        await settle(rig.pids)
        cpu_before = [cpu_seconds(pid) for pid in [*rig.pids, rig.broker_pid]]
        pre_encoded = [(topic(names[i % DEVICES], "twin/update"), update(f"tp-{i}", f"{i % 1000}.25"))
                       for i in range(updates)]
        results = {topic(name, "twin/update/result") for name in names}
        rate = await throughput(lambda i: mapper.publish(*pre_encoded[i]), mapper, results, updates)
        cpu = [cpu_seconds(pid) - before for pid, before in
               zip([*rig.pids, rig.broker_pid], cpu_before, strict=True)]
        print(f"twin updates: {rate:,.0f}/s over {DEVICES} devices, {WINDOW} in flight ({updates:,} updates); CPU s: "
              f"control plane {cpu[0]:.1f}, cloudcore {cpu[1]:.1f}, edgecore {cpu[2]:.1f}, mosquitto {cpu[3]:.1f}")

        await settle(rig.pids, timeout=30)
        desired: list[float] = []
        for i in range(WARM_UP // 4 + cloud_samples):
            value = str(100 + i)
            future = mapper.expect(f"delta:{value}")
            began = time.perf_counter()
            await api(cloud, "PATCH", f"{base}{DEVICE_API}/bench-1",
                      [{"op": "replace", "path": "/spec/properties/1/desired/value", "value": value}],
                      "application/json-patch+json", 200)
            arrived = await asyncio.wait_for(future, 10)
            if i >= WARM_UP // 4:
                desired.append((arrived - began) * 1000)
        print(f"cloud desired -> MQTT delta: p50 {percentile(desired, 50):.1f} ms, p99 {percentile(desired, 99):.1f} ms"
              f", max {max(desired):.1f} ms ({cloud_samples} after {WARM_UP // 4}; patch call made -> delta at the "
              f"mapper)")

        dmi = DMIMapper(rig.work / "bench-mapper.sock", rig.work / "dmi.sock")
        try:
            registered = await dmi.start()
            await dmi.wait(("bench-3", "0"), 10)  # bench-3 as created: the mapper holds it
            await settle(rig.pids, timeout=30)
            to_mapper: list[float] = []
            for i in range(WARM_UP // 4 + cloud_samples):
                value = str(300 + i)
                began = time.perf_counter()
                await api(cloud, "PATCH", f"{base}{DEVICE_API}/bench-3",
                          [{"op": "replace", "path": "/spec/properties/1/desired/value", "value": value}],
                          "application/json-patch+json", 200)
                arrived = await dmi.wait(("bench-3", value), 10)
                if i >= WARM_UP // 4:
                    to_mapper.append((arrived - began) * 1000)
        finally:
            await dmi.stop()
        print(f"cloud desired -> mapper (DMI UpdateDevice): p50 {percentile(to_mapper, 50):.1f} ms, "
              f"p99 {percentile(to_mapper, 99):.1f} ms, max {max(to_mapper):.1f} ms ({cloud_samples} after "
              f"{WARM_UP // 4}; patch call made -> UpdateDevice with the new value at a mapper registered over DMI "
              f"with {registered} devices)")

        watch = DeviceWatch(cloud, f"{base}{DEVICE_API}")
        watch.task = asyncio.create_task(watch.run())
        try:
            await asyncio.wait_for(watch.opened.wait(), 30)
            reported: list[float] = []
            for i in range(WARM_UP // 4 + cloud_samples):
                value = f"{700 + i}.5"
                began = time.perf_counter()
                mapper.publish(topic("bench-2", "twin/update"), update(f"rep-{i}", value))
                arrived = await watch.wait(("bench-2", value), 10)
                if i >= WARM_UP // 4:
                    reported.append((arrived - began) * 1000)
        finally:
            watch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch.task
        print(f"reported -> cloud status: p50 {percentile(reported, 50):.1f} ms, "
              f"p99 {percentile(reported, 99):.1f} ms, max {max(reported):.1f} ms ({cloud_samples} after "
              f"{WARM_UP // 4}; MQTT publish -> Device watch event)")
        print(f"rss: edgecore {rss_mib(rig.edge.pid):.1f} MB, cloudcore {rss_mib(rig.cloud.pid):.1f} MB")
    finally:
        mapper.close()
    return [
        f"devices_mqtt_baseline_rtt_p50: {percentile(base_rtt, 50):.2f} ms (target none)",
        f"devices_mqtt_baseline_rtt_p99: {percentile(base_rtt, 99):.2f} ms (target none)",
        f"devices_twin_rtt_p50: {percentile(twin_rtt, 50):.2f} ms (target none)",
        f"devices_twin_rtt_p99: {percentile(twin_rtt, 99):.2f} ms (target <= 20 ms)",
        f"devices_mqtt_baseline_msgs_per_s: {base_rate:,.0f} msgs/s (target none)",
        f"devices_twin_updates_per_s: {rate:,.0f} updates/s (target >= 2,000 updates/s)",
        f"devices_desired_to_delta_p50: {percentile(desired, 50):.1f} ms (target none)",
        f"devices_desired_to_delta_p99: {percentile(desired, 99):.1f} ms (target none)",
        f"devices_desired_to_mapper_p50: {percentile(to_mapper, 50):.1f} ms (target none)",
        f"devices_desired_to_mapper_p99: {percentile(to_mapper, 99):.1f} ms (target <= 500 ms)",
        f"devices_reported_to_status_p50: {percentile(reported, 50):.1f} ms (target none)",
        f"devices_reported_to_status_p99: {percentile(reported, 99):.1f} ms (target <= 2000 ms)",
    ]


def _at_edge(rig: DeviceRig, name: str) -> bool:
    """Whether the edge knows the device (its `device` table; a twin get is answered 404 otherwise)."""
    db = rig.work / "edge" / "edgecore.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            return bool(list(conn.execute('SELECT 1 FROM "device" WHERE id = ?', (f"{NS}/{name}",))))
        except sqlite3.OperationalError:
            return False


async def measure(quick: bool, edge_profile: Path | None, cloud_profile: Path | None) -> list[str]:
    began_run = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="devices-bench-") as scratch:
        rig = DeviceRig(Path(scratch), edge_profile, cloud_profile)
        try:
            rig.start()
            await rig.start_edge()
            connector = aiohttp.TCPConnector(limit=4, ssl=cloud_tls(rig.plane))
            async with aiohttp.ClientSession(connector=connector) as cloud:
                return await run(rig, cloud, quick, began_run)
        finally:
            rig.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples: under 60 s")
    parser.add_argument("--profile-edge", type=Path, metavar="FILE", help="run edgecore under cProfile")
    parser.add_argument("--profile-cloud", type=Path, metavar="FILE", help="run cloudcore under cProfile")
    args = parser.parse_args()
    lines = asyncio.run(measure(args.quick, args.profile_edge.resolve() if args.profile_edge else None,
                                args.profile_cloud.resolve() if args.profile_cloud else None))
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
