"""The edge's object store: upstream's `meta` table in the edge SQLite database, plus its change log.

Owns the rows (`key` = the edge-side resource `<namespace>/<type>/<name>`, `type`, `value` = the object
JSON, as upstream's `edge/pkg/metamanager/dao`) and an in-memory index of every key with its
resourceVersion, so that a re-sent or older object is recognised without reading its row. Writes come
in batches, one transaction each: the caller ACKs the cloud only after `apply` returns, so an ACKed
object survives a crash of edgecore (WAL; `synchronous=NORMAL` loses nothing on a process crash, only
on power loss within the last commit, like the control plane's default).

The same transaction appends one row per change to `meta_events` (ours, not upstream's: MetaServer's
watches replay it, also across a restart of edgecore) and trims it to the newest `event_log_limit`
rows. `apply` returns the logged events, so the caller can publish them once they are committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiosqlite
import orjson

from common.constants import ResourceType
from edgecore.metamanager.events import ADDED, DELETED, MODIFIED, MetaEvent

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS meta (
    key   VARCHAR(256) PRIMARY KEY NOT NULL,
    type  VARCHAR(32)  NOT NULL,
    value TEXT
)""",
    # listing one type is MetaServer's most common read
    "CREATE INDEX IF NOT EXISTS meta_type ON meta (type, key)",
    """CREATE TABLE IF NOT EXISTS meta_events (
    seq   INTEGER PRIMARY KEY,
    key   TEXT    NOT NULL,
    type  TEXT    NOT NULL,
    event TEXT    NOT NULL,
    rv    INTEGER,
    value TEXT    NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS meta_events_rv ON meta_events (rv)",
)
_BUSY_TIMEOUT_MS: Final = 10_000
DEFAULT_EVENT_LOG_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True)
class MetaChange:
    """One object to write (`value` is its JSON) or, with `value` None, to delete (`rv`: the delete's, if known).

    `local`: a change made at the edge to the stored object at its resourceVersion (a pod's status as edged
    reported it), so the same resourceVersion is not stale; an older one still is."""

    key: str
    type: str
    value: str | None
    rv: int | None = None
    local: bool = False


@dataclass(frozen=True, slots=True)
class Applied:
    """What `apply` did: per change whether it was written (False: stale), and the events it logged."""

    written: list[bool]
    events: list[MetaEvent] = field(default_factory=list)


def parse_rv(text: object) -> int | None:
    """A Kubernetes resourceVersion as an integer (the cloud's are uint64), None if it is not one."""
    return int(text) if isinstance(text, str) and text.isdigit() else None


@dataclass(slots=True)
class _KeyState:
    """A key as the batch being applied sees it; `value` None while the stored one is not loaded."""

    exists: bool
    rv: int | None
    value: str | None = None


@dataclass(frozen=True, slots=True)
class _Pending:
    """An event whose DELETED object may still have to be read from the table before the write."""

    change: MetaChange
    event: str
    rv: int | None
    value: str | None
    stored_rv: int | None = None


class MetaStore:
    """The `meta` table, its event log and the key index; one aiosqlite connection owned by this object."""

    def __init__(self, db: aiosqlite.Connection, rv_by_key: dict[str, int | None], next_seq: int,
                 event_log_limit: int = DEFAULT_EVENT_LOG_LIMIT) -> None:
        if event_log_limit < 1:
            raise ValueError(f"event_log_limit must be >= 1, got {event_log_limit}")
        self._db = db
        self._rv_by_key = rv_by_key
        self._next_seq = next_seq
        self.event_log_limit = event_log_limit

    @classmethod
    async def open(cls, path: Path, event_log_limit: int = DEFAULT_EVENT_LOG_LIMIT) -> MetaStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            for statement in _SCHEMA:
                await db.execute(statement)
            await db.commit()
            rows = await db.execute_fetchall(
                "SELECT key, CASE WHEN json_valid(value) THEN json_extract(value, '$.metadata.resourceVersion') END "
                "FROM meta")
            last = await db.execute_fetchall("SELECT coalesce(max(seq), 0) FROM meta_events")
        except BaseException:
            await db.close()
            raise
        index = {key: parse_rv(text) for key, text in rows}
        return cls(db, index, int(next(iter(last))[0]) + 1, event_log_limit)

    async def close(self) -> None:
        await self._db.close()

    def __len__(self) -> int:
        return len(self._rv_by_key)

    def resource_version(self, key: str) -> int | None:
        return self._rv_by_key.get(key)

    def is_stale(self, change: MetaChange) -> bool:
        """An update whose resourceVersion is not newer than the stored one (a re-send, or out of date)."""
        return _stale(change, self._rv_by_key.get(change.key))

    async def apply(self, changes: Sequence[MetaChange]) -> Applied:
        """Write `changes` in order in one transaction, with one logged event per change that changed something.

        Several changes of one key in a batch collapse to the last fresh one in the table; the log keeps
        each of them, in order. A delete of a key that is not stored is written (a no-op) without an event.
        """
        states: dict[str, _KeyState] = {}
        final: dict[str, MetaChange] = {}
        pending: list[_Pending] = []
        written = []
        for change in changes:
            state = states.get(change.key)
            if state is None:
                state = states[change.key] = _KeyState(change.key in self._rv_by_key,
                                                       self._rv_by_key.get(change.key))
            fresh = not _stale(change, state.rv)
            written.append(fresh)
            if not fresh:
                continue
            final[change.key] = change
            if change.value is not None:
                pending.append(_Pending(change, MODIFIED if state.exists else ADDED, change.rv, change.value))
                state.exists, state.rv, state.value = True, change.rv, change.value
            elif state.exists:
                rv = change.rv if change.rv is not None else state.rv
                pending.append(_Pending(change, DELETED, rv, state.value, state.rv))
                state.exists, state.rv, state.value = False, None, None
        if not final:
            return Applied(written)
        events = await self._events(pending)
        removed = [key for change in final.values() if change.value is None for key in _keys_removed_with(change)]
        await self._write(list(final.values()), removed, events)
        for key in removed:
            self._rv_by_key.pop(key, None)
        for key, change in final.items():
            if change.value is not None:
                self._rv_by_key[key] = change.rv
        self._next_seq += len(events)
        return Applied(written, events)

    async def _events(self, pending: list[_Pending]) -> list[MetaEvent]:
        """The events of a batch, numbered from the next seq; deleted objects not changed earlier in
        the batch are read from the table first (only this connection writes it, so it is current)."""
        unread = sorted({p.change.key for p in pending if p.value is None})
        stored: dict[str, str] = {}
        if unread:
            marks = ",".join("?" * len(unread))
            rows = await self._db.execute_fetchall(f"SELECT key, value FROM meta WHERE key IN ({marks})", unread)
            stored = {key: value for key, value in rows if value is not None}
        events = []
        for offset, item in enumerate(pending):
            value = item.value if item.value is not None else stored.get(item.change.key, "null")
            if item.event == DELETED:
                value = _with_rv(value, item.rv, item.stored_rv)
            events.append(MetaEvent(self._next_seq + offset, item.change.key, item.change.type, item.event, item.rv,
                                    value))
        return events

    async def _write(self, changes: list[MetaChange], removed: list[str], events: list[MetaEvent]) -> None:
        upserts = [(change.key, change.type, change.value) for change in changes if change.value is not None]
        try:
            if removed:
                await self._db.executemany("DELETE FROM meta WHERE key = ?", [(key,) for key in removed])
            if upserts:
                await self._db.executemany(
                    "INSERT INTO meta (key, type, value) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET type = excluded.type, value = excluded.value", upserts)
            if events:
                await self._db.executemany(
                    "INSERT INTO meta_events (seq, key, type, event, rv, value) VALUES (?, ?, ?, ?, ?, ?)",
                    [(e.seq, e.key, e.type, e.event, e.rv, e.value) for e in events])
                await self._db.execute("DELETE FROM meta_events WHERE seq <= ?",
                                       (events[-1].seq - self.event_log_limit,))
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
    if change.value is None or change.rv is None or stored is None:
        return False
    return change.rv < stored if change.local else change.rv <= stored


def _with_rv(value: str, rv: int | None, stored_rv: int | None) -> str:
    """The last stored object carrying the delete's resourceVersion when that is newer, as a Kubernetes
    DELETED event does (a client resuming from it must not see the delete again)."""
    if rv is None or (stored_rv is not None and rv <= stored_rv):
        return value
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return value
    obj["metadata"]["resourceVersion"] = str(rv)
    return orjson.dumps(obj).decode()


def _keys_removed_with(change: MetaChange) -> list[str]:
    """A pod's delete also removes its `podpatch` row, as upstream does."""
    if change.type != ResourceType.POD:
        return [change.key]
    namespace, _, name = change.key.split("/", 2)
    return [change.key, f"{namespace}/{ResourceType.PODPATCH}/{name}"]
