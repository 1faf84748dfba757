"""MetaServer's read side of the edge database: its own read-only SQLite connection (WAL readers never
block MetaManager's writer), objects from `meta`, changes from `meta_events`.

ResourceVersions are the cloud's (global, increasing integers), so the store's "current" version is
the highest one it has applied: the newest logged change, or, for rows stored before the log existed
(or trimmed out of it), the highest RV among the objects when this reader opened (`floor`).

Where a watch resumes (`replay`): a watch from RV X wants every change after the one that carried X.
The log is in commit order, which is the cloud's order per key but not necessarily across keys (a
late change of key B may carry a lower RV than an earlier change of key A), so the position is the
log row that carries X, not "every row with rv > X": both the RV of a list and the RV of the last
event a client saw name such a row. Without a row for X: X at or above the current RV resumes at the
end; X older than everything logged is 410 Expired (the changes in between are gone); otherwise the
replay starts at the first row newer than X.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiosqlite

from edgecore.metamanager.events import MetaEvent

_BUSY_TIMEOUT_MS: Final = 10_000


class Expired(Exception):
    """The requested resourceVersion is older than the event log reaches."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Rows (key, value JSON) of one type, and where the log was when they were read."""

    rows: list[tuple[str, str]]
    seq: int
    rv: int


@dataclass(frozen=True, slots=True)
class TypedSnapshot:
    """Rows (key, value JSON, whether the value has apiVersion and kind) and the log position."""

    rows: list[tuple[str, str, bool]]
    seq: int
    rv: int


@dataclass(frozen=True, slots=True)
class Replay:
    """Logged events of one type after the requested resourceVersion, up to and including `seq`."""

    events: list[MetaEvent]
    seq: int


class StoreReader:
    """Consistent reads of the edge store; statements that must see one snapshot share a transaction,
    and the lock keeps concurrent requests from interleaving on the one connection."""

    def __init__(self, db: aiosqlite.Connection, floor: int) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self.floor = floor

    @classmethod
    async def open(cls, path: Path) -> StoreReader:
        """Open the database MetaStore has created (its tables must exist)."""
        db = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            rows = await db.execute_fetchall(
                "SELECT max(CAST(json_extract(value, '$.metadata.resourceVersion') AS INTEGER)) FROM meta "
                "WHERE json_valid(value)")
        except BaseException:
            await db.close()
            raise
        floor = next(iter(rows))[0]
        return cls(db, int(floor or 0))

    async def close(self) -> None:
        await self._db.close()

    async def get(self, key: str) -> str | None:
        # under the lock too: outside it, this read could land inside another request's (older) snapshot
        async with self._lock:
            rows = await self._db.execute_fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        return next((value for (value,) in rows), None)

    async def _position(self) -> tuple[int, int]:
        rows = await self._db.execute_fetchall("SELECT coalesce(max(seq), 0), max(rv) FROM meta_events")
        seq, rv = next(iter(rows))
        return int(seq), max(self.floor, int(rv or 0))

    async def snapshot(self, store_type: str, namespace: str | None, after_key: str = "") -> Snapshot:
        """Objects of `store_type` (in `namespace`, the `meta` key's namespace token, if given) by key,
        those after `after_key` only when it is given, with the log position they reflect."""
        rows, seq, rv = await self._select("key, value", store_type, namespace, after_key)
        return Snapshot([(key, value) for key, value in rows if value is not None], seq, rv)

    async def typed_snapshot(self, store_type: str, namespace: str | None) -> TypedSnapshot:
        """As `snapshot`, each value flagged when it already carries apiVersion and kind, so that a plain
        LIST can send the stored JSON as it is (parsing 5,000 pods was most of such a LIST's time)."""
        rows, seq, rv = await self._select(
            "key, value, json_extract(value, '$.apiVersion') IS NOT NULL AND json_extract(value, '$.kind') IS NOT NULL",
            store_type, namespace, "")
        return TypedSnapshot([(key, value, bool(typed)) for key, value, typed in rows if value is not None], seq, rv)

    async def _select(self, columns: str, store_type: str, namespace: str | None,
                      after_key: str) -> tuple[list[Any], int, int]:
        where, params = "type = ?", [store_type]
        if namespace is not None:
            where += " AND key >= ? AND key < ?"
            params += [f"{namespace}/", f"{namespace}0"]  # '0' follows '/': exactly the keys "<namespace>/..."
        if after_key:
            where += " AND key > ?"
            params.append(after_key)
        async with self._lock:
            await self._db.execute("BEGIN")
            try:
                seq, rv = await self._position()
                rows = await self._db.execute_fetchall(
                    f"SELECT {columns} FROM meta WHERE {where} ORDER BY key", params)
            finally:
                await self._db.execute("COMMIT")
        return list(rows), seq, rv

    async def replay(self, store_type: str, since: int) -> Replay:
        """Logged events of `store_type` after resourceVersion `since` (see the module doc); Expired when
        the log no longer reaches back to it."""
        async with self._lock:
            await self._db.execute("BEGIN")
            try:
                seq, current = await self._position()
                start = await self._start(since, seq, current)
                rows = await self._db.execute_fetchall(
                    "SELECT seq, key, type, event, rv, value FROM meta_events WHERE seq > ? AND seq <= ? "
                    "AND type = ? ORDER BY seq", (start, seq, store_type))
            finally:
                await self._db.execute("COMMIT")
        return Replay([MetaEvent(*row) for row in rows], seq)

    async def _start(self, since: int, seq: int, current: int) -> int:
        """The log seq after which a watch from `since` resumes."""
        exact = await self._scalar("SELECT min(seq) FROM meta_events WHERE rv = ?", since)
        if exact is not None:
            return exact
        if since >= current:
            return seq
        oldest = await self._scalar("SELECT min(rv) FROM meta_events", None)
        if oldest is None or since < oldest:
            raise Expired(f"too old resource version: {since} ({oldest or current})")
        newer = await self._scalar("SELECT min(seq) FROM meta_events WHERE rv > ?", since)
        return seq if newer is None else newer - 1

    async def _scalar(self, sql: str, param: int | None) -> int | None:
        rows = await self._db.execute_fetchall(sql, () if param is None else (param,))
        value = next(iter(rows))[0]
        return None if value is None else int(value)
