"""The edge outbox on SQLite: `common.reliable.Outbox` plus one row per key in the edge database.

Every change to a key's newest message (put, ACK, drop by the bound) rewrites or deletes that key's
row before the call returns, so after a crash `open` rebuilds exactly the keys not yet ACKed, in their
first-put order (the row keeps its `seq` when its message is replaced), msg_ids kept. Table `outbox`
is ours; upstream keeps no edge-to-cloud state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import aiosqlite

from common.message import Message
from common.reliable import EnqueueResult, Outbox, OutboxRow, OutboxStats, Outgoing, RetryPolicy

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    key     TEXT NOT NULL UNIQUE,
    msg_id  TEXT NOT NULL,
    message BLOB NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0
)"""


class PersistentOutbox:
    """An `Outbox` whose unacknowledged keys survive restarts; owns its aiosqlite connection."""

    def __init__(self, db: aiosqlite.Connection, outbox: Outbox) -> None:
        self._db = db
        self.outbox = outbox

    @classmethod
    async def open(cls, path: Path, policy: RetryPolicy | None = None) -> PersistentOutbox:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=10000")
            await db.execute(_SCHEMA)
            await db.commit()
            rows = await db.execute_fetchall("SELECT key, msg_id, message, attempt FROM outbox ORDER BY seq")
            outbox = Outbox.from_rows([OutboxRow(k, m, bytes(b), a) for k, m, b, a in rows], policy)
        except BaseException:
            await db.close()
            raise
        return cls(db, outbox)

    async def close(self) -> None:
        await self._db.close()

    @property
    def stats(self) -> OutboxStats:
        return self.outbox.stats

    async def put(self, key: str, message: Message) -> EnqueueResult:
        result = self.outbox.put(key, message)
        await self._sync([key, *self.outbox.take_dropped()])
        return result

    async def ack(self, parent_msg_id: str) -> str | None:
        key = self.outbox.ack(parent_msg_id)
        if key is not None:
            await self._sync([key])
        return key

    def next_batch(self, now: float, limit: int) -> list[Outgoing]:
        return self.outbox.next_batch(now, limit)

    def next_deadline(self) -> float | None:
        return self.outbox.next_deadline()

    def disconnected(self) -> None:
        self.outbox.disconnected()

    async def _sync(self, keys: list[str]) -> None:
        for key in keys:
            row = self.outbox.row_of(key)
            if row is None:
                await self._db.execute("DELETE FROM outbox WHERE key = ?", (key,))
            else:
                await self._db.execute(
                    "INSERT INTO outbox (key, msg_id, message, attempt) VALUES (?, ?, ?, ?) ON CONFLICT(key) "
                    "DO UPDATE SET msg_id = excluded.msg_id, message = excluded.message, attempt = excluded.attempt",
                    (row.key, row.msg_id, row.message, row.attempt))
        await self._db.commit()
