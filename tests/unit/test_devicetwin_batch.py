"""DeviceTwin's batches: the messages waiting in the mailbox are handled in one transaction (one commit), their
MQTT answers are published only after it, and a commit that fails undoes them in memory and answers with 500."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.bus import ModuleBus
from common.config.edgecore import DeviceTwin as DeviceTwinConfig
from common.constants import CLOUD_CONNECTED, RESOURCE_CLOUD_CONNECTION, EdgeModule, Group, Op
from common.message import Message, decode
from common.modules import ModuleContext
from edgecore.devicetwin import messages as m
from edgecore.devicetwin.module import BUS_SOURCE, DeviceTwinModule
from edgecore.devicetwin.store import Device, DeviceTwinStore, Statements

DEV = "default/thermo"


def mqtt(topic: str, body: dict[str, Any]) -> Message:
    return Message.new(source=BUS_SOURCE, group=Group.TWIN, operation=Op.RESPONSE, resource=m.encode_topic(topic),
                       content=orjson.dumps(body))


def update(i: int, prop: str = "temperature") -> Message:
    return mqtt(f"$hw/events/device/{DEV}/twin/update", {"event_id": f"e{i}", "twin": {
        prop: {"actual": {"value": f"{i}.5"}, "metadata": {"type": "float"}}}})


class Rig:
    def __init__(self, store: DeviceTwinStore) -> None:
        self.store = store
        self.bus = ModuleBus()
        self.published = self.bus.register("eventbus", Group.BUS)
        self.hub = self.bus.register(EdgeModule.EDGEHUB, Group.HUB)
        self.ctx = ModuleContext(self.bus, self.bus.register(EdgeModule.TWIN, Group.TWIN))
        self.now = 100.0
        self.twin = DeviceTwinModule(DeviceTwinConfig(), "edge-1", store, clock=lambda: self.now)
        self.commits = 0
        real = store._apply

        def counting(statements: Statements) -> None:  # in the store's database thread: one call per commit
            self.commits += 1
            real(statements)

        store._apply = counting  # type: ignore[method-assign]

    def results(self) -> list[dict[str, Any]]:
        out = []
        for message in self.published.take_ready(10_000):
            if message.resource.endswith("/twin/update/result"):
                out.append(message.content)
        return out


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    store = await DeviceTwinStore.open(tmp_path / "edge.db")
    rig = Rig(store)
    await rig.twin._handle_batch(rig.ctx, [Message.new(
        source="devicecontroller", group=Group.TWIN, operation=Op.UPDATE, resource="membership",
        content={"added_devices": [{"id": DEV, "name": "thermo"}], "removed_devices": []})])
    rig.published.take_ready(100)
    rig.commits = 0
    yield rig
    await store.close()


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


async def test_a_batch_is_one_commit_and_answered_after_it(rig: Rig, tmp_path: Path) -> None:
    batch = [update(i) for i in range(50)] + [update(50, "humidity")]
    await rig.twin._handle_batch(rig.ctx, batch)
    assert rig.commits == 1
    results = rig.results()
    assert [r["event_id"] for r in results] == [f"e{i}" for i in range(51)]
    assert all("code" not in r for r in results)
    db = tmp_path / "edge.db"
    assert rows(db, 'SELECT name, actual, actual_version FROM "device_twin" ORDER BY name') == [
        ("humidity", "50.5", '{"cloud":0,"edge":1}'), ("temperature", "49.5", '{"cloud":0,"edge":50}')]
    # one pending report: the latest of each twin
    [(raw,)] = rows(db, "SELECT message FROM devicetwin_pending")
    twin = decode(raw).content["twin"]
    assert (twin["temperature"]["actual"]["value"], twin["humidity"]["actual"]["value"]) == ("49.5", "50.5")


async def test_reports_go_one_at_a_time_per_device_while_connected(rig: Rig) -> None:
    connected = Message.new(source="edgehub", group=Group.META, operation=Op.CONNECT,
                            resource=RESOURCE_CLOUD_CONNECTION, content=CLOUD_CONNECTED)
    await rig.twin._handle_batch(rig.ctx, [connected, update(1)])
    [first] = rig.hub.take_ready(10)
    await rig.twin._handle_batch(rig.ctx, [update(2)])
    await rig.twin._handle_batch(rig.ctx, [update(3)])
    assert rig.hub.take_ready(10) == []  # the first report is not answered yet
    answer = Message.new(source="devicecontroller", group=Group.TWIN, operation=Op.RESPONSE, resource="twin",
                         content="OK", parent_msg_id=first.msg_id)
    rig.now += 1.0  # past the hot device's interval: the answer releases the next report at once
    await rig.twin._handle_batch(rig.ctx, [answer])
    [second] = rig.hub.take_ready(10)
    assert second.content["twin"]["temperature"]["actual"]["value"] == "3.5"


async def test_a_failed_commit_is_undone_and_answered_with_500(rig: Rig, tmp_path: Path) -> None:
    await rig.twin._handle_batch(rig.ctx, [update(1)])
    rig.results()
    before = rig.store.devices[DEV].twins
    pending_before = rig.twin.pending.unacknowledged(f"{DEV}/twin")

    def failing(_statements: Statements) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    rig.store._apply = failing  # type: ignore[method-assign, assignment]
    await rig.twin._handle_batch(rig.ctx, [update(2), update(3)])
    results = rig.results()  # the batch, then each message alone: all fail
    assert [(r["event_id"], r["code"]) for r in results] == [("e2", 500), ("e3", 500)]
    assert rig.store.devices[DEV].twins == before
    assert rig.twin.pending.unacknowledged(f"{DEV}/twin") == pending_before
    assert rows(tmp_path / "edge.db", 'SELECT actual FROM "device_twin"') == [("1.5",)]


async def test_store_rollback_restores_devices(tmp_path: Path) -> None:
    store = await DeviceTwinStore.open(tmp_path / "edge.db")
    try:
        store.add_device(Device("default/a", "a"))
        await store.commit()
        store.update_state("default/a", "online", "now")
        store.remove_device("default/a")
        store.add_device(Device("default/b", "b"))
        assert store.staged
        store.rollback()
        assert list(store.devices) == ["default/a"] and store.devices["default/a"].state == ""
        assert not store.staged
        store.remove_device("default/a")
        await store.commit()
    finally:
        await store.close()
    reopened = await DeviceTwinStore.open(tmp_path / "edge.db")
    try:
        assert reopened.devices == {}
    finally:
        await reopened.close()
