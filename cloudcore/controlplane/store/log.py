"""The durable log: every committed revision as one row of a SQLite table (the kine idea).

Owns the SQLite file and the one thread that touches it. It never decides anything about objects:
the store hands it finished rows (revision, key, tombstone flag, JSON bytes) and reads them back.

Tables:
  log(rv INTEGER PRIMARY KEY, gr, namespace, name, deleted, data)  one row per revision; a delete
      is a tombstone row whose data is the object's last state stamped with the delete's revision.
  meta(key, value)  `floor`: the compaction floor (rows at or below it are only the latest live
      row per key); `rv`: the highest revision ever written, so the counter survives a compaction
      that deleted the row holding it.

Threading: stdlib sqlite3 on ONE dedicated thread (a single-worker executor); the connection is
opened on that thread and used nowhere else. aiosqlite would also give one thread per connection,
but it adds a queue hop and a future per statement; the store's group commit makes exactly one
call per batch (BEGIN, one executemany, COMMIT), so a plain executor is the leaner shell. The same
thread runs compaction steps, so appends and compaction are serialised without any lock.

Durability: WAL mode. With synchronous=FULL every COMMIT fsyncs the WAL: a returned append survives
power loss. With NORMAL the WAL is fsynced only at checkpoints: a returned append survives a crash
or kill -9 of the process (the bytes are in the OS page cache) but the last ones may be lost on
power loss. Either way a commit that failed was rolled back and nothing of it is visible.

Cancelling a coroutine awaiting one of these calls does not stop the statement already running on
the thread; the calls after it simply queue behind it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

_T = TypeVar("_T")

SYNCHRONOUS_MODES: Final = frozenset({"FULL", "NORMAL"})
# The WAL is truncated back to this size after a checkpoint, so one burst does not leave it huge.
_JOURNAL_SIZE_LIMIT: Final = 64 * 1024 * 1024

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS log (rv INTEGER PRIMARY KEY, gr TEXT NOT NULL, namespace TEXT NOT NULL,"
    " name TEXT NOT NULL, deleted INTEGER NOT NULL, data BLOB NOT NULL)",
    # Finds the rows of one key in revision order: for loading the latest row per key and compaction.
    "CREATE INDEX IF NOT EXISTS log_key ON log (gr, namespace, name, rv)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('floor', 0), ('rv', 0)",
)
_INSERT: Final = "INSERT INTO log (rv, gr, namespace, name, deleted, data) VALUES (?, ?, ?, ?, ?, ?)"
_COLUMNS: Final = "rv, gr, namespace, name, deleted, data"
_STATE_AT: Final = (
    f"SELECT {_COLUMNS} FROM log WHERE deleted = 0 AND rv IN"
    " (SELECT max(rv) FROM log WHERE rv <= ? GROUP BY gr, namespace, name) ORDER BY rv"
)
_HISTORY_AFTER: Final = f"SELECT {_COLUMNS} FROM log WHERE rv > ? ORDER BY rv"
# Compaction of the revisions (lo, hi], where everything at or below lo is already compacted:
# the row just before each row of the range is superseded (this reaches the one surviving row
# below lo too), and a tombstone in the range is not needed once the rows before it are gone.
# The latest row at or below hi of a live key stays, so a reload still tells MODIFIED from ADDED.
_DELETE_SUPERSEDED: Final = (
    "DELETE FROM log WHERE rv IN (SELECT (SELECT max(prev.rv) FROM log AS prev"
    " WHERE prev.gr = cur.gr AND prev.namespace = cur.namespace AND prev.name = cur.name"
    " AND prev.rv < cur.rv) FROM log AS cur WHERE cur.rv > ? AND cur.rv <= ?)"
)
_DELETE_TOMBSTONES: Final = "DELETE FROM log WHERE rv > ? AND rv <= ? AND deleted = 1"


class LogRow(NamedTuple):
    """One revision as stored. `deleted` is 1 for a tombstone, else 0."""

    rv: int
    gr: str
    namespace: str
    name: str
    deleted: int
    data: bytes


class LogMeta(NamedTuple):
    floor: int  # compaction floor
    rv: int  # highest revision ever written


class SqliteLog:
    """The log file and its thread. Create with `await SqliteLog.open(...)`; `close()` when done."""

    def __init__(self, executor: ThreadPoolExecutor, connection: sqlite3.Connection) -> None:
        self._executor = executor
        self._connection = connection

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL") -> SqliteLog:
        """Open (creating if needed) the database at `path` in WAL mode."""
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}, not {synchronous!r}")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-sqlite")
        loop = asyncio.get_running_loop()
        try:
            connection = await loop.run_in_executor(executor, _connect, path, synchronous)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, connection)

    async def _run(self, call: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def read_meta(self) -> LogMeta:
        """The compaction floor and the highest revision written (from meta and from the rows)."""
        return await self._run(self._read_meta)

    async def read_state(self, at_rv: int) -> list[LogRow]:
        """The latest row of every key as of `at_rv`, tombstoned keys left out, in revision order."""
        return await self._run(lambda: self._select(_STATE_AT, at_rv))

    async def read_history(self, after_rv: int) -> list[LogRow]:
        """Every row above `after_rv`, in revision order."""
        return await self._run(lambda: self._select(_HISTORY_AFTER, after_rv))

    async def append(self, rows: Sequence[tuple[int, str, str, str, int, bytes]]) -> None:
        """Write `rows` (columns in LogRow order) in ONE transaction; durable when this returns."""
        await self._run(lambda: self._append(rows))

    async def compact(self, lo: int, hi: int) -> None:
        """Compact the revisions (lo, hi] in one transaction and record `hi` as the floor.

        `lo` must be the current floor. Keeps, per key, only its latest row at or below `hi`,
        and not even that if it is a tombstone; rows above `hi` are untouched.
        """
        await self._run(lambda: self._compact(lo, hi))

    async def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL then) and stop the thread."""
        try:
            await self._run(self._connection.close)
        finally:
            self._executor.shutdown(wait=False)

    # The methods below run on the log's thread only.

    def _read_meta(self) -> LogMeta:
        meta = dict(self._connection.execute("SELECT key, value FROM meta").fetchall())
        (max_rv,) = self._connection.execute("SELECT coalesce(max(rv), 0) FROM log").fetchone()
        return LogMeta(floor=int(meta["floor"]), rv=max(int(meta["rv"]), int(max_rv)))

    def _select(self, query: str, rv: int) -> list[LogRow]:
        return [LogRow._make(row) for row in self._connection.execute(query, (rv,))]

    def _append(self, rows: Sequence[tuple[int, str, str, str, int, bytes]]) -> None:
        connection = self._connection
        connection.execute("BEGIN")
        try:
            connection.executemany(_INSERT, rows)
            connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise

    def _compact(self, lo: int, hi: int) -> None:
        connection = self._connection
        connection.execute("BEGIN")
        try:
            # Record the counter first: the row holding the highest revision may be a tombstone
            # this step deletes.
            connection.execute(
                "UPDATE meta SET value = max(value, (SELECT coalesce(max(rv), 0) FROM log)) WHERE key = 'rv'"
            )
            connection.execute(_DELETE_SUPERSEDED, (lo, hi))
            connection.execute(_DELETE_TOMBSTONES, (lo, hi))
            connection.execute("UPDATE meta SET value = ? WHERE key = 'floor'", (hi,))
            connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: the module never opens transactions behind our back; we BEGIN/COMMIT.
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot switch to WAL mode (got {mode})")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
        connection.execute("BEGIN")
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.execute("COMMIT")
    except BaseException:
        connection.close()
        raise
    return connection


def _rollback(connection: sqlite3.Connection) -> None:
    # SQLite may already have rolled back by itself (e.g. on SQLITE_FULL); then there is nothing to do.
    if connection.in_transaction:
        connection.execute("ROLLBACK")
