"""MetaServer's own tables in the edge database (ours, not upstream's): what it keeps about the kinds the
node does not sync, so that it serves them across restarts and while the cloud is unreachable.

- `metaserver_discovery(name, value)`: the cloud's discovery bundle (row `cloud`), which resolves those
  kinds for kubectl offline too.
- `metaserver_scopes(key, watch)`: collections read from the cloud, by Application Key
  (`/apps/v1/deployments/<ns>`, or without a namespace for all of them / a cluster-scoped kind): a LIST
  there is served from the store when the cloud is away. `watch` = 1 for those a client watched: the
  node renews their subscriptions on every reconnect (upstream's SyncWatchAppOnConnected).

The objects themselves are rows of MetaManager's `meta` table. This connection writes only these two
small tables (WAL: MetaManager's writer waits at most the busy timeout for such a write, and vice versa);
everything is also held in memory, so checks never touch the disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import aiosqlite
import orjson

from common.application import Key

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS metaserver_discovery (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS metaserver_scopes (key TEXT PRIMARY KEY NOT NULL, watch INTEGER NOT NULL)",
)
_BUSY_TIMEOUT_MS: Final = 10_000
_CLOUD: Final = "cloud"


class CacheState:
    def __init__(self, db: aiosqlite.Connection, discovery: dict[str, Any] | None, scopes: dict[str, bool]) -> None:
        self._db = db
        self.discovery = discovery
        self._scopes = scopes  # key -> watched

    @classmethod
    async def open(cls, path: Path) -> CacheState:
        db = await aiosqlite.connect(path)
        try:
            await db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            for statement in _SCHEMA:
                await db.execute(statement)
            await db.commit()
            found = await db.execute_fetchall("SELECT value FROM metaserver_discovery WHERE name = ?", (_CLOUD,))
            scopes = await db.execute_fetchall("SELECT key, watch FROM metaserver_scopes")
        except BaseException:
            await db.close()
            raise
        discovery = next((orjson.loads(value) for (value,) in found), None)
        return cls(db, discovery if isinstance(discovery, dict) else None,
                   {key: bool(watch) for key, watch in scopes})

    async def close(self) -> None:
        await self._db.close()

    async def save_discovery(self, bundle: dict[str, Any]) -> None:
        self.discovery = bundle
        await self._write("INSERT INTO metaserver_discovery (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                          "SET value = excluded.value", (_CLOUD, orjson.dumps(bundle).decode()))

    def cached(self, key: Key) -> bool:
        """Whether the collection `key` (or the same kind across all namespaces) was read from the cloud."""
        return str(key.collection()) in self._scopes or str(key.everywhere()) in self._scopes

    def watched(self) -> list[Key]:
        return [Key.parse(key) for key, watch in self._scopes.items() if watch]

    async def remember(self, key: Key, *, watch: bool = False) -> None:
        """Note a collection read (or watched) from the cloud; a watch stays a watch."""
        text = str(key.collection())
        watch = watch or self._scopes.get(text, False)
        if self._scopes.get(text) == watch:
            return
        self._scopes[text] = watch
        await self._write("INSERT INTO metaserver_scopes (key, watch) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                          "SET watch = excluded.watch", (text, int(watch)))

    async def forget(self, key: Key) -> None:
        """Drop a collection the cloud no longer serves (e.g. its CRD is gone)."""
        text = str(key.collection())
        if self._scopes.pop(text, None) is not None:
            await self._write("DELETE FROM metaserver_scopes WHERE key = ?", (text,))

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            await self._db.execute(sql, params)
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise
