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

Everything is loaded at open (a node holds tens to thousands of devices) and written through; each call is
one transaction on this object's own aiosqlite connection (WAL, like the other edge stores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiosqlite
import orjson

from edgecore.devicetwin.twin import Twin, parse_ts, parse_version, ts_json
from edgecore.dmi.registry import MapperRecord

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


class DeviceTwinStore:
    """The three upstream tables plus `devicetwin_pending` and `devicetwin_mapper`; owns its aiosqlite connection."""

    def __init__(self, db: aiosqlite.Connection, devices: dict[str, Device], pending: list[tuple[str, bytes]],
                 mappers: dict[str, MapperRecord] | None = None) -> None:
        self._db = db
        self.devices = devices
        self.pending_rows = pending
        self.mappers = mappers if mappers is not None else {}

    @classmethod
    async def open(cls, path: Path) -> DeviceTwinStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=10000")
            for statement in _SCHEMA:
                await db.execute(statement)
            await db.commit()
            devices = {
                row[0]: Device(row[0], row[1] or "", row[2] or "", row[3] or "", row[4] or "")
                for row in await db.execute_fetchall(
                    'SELECT id, name, description, state, last_online FROM "device" ORDER BY id')
            }
            for row in await db.execute_fetchall(
                    'SELECT deviceid, name, value, optional, attr_type, metadata, description FROM "device_attr"'):
                if row[0] in devices:
                    devices[row[0]].attributes[row[1]] = Attr(row[2] or "", bool(row[3]), row[4] or "", row[5] or "",
                                                              row[6] or "")
            cols = ", ".join(f'"{c}"' for c in _TWIN_COLUMNS)
            for row in await db.execute_fetchall(f'SELECT deviceid, name, {cols} FROM "device_twin" ORDER BY id'):
                if row[0] in devices:
                    devices[row[0]].twins[row[1]] = twin_of_row(tuple(row[2:]))
            pending = [(k, bytes(m)) for k, m in await db.execute_fetchall(
                "SELECT key, message FROM devicetwin_pending ORDER BY rowid")]
            mappers = {row[0]: MapperRecord(*row) for row in await db.execute_fetchall(
                f"SELECT {', '.join(_MAPPER_COLUMNS)} FROM devicetwin_mapper ORDER BY name")}
        except BaseException:
            await db.close()
            raise
        return cls(db, devices, pending, mappers)

    async def close(self) -> None:
        await self._db.close()

    async def add_device(self, device: Device) -> None:
        await self._db.execute(
            'INSERT OR REPLACE INTO "device" (id, name, description, state, last_online) VALUES (?, ?, ?, ?, ?)',
            (device.id, device.name, device.description, device.state, device.last_online))
        await self._write_twins(device.id, device.twins)
        await self._db.commit()
        self.devices[device.id] = device

    async def remove_device(self, device_id: str) -> None:
        await self._db.execute('DELETE FROM "device" WHERE id = ?', (device_id,))
        await self._db.execute('DELETE FROM "device_attr" WHERE deviceid = ?', (device_id,))
        await self._db.execute('DELETE FROM "device_twin" WHERE deviceid = ?', (device_id,))
        await self._db.commit()
        self.devices.pop(device_id, None)

    async def update_state(self, device_id: str, state: str, last_online: str) -> None:
        await self._db.execute('UPDATE "device" SET state = ?, last_online = ? WHERE id = ?',
                               (state, last_online, device_id))
        await self._db.commit()
        device = self.devices[device_id]
        device.state, device.last_online = state, last_online

    async def save_twins(self, device_id: str, changed: dict[str, Twin], twins: dict[str, Twin]) -> None:
        """Write the changed rows, then adopt `twins` as the device's twins (only after the commit)."""
        await self._write_twins(device_id, changed)
        await self._db.commit()
        self.devices[device_id].twins = twins

    async def _write_twins(self, device_id: str, changed: dict[str, Twin]) -> None:
        sets = ", ".join(f'"{c}" = ?' for c in _TWIN_COLUMNS)
        cols = ", ".join(f'"{c}"' for c in _TWIN_COLUMNS)
        marks = ", ".join("?" for _ in _TWIN_COLUMNS)
        for name, twin in changed.items():
            row = twin_row(twin)
            cursor = await self._db.execute(f'UPDATE "device_twin" SET {sets} WHERE deviceid = ? AND name = ?',
                                            (*row, device_id, name))
            if cursor.rowcount == 0:
                await self._db.execute(f'INSERT INTO "device_twin" (deviceid, name, {cols}) VALUES (?, ?, {marks})',
                                       (device_id, name, *row))

    async def sync_pending(self, rows: dict[str, bytes | None]) -> None:
        """Store (bytes) or forget (None) pending cloud reports by key, in one transaction."""
        if not rows:
            return
        for key, message in rows.items():
            if message is None:
                await self._db.execute("DELETE FROM devicetwin_pending WHERE key = ?", (key,))
            else:
                await self._db.execute("INSERT OR REPLACE INTO devicetwin_pending (key, message) VALUES (?, ?)",
                                       (key, message))
        await self._db.commit()

    async def save_mapper(self, mapper: MapperRecord) -> None:
        marks = ", ".join("?" for _ in _MAPPER_COLUMNS)
        await self._db.execute(f"INSERT OR REPLACE INTO devicetwin_mapper ({', '.join(_MAPPER_COLUMNS)}) "
                               f"VALUES ({marks})", (mapper.name, mapper.protocol, mapper.address, mapper.version,
                                                     mapper.api_version, mapper.state))
        await self._db.commit()
        self.mappers[mapper.name] = mapper

    async def remove_mapper(self, name: str) -> None:
        await self._db.execute("DELETE FROM devicetwin_mapper WHERE name = ?", (name,))
        await self._db.commit()
        self.mappers.pop(name, None)
