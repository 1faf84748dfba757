"""Upstream's DeviceTwin tables in the edge database, and our table of cloud reports not yet acknowledged.

Tables (ref/devices-groups.md 2.1, column names as upstream's beego ORM makes them):
`device(id PK, name, description, state, last_online)`, `device_attr(id, deviceid, name, description, value,
optional, attr_type, metadata)`, `device_twin(id, deviceid, name, description, expected, actual, expected_meta,
actual_meta, expected_version, actual_version, optional, attr_type, metadata)`. `devicetwin_pending(key PK,
message)` is ours (as EdgeHub's `outbox`): twin/state reports for the cloud that survive a restart.
`devicetwin_mapper(name PK, protocol, address, version, api_version, state)` is ours too: the mappers registered
over DMI, so that edgecore can push device changes to them after a restart before they register again
(upstream keeps them in `meta` under `node/<node>/<ns>/devicemapper/<name>`; we keep DeviceTwin's state in
DeviceTwin's tables and MetaManager's `meta` for cloud objects only).

Everything is loaded at open (a node holds tens to thousands of devices). Device and twin changes are staged:
applied in memory at once, written by `commit` in one transaction with the pending-report rows: the statements
are built on the loop and run by the store's own database thread in ONE hand-off (aiosqlite made one per
statement, and each hand-off costs the loop a GIL round trip); a failed commit puts the devices in memory back
as they were. Mapper records are written at once. This object owns its sqlite3 connection (WAL,
synchronous=NORMAL, like the other edge stores) and that thread; the connection is used only from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from edgecore.devicetwin.twin import Twin, parse_ts, parse_version, ts_json
from edgecore.dmi.registry import MapperRecord

T = TypeVar("T")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS "device" (
        "id" varchar(64) NOT NULL PRIMARY KEY,
        "name" varchar(255), "description" varchar(255), "state" varchar(255), "last_online" varchar(255))""",
    """CREATE TABLE IF NOT EXISTS "device_attr" (
        "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
        "deviceid" varchar(64), "name" varchar(255), "description" varchar(255), "value" varchar(255),
        "optional" bool, "attr_type" varchar(255), "metadata" varchar(255))""",
    """CREATE TABLE IF NOT EXISTS "device_twin" (
        "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
        "deviceid" varchar(64), "name" varchar(255), "description" varchar(255),
        "expected" varchar(255), "actual" varchar(255), "expected_meta" varchar(255), "actual_meta" varchar(255),
        "expected_version" varchar(255), "actual_version" varchar(255), "optional" bool,
        "attr_type" varchar(255), "metadata" varchar(255))""",
    """CREATE TABLE IF NOT EXISTS devicetwin_pending (key TEXT PRIMARY KEY, message BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS devicetwin_mapper (
        name TEXT PRIMARY KEY, protocol TEXT NOT NULL, address TEXT NOT NULL,
        version TEXT NOT NULL DEFAULT '', api_version TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT '')""",
)
_MAPPER_COLUMNS: Final = ("name", "protocol", "address", "version", "api_version", "state")
_TWIN_COLUMNS: Final = ("description", "expected", "actual", "expected_meta", "actual_meta", "expected_version",
                        "actual_version", "optional", "attr_type", "metadata")
_TWIN_SET: Final = ", ".join(f'"{c}" = ?' for c in _TWIN_COLUMNS)
_TWIN_COLS: Final = ", ".join(f'"{c}"' for c in _TWIN_COLUMNS)
_TWIN_MARKS: Final = ", ".join("?" for _ in _TWIN_COLUMNS)
_UPDATE_TWIN: Final = f'UPDATE "device_twin" SET {_TWIN_SET} WHERE deviceid = ? AND name = ?'
_INSERT_TWIN: Final = f'INSERT INTO "device_twin" (deviceid, name, {_TWIN_COLS}) VALUES (?, ?, {_TWIN_MARKS})'


@dataclass(slots=True)
class Attr:
    value: str = ""
    optional: bool = True
    attr_type: str = ""
    metadata: str = ""
    description: str = ""


@dataclass(slots=True)
class Device:
    id: str
    name: str = ""
    description: str = ""
    state: str = ""
    last_online: str = ""
    attributes: dict[str, Attr] = field(default_factory=dict)
    twins: dict[str, Twin] = field(default_factory=dict)

    def membership_view(self) -> dict[str, Any]:
        """id, name, description, state, last_online, attributes (membership get result; no twin)."""
        attrs = {k: {"value": a.value, "optional": a.optional, "metadata": {"type": a.attr_type} if a.attr_type else {}}
                 for k, a in self.attributes.items()}
        return {"id": self.id, "name": self.name, "description": self.description, "state": self.state,
                "last_online": self.last_online, "attributes": attrs}


def twin_row(twin: Twin) -> tuple[Any, ...]:
    """The device_twin columns of `_TWIN_COLUMNS` for a Twin."""
    return (twin.description, twin.expected, twin.actual, ts_json(twin.expected_ts), ts_json(twin.actual_ts),
            None if twin.expected_version is None else orjson.dumps(
                {"cloud": twin.expected_version[0], "edge": twin.expected_version[1]}).decode(),
            None if twin.actual_version is None else orjson.dumps(
                {"cloud": twin.actual_version[0], "edge": twin.actual_version[1]}).decode(),
            twin.optional, twin.attr_type, twin.metadata)


def twin_of_row(row: tuple[Any, ...]) -> Twin:
    (description, expected, actual, expected_meta, actual_meta, expected_version, actual_version, optional,
     attr_type, metadata) = row
    return Twin(expected=expected or None, actual=actual or None,
                expected_ts=parse_ts(expected_meta), actual_ts=parse_ts(actual_meta),
                expected_version=parse_version(expected_version) if expected_version else None,
                actual_version=parse_version(actual_version) if actual_version else None,
                optional=bool(optional), attr_type=attr_type or "", metadata=metadata or "",
                description=description or "")


Statements = list[tuple[str, list[tuple[Any, ...]]]]  # (SQL, parameter rows) run in order, then one commit


class DeviceTwinStore:
    """The three upstream tables plus `devicetwin_pending` and `devicetwin_mapper`. Owns its sqlite3 connection
    and the one worker thread that uses it: every database call is one hand-off to that thread."""

    def __init__(self, db: sqlite3.Connection, worker: ThreadPoolExecutor, devices: dict[str, Device],
                 pending: list[tuple[str, bytes]], mappers: dict[str, MapperRecord] | None = None) -> None:
        self._db = db
        self._worker = worker
        self.devices = devices
        self.pending_rows = pending
        self.mappers = mappers if mappers is not None else {}
        # the device_twin rows in the table, by device (an update of a twin not in it is an insert)
        self._rows: dict[str, set[str]] = {d.id: set(d.twins) for d in devices.values()}
        # staged since the last commit: each touched device as it was before, and what to write
        self._undo: dict[str, Device | None] = {}
        self._replaced: set[str] = set()  # added or removed: all its rows are rewritten
        self._states: set[str] = set()
        self._twins: dict[str, set[str]] = {}

    @classmethod
    async def open(cls, path: Path) -> DeviceTwinStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devicetwin-db")
        try:
            db, devices, pending, mappers = await asyncio.get_running_loop().run_in_executor(worker, _load, path)
        except BaseException:
            worker.shutdown(wait=False)
            raise
        return cls(db, worker, devices, pending, mappers)

    async def close(self) -> None:
        try:
            await self._run(self._db.close)
        finally:
            self._worker.shutdown(wait=False)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    # -- staged changes: applied in memory at once (later messages of a batch see them), written by `commit` ---
    def add_device(self, device: Device) -> None:
        self._touch(device.id)
        self._replaced.add(device.id)
        self.devices[device.id] = device

    def remove_device(self, device_id: str) -> None:
        self._touch(device_id)
        self._replaced.add(device_id)
        self.devices.pop(device_id, None)

    def update_state(self, device_id: str, state: str, last_online: str) -> None:
        self._touch(device_id)
        self._states.add(device_id)
        device = self.devices[device_id]
        device.state, device.last_online = state, last_online

    def save_twins(self, device_id: str, changed: dict[str, Twin], twins: dict[str, Twin]) -> None:
        """Adopt `twins` as the device's twins; the rows of `changed` are written at the commit."""
        self._touch(device_id)
        self._twins.setdefault(device_id, set()).update(changed)
        self.devices[device_id].twins = twins

    @property
    def staged(self) -> bool:
        return bool(self._undo)

    async def commit(self, pending: dict[str, bytes | None] | None = None) -> None:
        """Write the staged changes and `pending` rows (`devicetwin_pending`; None = delete) in one transaction.
        On a database error the transaction is rolled back, the devices in memory are put back as they were
        before the first staged change, and the error is raised."""
        if not self._undo and not pending:
            return
        try:
            await self._run(self._apply, self._statements(pending or {}))
        except sqlite3.Error:
            self._restore()
            raise
        for device_id in self._replaced:
            device = self.devices.get(device_id)
            if device is None:
                self._rows.pop(device_id, None)
            else:
                self._rows[device_id] = set(device.twins)
        for device_id, names in self._twins.items():
            if device_id not in self._replaced and device_id in self.devices:
                self._rows.setdefault(device_id, set()).update(names)
        self._clear()

    def rollback(self) -> None:
        """Forget the staged changes (nothing was written): the devices in memory are put back."""
        self._restore()

    def _touch(self, device_id: str) -> None:
        if device_id not in self._undo:
            device = self.devices.get(device_id)
            self._undo[device_id] = None if device is None else replace(
                device, twins=dict(device.twins), attributes=dict(device.attributes))

    def _restore(self) -> None:
        for device_id, before in self._undo.items():
            if before is None:
                self.devices.pop(device_id, None)
            else:
                self.devices[device_id] = before
        self._clear()

    def _clear(self) -> None:
        self._undo.clear()
        self._replaced.clear()
        self._states.clear()
        self._twins.clear()

    def _apply(self, statements: Statements) -> None:
        """In the worker thread: run `statements` and commit, or roll back and raise."""
        try:
            for sql, rows in statements:
                self._db.executemany(sql, rows)
            self._db.commit()
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            raise

    def _statements(self, pending: dict[str, bytes | None]) -> Statements:
        """The writes of the staged changes and `pending`, built from memory on the loop."""
        out: Statements = []
        if self._replaced:
            gone = [(d,) for d in self._replaced]
            out += [('DELETE FROM "device" WHERE id = ?', gone), ('DELETE FROM "device_attr" WHERE deviceid = ?', gone),
                    ('DELETE FROM "device_twin" WHERE deviceid = ?', gone)]
            added = [self.devices[d] for d in self._replaced if d in self.devices]
            out.append(('INSERT INTO "device" (id, name, description, state, last_online) VALUES (?, ?, ?, ?, ?)',
                        [(d.id, d.name, d.description, d.state, d.last_online) for d in added]))
            out.append((_INSERT_TWIN, [(d.id, n, *twin_row(t)) for d in added for n, t in d.twins.items()]))
        out.append(('UPDATE "device" SET state = ?, last_online = ? WHERE id = ?',
                    [(d.state, d.last_online, d.id) for i in self._states
                     if i not in self._replaced and (d := self.devices.get(i)) is not None]))
        updates: list[tuple[Any, ...]] = []
        inserts: list[tuple[Any, ...]] = []
        for device_id, names in self._twins.items():
            device = self.devices.get(device_id)
            if device_id in self._replaced or device is None:
                continue
            stored = self._rows.get(device_id, set())
            for name in names:
                twin = device.twins.get(name)
                if twin is None:
                    continue
                if name in stored:
                    updates.append((*twin_row(twin), device_id, name))
                else:
                    inserts.append((device_id, name, *twin_row(twin)))
        out += [(_UPDATE_TWIN, updates), (_INSERT_TWIN, inserts),
                ("INSERT OR REPLACE INTO devicetwin_pending (key, message) VALUES (?, ?)",
                 [(k, v) for k, v in pending.items() if v is not None]),
                ("DELETE FROM devicetwin_pending WHERE key = ?", [(k,) for k, v in pending.items() if v is None])]
        return [(sql, rows) for sql, rows in out if rows]

    async def save_mapper(self, mapper: MapperRecord) -> None:
        marks = ", ".join("?" for _ in _MAPPER_COLUMNS)
        await self._run(self._apply, [(
            f"INSERT OR REPLACE INTO devicetwin_mapper ({', '.join(_MAPPER_COLUMNS)}) VALUES ({marks})",
            [(mapper.name, mapper.protocol, mapper.address, mapper.version, mapper.api_version, mapper.state)])])
        self.mappers[mapper.name] = mapper

    async def remove_mapper(self, name: str) -> None:
        await self._run(self._apply, [("DELETE FROM devicetwin_mapper WHERE name = ?", [(name,)])])
        self.mappers.pop(name, None)


def _load(path: Path) -> tuple[sqlite3.Connection, dict[str, Device], list[tuple[str, bytes]],
                              dict[str, MapperRecord]]:
    """In the worker thread: connect (WAL, synchronous=NORMAL, as the other edge stores), create the tables, read
    everything."""
    db = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        for statement in _SCHEMA:
            db.execute(statement)
        db.commit()
        devices = {row[0]: Device(row[0], row[1] or "", row[2] or "", row[3] or "", row[4] or "")
                   for row in db.execute('SELECT id, name, description, state, last_online FROM "device" ORDER BY id')}
        for row in db.execute(
                'SELECT deviceid, name, value, optional, attr_type, metadata, description FROM "device_attr"'):
            if row[0] in devices:
                devices[row[0]].attributes[row[1]] = Attr(row[2] or "", bool(row[3]), row[4] or "", row[5] or "",
                                                          row[6] or "")
        for row in db.execute(f'SELECT deviceid, name, {_TWIN_COLS} FROM "device_twin" ORDER BY id'):
            if row[0] in devices:
                devices[row[0]].twins[row[1]] = twin_of_row(tuple(row[2:]))
        pending = [(k, bytes(m)) for k, m in db.execute("SELECT key, message FROM devicetwin_pending ORDER BY rowid")]
        mappers = {row[0]: MapperRecord(*row) for row in db.execute(
            f"SELECT {', '.join(_MAPPER_COLUMNS)} FROM devicetwin_mapper ORDER BY name")}
    except BaseException:
        db.close()
        raise
    return db, devices, pending, mappers
