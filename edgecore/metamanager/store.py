"""The edge's object store: upstream's `meta` table in the edge SQLite database.

Owns the rows (`key` = the edge-side resource `<namespace>/<type>/<name>`, `type`, `value` = the object
JSON, as upstream's `edge/pkg/metamanager/dao`) and an in-memory index of each key's resourceVersion,
so that a re-sent or older object is recognised without reading its row. Writes come in batches, one
transaction each: the caller ACKs the cloud only after `apply` returns, so an ACKed object survives
a crash of edgecore (WAL; `synchronous=NORMAL` loses nothing on a process crash, only on power loss
within the last commit, like the control plane's default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiosqlite

from common.constants import ResourceType

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   VARCHAR(256) PRIMARY KEY NOT NULL,
    type  VARCHAR(32)  NOT NULL,
    value TEXT
)"""
_BUSY_TIMEOUT_MS: Final = 10_000


@dataclass(frozen=True, slots=True)
class MetaChange:
    """One object to write (`value` is its JSON) or, with `value` None, to delete."""

    key: str
    type: str
    value: str | None
    rv: int | None = None


def parse_rv(text: object) -> int | None:
    """A Kubernetes resourceVersion as an integer (the cloud's are uint64), None if it is not one."""
    return int(text) if isinstance(text, str) and text.isdigit() else None


class MetaStore:
    """The `meta` table and the resourceVersion index; one aiosqlite connection owned by this object."""

    def __init__(self, db: aiosqlite.Connection, rv_by_key: dict[str, int]) -> None:
        self._db = db
        self._rv_by_key = rv_by_key

    @classmethod
    async def open(cls, path: Path) -> MetaStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            await db.execute(_SCHEMA)
            await db.commit()
            rows = await db.execute_fetchall(
                "SELECT key, json_extract(value, '$.metadata.resourceVersion') FROM meta WHERE json_valid(value)")
        except BaseException:
            await db.close()
            raise
        index = {key: rv for key, text in rows if (rv := parse_rv(text)) is not None}
        return cls(db, index)

    async def close(self) -> None:
        await self._db.close()

    def __len__(self) -> int:
        return len(self._rv_by_key)

    def resource_version(self, key: str) -> int | None:
        return self._rv_by_key.get(key)

    def is_stale(self, change: MetaChange) -> bool:
        """An update whose resourceVersion is not newer than the stored one (a re-send, or out of date)."""
        return _stale(change, self._rv_by_key.get(change.key))

    async def apply(self, changes: Sequence[MetaChange]) -> list[bool]:
        """Write `changes` in order in one transaction; per change, whether it was written (False: stale).

        Several changes of one key in a batch collapse to the last fresh one before anything is written.
        """
        rv_now: dict[str, int | None] = {}
        final: dict[str, MetaChange] = {}
        written = []
        for change in changes:
            stored = rv_now[change.key] if change.key in rv_now else self._rv_by_key.get(change.key)
            fresh = not _stale(change, stored)
            written.append(fresh)
            if fresh:
                final[change.key] = change
                rv_now[change.key] = None if change.value is None else change.rv
        if final:
            await self._write(list(final.values()))
        for key, rv in rv_now.items():
            if rv is None:
                self._rv_by_key.pop(key, None)
            else:
                self._rv_by_key[key] = rv
        return written

    async def _write(self, changes: list[MetaChange]) -> None:
        deletes = [(key,) for change in changes if change.value is None for key in _keys_removed_with(change)]
        upserts = [(change.key, change.type, change.value) for change in changes if change.value is not None]
        try:
            if deletes:
                await self._db.executemany("DELETE FROM meta WHERE key = ?", deletes)
            if upserts:
                await self._db.executemany(
                    "INSERT INTO meta (key, type, value) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET type = excluded.type, value = excluded.value", upserts)
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise

    async def get(self, key: str) -> str | None:
        rows = await self._db.execute_fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        return next((value for (value,) in rows), None)

    async def list_type(self, resource_type: str, namespace: str = "") -> list[tuple[str, str]]:
        """(key, value) of every stored object of `resource_type`, in one namespace if given, by key."""
        if namespace:
            rows = await self._db.execute_fetchall(
                "SELECT key, value FROM meta WHERE type = ? AND key >= ? AND key < ? ORDER BY key",
                (resource_type, f"{namespace}/", f"{namespace}0"))
        else:
            rows = await self._db.execute_fetchall(
                "SELECT key, value FROM meta WHERE type = ? ORDER BY key", (resource_type,))
        return [(key, value) for key, value in rows]


def _stale(change: MetaChange, stored: int | None) -> bool:
    return change.value is not None and change.rv is not None and stored is not None and change.rv <= stored


def _keys_removed_with(change: MetaChange) -> list[str]:
    """A pod's delete also removes its `podpatch` row, as upstream does."""
    if change.type != ResourceType.POD:
        return [change.key]
    namespace, _, name = change.key.split("/", 2)
    return [change.key, f"{namespace}/{ResourceType.PODPATCH}/{name}"]
