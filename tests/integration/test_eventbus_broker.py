"""EventBus mqttMode 0 and 1 with the real mosquitto binary: the internal broker edgecore starts, owns, restarts
when it dies and stops by PID; mode 1 uses both brokers; clear errors for a missing binary or a taken port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from common.bus import ModuleBus
from common.config.edgecore import EventBus as EventBusConfig
from common.config.edgecore import EventBusTLS
from common.constants import EdgeModule, Group, Op
from common.hostsvc.process import PidRecord, pid_alive, pid_runs
from common.message import Message
from common.modules import run_modules
from edgecore.eventbus import broker as broker_mod
from edgecore.eventbus.broker import BrokerError, BrokerSpec, InternalBroker
from edgecore.eventbus.module import EventBusModule
from tests.fixtures.mosquitto import Broker, free_port, make_test_certs
from tests.fixtures.paths import require_binary
from tests.integration.test_devicetwin import Mapper
from tests.integration.test_eventbus import Recorder

WAIT = 10.0


@contextlib.asynccontextmanager
async def running(config: EventBusConfig, db: Path,
                  ) -> AsyncIterator[tuple[ModuleBus, EventBusModule, Recorder, Recorder]]:
    """EventBus (and a stand-in DeviceTwin) running until every client is connected; stopped on exit."""
    require_binary("mosquitto")
    bus = ModuleBus()
    eventbus = EventBusModule(config, "edge-1", db)
    twin = Recorder(EdgeModule.TWIN, Group.TWIN)
    hub = Recorder(EdgeModule.EDGEHUB, Group.HUB)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_modules(bus, [eventbus, twin, hub], stop))
    try:
        async with asyncio.timeout(WAIT):
            while len(eventbus.clients) < len(eventbus.servers()):
                assert not runner.done(), "eventbus stopped while starting"
                await asyncio.sleep(0.02)
            for clients in eventbus.clients:
                await clients.sub.connected.wait()
                await clients.pub.connected.wait()
        await asyncio.sleep(0.3)  # the SUBACKs
        yield bus, eventbus, twin, hub
    finally:
        stop.set()
        await asyncio.wait_for(runner, WAIT)


def internal_url(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def publish(bus: ModuleBus, topic: str, content: object) -> asyncio.Future[None]:
    return asyncio.ensure_future(bus.send_to_group(Group.BUS, Message.new(
        source="twin", group=Group.BUS, operation=Op.PUBLISH, resource=topic, content=content)))


async def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


async def test_mode0_starts_its_broker_restarts_it_when_killed_and_stops_it(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "edge" / "edgecore.db"
    config = EventBusConfig.model_validate({"mqttMode": 0, "mqttServerInternal": internal_url(port),
                                            "mqttSessionQueueSize": 50})
    async with running(config, db) as (bus, eventbus, twin, _hub):
        broker = eventbus.broker
        assert broker is not None and broker.pid is not None
        first_pid = broker.pid
        directory = db.parent / "eventbus-broker"
        assert directory.stat().st_mode & 0o777 == 0o700
        conf = (directory / "mosquitto.conf").read_text()
        assert f"listener {port} 127.0.0.1\n" in conf and "max_queued_messages 50\n" in conf
        record = PidRecord.read(directory / "mosquitto.pid")
        assert record is not None and record.pid == first_pid
        assert pid_runs(first_pid, record.binary) and record.binary.endswith("mosquitto")
        assert [c.broker for c in eventbus.clients] == ["internal"]

        mapper = Mapper(Broker("127.0.0.1", port, directory / "mosquitto.log", first_pid), pattern="out/#")
        try:
            mapper.publish("$hw/events/device/ns/thermo/twin/update", {"event_id": "a"})
            await twin.wait(1)
            await publish(bus, "out/one", {"k": 1})
            assert await mapper.expect("out/one") == {"k": 1}
        finally:
            mapper.close()

        os.kill(first_pid, signal.SIGKILL)  # the broker dies: edgecore starts a new one
        await wait_until(lambda: broker.restarts == 1 and broker.pid is not None, "broker restarted", 15)
        assert broker.pid != first_pid and not pid_alive(first_pid)
        for clients in eventbus.clients:  # paho reconnects (its back-off starts at 1 s)
            await asyncio.wait_for(clients.sub.connected.wait(), 40)
            await asyncio.wait_for(clients.pub.connected.wait(), 40)
        await asyncio.sleep(0.3)
        mapper = Mapper(Broker("127.0.0.1", port, directory / "mosquitto.log", broker.pid), pattern="out/#")
        try:
            mapper.publish("$hw/events/device/ns/thermo/twin/get", {"event_id": "b"})
            await twin.wait(2)
            await publish(bus, "out/two", "after the restart")
            assert await mapper.expect("out/two") == b"after the restart"
        finally:
            mapper.close()
        last_pid = broker.pid
    # edgecore stopped: its broker is gone, by PID, and so is the pidfile
    assert last_pid is not None and not pid_alive(last_pid)
    assert not (db.parent / "eventbus-broker" / "mosquitto.pid").exists()
    assert not listening(port)


async def test_mode1_uses_the_internal_and_the_external_broker(mosquitto: Broker, tmp_path: Path) -> None:
    port = free_port()
    config = EventBusConfig.model_validate({"mqttMode": 1, "mqttServerInternal": internal_url(port),
                                            "mqttServerExternal": f"tcp://{mosquitto.host}:{mosquitto.port}"})
    async with running(config, tmp_path / "edgecore.db") as (bus, eventbus, twin, hub):
        assert [c.broker for c in eventbus.clients] == ["external", "internal"]
        assert eventbus.broker is not None and eventbus.broker.pid is not None
        internal = Broker("127.0.0.1", port, tmp_path / "eventbus-broker" / "mosquitto.log", eventbus.broker.pid)
        on_internal, on_external = Mapper(internal, pattern="both/#"), Mapper(mosquitto, pattern="both/#")
        try:
            on_internal.publish("$hw/events/device/ns/d/twin/update", {"event_id": "from-internal"})
            on_external.publish("$hw/events/device/ns/d/twin/update", {"event_id": "from-external"})
            received = await twin.wait(2)
            assert sorted(m.content for m in received) == ['{"event_id":"from-external"}',
                                                           '{"event_id":"from-internal"}']
            await publish(bus, "both/x", {"v": "to both"})
            assert await on_internal.expect("both/x") == {"v": "to both"}
            assert await on_external.expect("both/x") == {"v": "to both"}
            # a cloud subscription applies on both brokers
            await bus.send_to_group(Group.BUS, Message.new(source="edgecontroller", group=Group.USER,
                                                           operation=Op.SUBSCRIBE, resource="cloudsub/t"))
            await asyncio.sleep(0.3)
            on_internal.publish("cloudsub/t", b"i")
            on_external.publish("cloudsub/t", b"e")
            uploads = await hub.wait(2)
            assert sorted((m.resource, m.content) for m in uploads) == [("cloudsub/t", "e"), ("cloudsub/t", "i")]
        finally:
            on_internal.close()
            on_external.close()
    assert not listening(port)


async def test_missing_mosquitto_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(broker_mod, "_EXTRA_PATH", ())
    spec = BrokerSpec("127.0.0.1", free_port(), tmp_path / "b")
    with pytest.raises(BrokerError, match=r"'mosquitto' binary is not installed.*apt-get install mosquitto"):
        await InternalBroker(spec).start()
    # as a module: edgecore stops (exit code 1) instead of running without its broker
    bus = ModuleBus()
    config = EventBusConfig.model_validate({"mqttMode": 0, "mqttServerInternal": internal_url(spec.port)})
    code = await asyncio.wait_for(run_modules(bus, [EventBusModule(config, "edge-1", tmp_path / "e.db")],
                                              asyncio.Event()), WAIT)
    assert code == 1


async def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    require_binary("mosquitto")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"already listens on 127.0.0.1:{port}"):
            await InternalBroker(BrokerSpec("127.0.0.1", port, tmp_path / "b")).start()


async def test_a_broker_left_by_a_killed_edgecore_is_replaced(tmp_path: Path) -> None:
    require_binary("mosquitto")
    spec = BrokerSpec("127.0.0.1", free_port(), tmp_path / "b")
    crashed = InternalBroker(spec)
    await crashed.start()
    leftover = crashed.pid
    assert leftover is not None
    fresh = InternalBroker(spec)  # a new edgecore; the old one never ran its stop
    try:
        await fresh.start()
        assert fresh.pid is not None and fresh.pid != leftover
        await wait_until(lambda: not pid_alive(leftover), "the leftover broker stopped")
        assert listening(spec.port)
    finally:
        await fresh.stop()
        await crashed.stop()
    assert not listening(spec.port)


async def test_tls_internal_broker(state_dir: Path, tmp_path: Path) -> None:
    """ssl:// mqttServerInternal: a TLS listener with eventBusTLS's CA, certificate and key."""
    require_binary("openssl")
    certs = make_test_certs(state_dir / f"eventbus-tls-{free_port()}")
    port = free_port()
    config = EventBusConfig.model_validate({"mqttMode": 0, "mqttServerInternal": f"ssl://localhost:{port}"})
    config.event_bus_tls = EventBusTLS(enable=True, tls_mqtt_ca_file=str(certs.ca),
                                       tls_mqtt_cert_file=str(certs.cert), tls_mqtt_private_key_file=str(certs.key))
    async with running(config, tmp_path / "edgecore.db") as (_bus, eventbus, _twin, _hub):
        assert eventbus.broker is not None
        conf = eventbus.broker.spec.conf_path.read_text()
        assert f"listener {port} localhost\n" in conf and f"certfile {certs.cert}\n" in conf
        assert all(c.sub.connected.is_set() for c in eventbus.clients)
    assert not listening(port)


def test_broker_spec_and_config_from_edgecore_yaml() -> None:
    config = EventBusConfig.model_validate({"mqttMode": 1, "mqttServerInternal": "ssl://0.0.0.0:8884",
                                            "mqttSessionQueueSize": 7})
    spec = BrokerSpec.from_config(config, None)
    assert (spec.host, spec.port, spec.session_queue_size) == ("0.0.0.0", 8884, 7)
    assert spec.directory == Path("/var/lib/kubeedge/eventbus-broker")
    assert spec.tls is not None and spec.tls.cert == Path(config.event_bus_tls.tls_mqtt_cert_file)
    conf = broker_mod.render_conf(spec)
    assert "listener 8884 0.0.0.0\n" in conf and "set_tcp_nodelay true\n" in conf
    assert f"keyfile {spec.tls.key}\n" in conf and "allow_anonymous true\n" in conf
    plain = BrokerSpec.from_config(EventBusConfig(), Path("/data/edge/edgecore.db"))
    assert (plain.host, plain.port, plain.tls) == ("127.0.0.1", 1884, None)
    assert plain.conf_path == Path("/data/edge/eventbus-broker/mosquitto.conf")
    assert "cafile" not in broker_mod.render_conf(plain)
