"""The store: committed objects in memory, written through a durable SQLite log with group commit.

Owns the object state, the revision counter, the single writer task and the periodic compaction
task. It does no Kubernetes semantics beyond preconditions: uid, timestamps, defaulting and
validation are the API layer's; the store only stamps `metadata.resourceVersion`.

Write path (one writer task, group commit): a caller enqueues an op with a future and waits. The
writer takes everything queued (up to `max_batch`), checks each op's precondition against the
committed state overlaid with the earlier ops of the same batch, gives the accepted ops consecutive
revisions and writes them in ONE SQLite transaction. Only after that commit returns does it apply
the batch to memory, publish it to the watch cache and resolve the futures; an op that fails its
precondition gets its error and takes no revision; if the commit fails, every op of the batch gets
the error and memory is untouched. So nothing is acknowledged before it is durable and readers
(`get`, `list`, watches) never see uncommitted state. While one batch commits, the next one
gathers: concurrency turns into bigger transactions, not more fsyncs.

A caller cancelled while its op still waits in the queue is skipped; once the op is in a batch,
cancelling the caller does not undo it (as with any request whose answer was lost).

The op queue is bounded (`max_pending`); callers wait for room. Reads are synchronous and served
from memory; memory only changes in one synchronous step per batch, so a `list` is a consistent
snapshot at the revision it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from cloudcore.controlplane.store.log import LogRow, SqliteLog
from cloudcore.controlplane.store.types import (
    AlreadyExistsError,
    ConflictError,
    EventType,
    Key,
    NotFoundError,
    StoredObject,
    StoreError,
    WatchEvent,
)
from cloudcore.controlplane.store.watch import DEFAULT_QUEUE_SIZE, WatchCache, Watcher
from common.log import get_logger

log = get_logger("store")

SelectableFields = Callable[[str, dict[str, Any]], dict[str, str]]

DEFAULT_MAX_PENDING: Final = 10_000
# Compaction deletes at most this many revisions per transaction, so write batches interleave
# with a long compaction instead of waiting for all of it.
COMPACT_STEP: Final = 10_000
_EMPTY_LABELS: Final[Mapping[str, str]] = {}
_Row = tuple[int, str, str, str, int, bytes]


@dataclass(slots=True)
class _Op:
    """A queued write. `kind` says what it does: ADDED creates, MODIFIED updates, DELETED deletes."""

    kind: EventType
    key: Key
    obj: dict[str, Any] | None
    expected_rv: int | None
    expected_uid: str | None
    future: asyncio.Future[StoredObject]


# Aliases used inside Store, where the name `list` is its method.
_Batch = list[_Op]
_LogRows = list[LogRow]


class Store:
    """The control plane's object store. Open with `await Store.open(path)`; `await close()` at the end."""

    def __init__(self, sqlite_log: SqliteLog, *, floor: int, rv: int,
                 selectable_fields: SelectableFields | None, history: int, max_batch: int, max_pending: int,
                 watch_queue: int) -> None:
        self._log = sqlite_log
        self._selectable_fields = selectable_fields
        self._history = history
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._objects: dict[str, dict[str, dict[str, StoredObject]]] = {}
        self._counts: dict[str, int] = {}
        self._rv = rv
        self._floor = floor
        self._cache = WatchCache(capacity=history, queue_size=watch_queue)
        self._pending: deque[_Op] = deque()
        self._has_pending = asyncio.Event()
        self._room = asyncio.Event()
        self._closing = False
        self._compact_lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._compactor: asyncio.Task[None] | None = None
        self.commits = 0
        """Write transactions committed so far (one per group-committed batch)."""

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL",
                   selectable_fields: SelectableFields | None = None, history: int = 100_000,
                   max_batch: int = 512, max_pending: int = DEFAULT_MAX_PENDING,
                   watch_queue: int = DEFAULT_QUEUE_SIZE, compact_every: float | None = 300.0) -> Store:
        """Open the store at `path` (created if missing) and load its state and watch history.

        `synchronous` is SQLite's: FULL (default) survives power loss, NORMAL survives a process
        crash. `selectable_fields(gr, obj)` gives the extra field-selector values of an object
        (the store always adds metadata.name and metadata.namespace). `history` bounds the watch
        cache (events); `max_batch` the ops per transaction; `max_pending` the write queue;
        `watch_queue` each watcher's live queue. `compact_every` seconds, if not None, a task
        compacts the log to the last `history` revisions.
        """
        if history < 1 or max_batch < 1 or max_pending < 1:
            raise ValueError("history, max_batch and max_pending must be positive")
        sqlite_log = await SqliteLog.open(path, synchronous=synchronous)
        try:
            meta = await sqlite_log.read_meta()
            # Older history than this is either compacted away or beyond what the cache keeps.
            oldest = max(meta.floor, meta.rv - history)
            state_rows = await sqlite_log.read_state(oldest)
            history_rows = await sqlite_log.read_history(oldest)
            store = cls(sqlite_log, floor=meta.floor, rv=meta.rv, selectable_fields=selectable_fields,
                        history=history, max_batch=max_batch, max_pending=max_pending,
                        watch_queue=watch_queue)
            store._load(state_rows, history_rows, oldest)
        except BaseException:
            await sqlite_log.close()
            raise
        store._writer = asyncio.create_task(store._write_loop(), name=f"store-writer {path.name}")
        if compact_every is not None:
            store._compactor = asyncio.create_task(store._compact_loop(compact_every),
                                                   name=f"store-compactor {path.name}")
        log.info("store opened", path=str(path), rv=meta.rv, floor=meta.floor,
                 objects=sum(store._counts.values()), history=len(store._cache))
        return store

    # ---- reads (synchronous, committed state only) ----

    @property
    def current_rv(self) -> int:
        """The revision of the last committed write (0 for a new store)."""
        return self._rv

    @property
    def oldest_rv(self) -> int:
        """The compaction floor: history at or below it is gone from the log."""
        return self._floor

    def get(self, key: Key) -> StoredObject | None:
        """The committed object at `key`, or None."""
        namespaces = self._objects.get(key.gr)
        if namespaces is None:
            return None
        names = namespaces.get(key.namespace)
        return None if names is None else names.get(key.name)

    def list(self, gr: str, namespace: str | None = None) -> tuple[list[StoredObject], int]:
        """The objects of `gr` (in `namespace` if given) sorted by (namespace, name), and the revision
        they are a snapshot of."""
        namespaces = self._objects.get(gr)
        if not namespaces:
            return [], self._rv
        if namespace is not None:
            names = namespaces.get(namespace)
            if names is None:
                return [], self._rv
            return [names[name] for name in sorted(names)], self._rv
        objects: list[StoredObject] = []
        for ns in sorted(namespaces):
            names = namespaces[ns]
            objects.extend(names[name] for name in sorted(names))
        return objects, self._rv

    def count(self, gr: str) -> int:
        """How many objects of `gr` exist."""
        return self._counts.get(gr, 0)

    def watch(self, gr: str, namespace: str | None, since_rv: int | None) -> Watcher:
        """Watch `gr` (in `namespace` if given) from after `since_rv` (None or 0: from now).

        Raises TooOldError when `since_rv` is below the oldest cached revision or above the current
        one (the client must relist). See watch.py for the overflow policy.
        """
        return self._cache.watch(gr, namespace, since_rv)

    # ---- writes (durable when they return) ----

    async def create(self, key: Key, obj: dict[str, Any]) -> StoredObject:
        """Store a new object. Stamps `obj["metadata"]["resourceVersion"]`. Raises AlreadyExistsError."""
        return await self._submit(EventType.ADDED, key, obj, None, None)

    async def update(self, key: Key, obj: dict[str, Any], expected_rv: int | None = None) -> StoredObject:
        """Replace an existing object, if its revision is `expected_rv` (when given).

        Stamps `obj["metadata"]["resourceVersion"]`. Raises NotFoundError or ConflictError.
        """
        return await self._submit(EventType.MODIFIED, key, obj, expected_rv, None)

    async def delete(self, key: Key, expected_rv: int | None = None,
                     expected_uid: str | None = None) -> StoredObject:
        """Delete an object, if its revision and uid are the expected ones (when given).

        Returns its last state stamped with the delete's revision. Raises NotFoundError or
        ConflictError.
        """
        return await self._submit(EventType.DELETED, key, None, expected_rv, expected_uid)

    async def _submit(self, kind: EventType, key: Key, obj: dict[str, Any] | None, expected_rv: int | None,
                      expected_uid: str | None) -> StoredObject:
        while True:
            if self._closing:
                raise StoreError("store is closed")
            if len(self._pending) < self._max_pending:
                break
            # Woken when the writer takes a batch, or by close(); then look again.
            self._room.clear()
            await self._room.wait()
        future: asyncio.Future[StoredObject] = asyncio.get_running_loop().create_future()
        self._pending.append(_Op(kind, key, obj, expected_rv, expected_uid, future))
        self._has_pending.set()
        return await future

    # ---- compaction ----

    async def compact(self, keep: int) -> int:
        """Drop history older than the last `keep` revisions from the log and the watch cache.

        Each key keeps its latest revision. Returns the new compaction floor; watches from below
        it get TooOldError.
        """
        if keep < 0:
            raise ValueError("keep must be >= 0")
        async with self._compact_lock:
            target = self._rv - keep
            while self._floor < target:
                if self._closing:
                    raise StoreError("store is closed")
                step_floor = min(target, self._floor + COMPACT_STEP)
                await self._log.compact(self._floor, step_floor)
                self._floor = step_floor
                self._cache.trim(step_floor)
            return self._floor

    async def _compact_loop(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                floor = await self.compact(self._history)
            except StoreError:
                return
            except Exception:
                log.exception("store compaction failed; retrying next period")
            else:
                log.v(4).info("store compacted", floor=floor, rv=self._rv)

    # ---- close ----

    async def close(self, timeout: float = 5.0) -> None:
        """Finish the queued writes, close every watcher and the database, within about `timeout` s.

        Callers still waiting for room in the queue get StoreError; writes not committed within
        the timeout get StoreError too (they may or may not be in the log).
        """
        if self._closing:
            return
        self._closing = True
        self._has_pending.set()
        self._room.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._writer, max(0.0, deadline - loop.time()))
            except TimeoutError:
                log.error("store writer did not finish in time; failing the writes left",
                          pending=len(self._pending))
        self._fail_pending(StoreError("store closed before the write was committed"))
        self._cache.close()
        try:
            await asyncio.wait_for(self._log.close(), max(0.1, deadline - loop.time()))
        except TimeoutError:
            log.error("store database did not close in time")
        log.info("store closed", rv=self._rv, commits=self.commits)

    def _fail_pending(self, error: StoreError) -> None:
        while self._pending:
            future = self._pending.popleft().future
            if not future.done():
                future.set_exception(error)

    # ---- the writer ----

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._has_pending.clear()
                await self._has_pending.wait()
                continue
            batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            self._room.set()
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                self._fail_batch(batch, StoreError("store closed while the write was committing"))
                raise
            except Exception as exc:  # a bug here must fail this batch, not stop every later write
                log.exception("store batch failed")
                self._fail_batch(batch, StoreError(f"write failed: {exc!r}"))

    @staticmethod
    def _fail_batch(batch: _Batch, error: StoreError) -> None:
        for op in batch:
            if not op.future.done():
                op.future.set_exception(error)

    async def _commit(self, batch: _Batch) -> None:
        overlay: dict[Key, StoredObject | None] = {}
        accepted: list[tuple[_Op, WatchEvent]] = []
        rows: list[_Row] = []
        rv = self._rv
        for op in batch:
            if op.future.done():  # the caller gave up before its op was taken: skip it
                continue
            try:
                event = self._prepare(op, overlay, rv + 1)
            except Exception as exc:
                op.future.set_exception(exc)
                continue
            rv += 1
            stored = event.object
            overlay[op.key] = None if op.kind is EventType.DELETED else stored
            rows.append((rv, op.key.gr, op.key.namespace, op.key.name, int(op.kind is EventType.DELETED),
                         stored.raw))
            accepted.append((op, event))
        if not rows:
            return
        try:
            await self._log.append(rows)
        except Exception as exc:
            log.exception("store commit failed", ops=len(rows), first_rv=self._rv + 1)
            for op, _ in accepted:
                if not op.future.done():
                    error = StoreError(f"commit failed: {exc!r}")
                    error.__cause__ = exc
                    op.future.set_exception(error)
            return
        # Durable: now (and only now) memory, watchers and callers see the batch.
        self.commits += 1
        self._rv = rv
        events = [event for _, event in accepted]
        for event in events:
            self._apply(event.object, event.type is EventType.DELETED)
        self._cache.publish(events)
        for op, event in accepted:
            if not op.future.done():
                op.future.set_result(event.object)

    def _prepare(self, op: _Op, overlay: dict[Key, StoredObject | None], rv: int) -> WatchEvent:
        """Check `op`'s precondition and build what it would commit at revision `rv`."""
        key = op.key
        current = overlay[key] if key in overlay else self.get(key)
        if op.kind is EventType.ADDED:
            if current is not None:
                raise AlreadyExistsError(key)
        else:
            if current is None:
                raise NotFoundError(key)
            if op.expected_rv is not None and current.rv != op.expected_rv:
                raise ConflictError(key, f"resourceVersion {op.expected_rv}", f"resourceVersion {current.rv}")
            if op.expected_uid is not None and current.uid != op.expected_uid:
                raise ConflictError(key, f"uid {op.expected_uid}", f"uid {current.uid}")
        if op.kind is EventType.DELETED:
            assert current is not None
            last = current.decode()
            last["metadata"]["resourceVersion"] = str(rv)
            stored = StoredObject(key, rv, orjson.dumps(last), current.uid, current.labels, current.fields)
            return WatchEvent(EventType.DELETED, stored)
        assert op.obj is not None
        op.obj["metadata"]["resourceVersion"] = str(rv)
        return WatchEvent(op.kind, self._stored(key, rv, orjson.dumps(op.obj), op.obj),
                          current if op.kind is EventType.MODIFIED else None)

    def _stored(self, key: Key, rv: int, raw: bytes, obj: dict[str, Any]) -> StoredObject:
        metadata = obj["metadata"]
        labels = metadata.get("labels")
        fields = {"metadata.name": key.name, "metadata.namespace": key.namespace}
        if self._selectable_fields is not None:
            fields.update(self._selectable_fields(key.gr, obj))
        # Labels are copied: the caller keeps its dict and may change it after the write.
        return StoredObject(key, rv, raw, metadata.get("uid") or "",
                            dict(labels) if labels else _EMPTY_LABELS, fields)

    def _apply(self, stored: StoredObject, deleted: bool) -> None:
        key = stored.key
        namespaces = self._objects.setdefault(key.gr, {})
        names = namespaces.setdefault(key.namespace, {})
        existed = key.name in names
        if deleted:
            if existed:
                del names[key.name]
                self._counts[key.gr] -= 1
                if not names:
                    del namespaces[key.namespace]
            return
        names[key.name] = stored
        if not existed:
            self._counts[key.gr] = self._counts.get(key.gr, 0) + 1

    def _load(self, state_rows: _LogRows, history_rows: _LogRows, oldest: int) -> None:
        """Rebuild memory from the log: the state at `oldest`, then every later row as an event."""
        for row in state_rows:
            self._apply(self._row_object(row), deleted=False)
        events: list[WatchEvent] = []
        for row in history_rows:
            stored = self._row_object(row)
            previous = self.get(stored.key)
            kind = EventType.ADDED if previous is None else EventType.MODIFIED
            if row.deleted:
                kind = EventType.DELETED
            self._apply(stored, deleted=bool(row.deleted))
            events.append(WatchEvent(kind, stored, previous if kind is EventType.MODIFIED else None))
        self._cache.load(events, oldest_rv=oldest, current_rv=self._rv)

    def _row_object(self, row: LogRow) -> StoredObject:
        # Interned: thousands of objects share a handful of group-resource and namespace strings.
        key = Key(sys.intern(row.gr), sys.intern(row.namespace), row.name)
        return self._stored(key, row.rv, row.data, orjson.loads(row.data))
