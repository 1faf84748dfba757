"""The one informer / work-queue kit every workload controller of the control plane is built from.

Owns three things, shaped like client-go's (and kopf's cogs):

* `Informer`: lists one group-resource from the store into a local cache keyed by `Key`, then
  watches from that revision; handlers, indexes and derived values (small per-object summaries,
  computed once per event so reconciles over thousands of pods never decode JSON) see every add,
  update and delete. A closed or too-old watch (overflow, compaction) re-lists and replays the
  difference as events. `Informers` shares one informer per group-resource between controllers
  and owns their tasks.
* `WorkQueue`: sans-I/O, deduplicating, bounded queue of keys with per-key exponential back-off
  and delayed requeue. A key is never handed to two workers at once; a key added while it is being
  processed comes back once processing is done. Time comes from an injected clock, so its tests
  need no sleeps.
* `Controller`: a name, the group-resources it watches with how an event maps to its keys (queued
  at once, or coalesced over a short window that grows with the key's reconcile cost),
  `reconcile(key)`, N workers; `run()` owns its worker and resync tasks and cancels them together.
  Its write helpers go through the ObjectAPI (validation, defaulting, finalizers, graceful
  deletion all apply) and then wait until the informer of that resource has seen the write, so a
  controller always reads its own writes and never acts twice on a stale cache.

What it must never do: write to the store directly, block the event loop with a full relist on a
timer (the periodic resync only re-queues keys, every few minutes at most), or let an exception
out of a worker (it is logged and the key retried with back-off).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.objects import DeleteOptions, ObjectAPI, WriteOptions
from cloudcore.controlplane.api.resources import ResourceInfo
from cloudcore.controlplane.api.selectors import LabelSelector, SelectorError, label_selector_from_object
from cloudcore.controlplane.store.store import Store
from cloudcore.controlplane.store.types import (
    EventType,
    Key,
    StoredObject,
    StoreError,
    TooOldError,
    WatcherClosedError,
)
from cloudcore.controlplane.store.watch import Watcher
from common.log import get_logger

log = get_logger("controllers")

K = TypeVar("K", bound=Hashable)
Clock = Callable[[], float]

DEFAULT_QUEUE_CAPACITY: Final = 100_000
DEFAULT_BASE_DELAY: Final = 0.005
DEFAULT_MAX_DELAY: Final = 60.0
DEFAULT_RESYNC: Final = 300.0
# Every wait of the kit is bounded: idle workers and informers look up at least this often.
_IDLE_WAIT: Final = 30.0
_WATCH_WAIT: Final = 60.0
_RELIST_MIN: Final = 0.1
_RELIST_MAX: Final = 30.0
_RELIST_CHUNK: Final = 1000
# How long a write helper waits for its informer to see the write before going on regardless.
_CATCH_UP: Final = 5.0
_MUTATE_ATTEMPTS: Final = 5
_SLOW_RECONCILE: Final = 0.01
_MAX_COALESCE: Final = 5.0
_CONTROLLER_WRITE: Final = WriteOptions(field_validation="Ignore")


# ---- the work queue (sans-I/O) -------------------------------------------------------------------


class WorkQueue(Generic[K]):
    """Deduplicating, bounded FIFO of keys with delayed adds and per-key exponential back-off.

    `add` queues a key unless it is already waiting; `get` hands out the oldest ready key and
    marks it processing until `done`; adding a key being processed re-queues it at `done`.
    `add_after` delays a key (the earliest due time wins); `add_rate_limited` delays it by the
    key's back-off (`base_delay` doubling per failure up to `max_delay`), which `forget` resets.

    At most `capacity` distinct keys wait (ready or delayed). Beyond that a key is dropped and
    counted in `dropped`, and `overflowed` is set: the owner must then re-queue everything it
    knows from its caches (`take_overflow`), so a dropped key is late, never lost.
    """

    def __init__(self, capacity: int = DEFAULT_QUEUE_CAPACITY, *, base_delay: float = DEFAULT_BASE_DELAY,
                 max_delay: float = DEFAULT_MAX_DELAY, clock: Clock = time.monotonic) -> None:
        if capacity < 1 or base_delay <= 0 or max_delay < base_delay:
            raise ValueError("capacity must be positive and 0 < base_delay <= max_delay")
        self.capacity = capacity
        self._base = base_delay
        self._max = max_delay
        self._clock = clock
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._waiting: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}
        self.dropped = 0
        self.overflowed = False

    def __len__(self) -> int:
        """Keys ready to be handed out now (delayed ones not counted until due)."""
        self._promote()
        return len(self._ready)

    @property
    def waiting(self) -> int:
        """Distinct keys queued: ready, to be re-queued after processing, or delayed."""
        return len(self._dirty) + len(self._waiting)

    def add(self, key: K) -> bool:
        """Queue `key` now; False if the queue is full and it was dropped."""
        if key in self._dirty:
            return True
        if self.waiting >= self.capacity and key not in self._waiting:
            self.dropped += 1
            self.overflowed = True
            return False
        self._waiting.pop(key, None)  # due now: an earlier add_after is superseded
        self._dirty.add(key)
        if key not in self._processing:
            self._ready.append(key)
        return True

    def add_after(self, key: K, delay: float) -> bool:
        """Queue `key` once `delay` seconds have passed; False if dropped (queue full)."""
        if delay <= 0:
            return self.add(key)
        if key in self._dirty:
            return True
        due = self._clock() + delay
        current = self._waiting.get(key)
        if current is not None:
            if current <= due:
                return True
        elif self.waiting >= self.capacity:
            self.dropped += 1
            self.overflowed = True
            return False
        self._waiting[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        if len(self._heap) > 2 * len(self._waiting) + 64:  # drop superseded entries now and then
            self._heap = [(d, s, k) for d, s, k in self._heap if self._waiting.get(k) == d]
            heapq.heapify(self._heap)
        return True

    def backoff(self, key: K) -> float:
        """The delay the next `add_rate_limited(key)` will use."""
        return min(self._max, self._base * 2.0 ** self._failures.get(key, 0))

    def add_rate_limited(self, key: K) -> float:
        """Re-queue a key that failed, after its back-off; returns that delay."""
        delay = self.backoff(key)
        self._failures[key] = min(self._failures.get(key, 0) + 1, 64)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure starts again from `base_delay`."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def get(self) -> K | None:
        """The next ready key (now processing), or None."""
        self._promote()
        if not self._ready:
            return None
        key = self._ready.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        """Processing of `key` ended; if it was added meanwhile it is ready again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._ready.append(key)

    def next_due(self) -> float | None:
        """Seconds until the earliest delayed key is due (0 if one is), None if none is delayed."""
        self._promote()
        if self._ready:
            return 0.0
        while self._heap:
            due, _, key = self._heap[0]
            if self._waiting.get(key) == due:
                return max(0.0, due - self._clock())
            heapq.heappop(self._heap)
        return None

    def take_overflow(self) -> bool:
        """True once after keys were dropped: the owner re-queues everything it knows."""
        overflowed, self.overflowed = self.overflowed, False
        return overflowed

    def _promote(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            if self._waiting.get(key) == due:
                del self._waiting[key]
                self.add(key)


# ---- informers -----------------------------------------------------------------------------------


class Snapshot:
    """One object as an event handler sees it: the stored revision, decoded at most once and shared.

    Handlers and index functions of the same event share the decoded dict: they must not change it.
    `derived` holds the informer's derived values (see `Informer.derive`) for this revision.
    """

    __slots__ = ("_obj", "derived", "stored")

    def __init__(self, stored: StoredObject) -> None:
        self.stored = stored
        self._obj: dict[str, Any] | None = None
        self.derived: dict[str, Any] = {}

    @property
    def key(self) -> Key:
        return self.stored.key

    @property
    def obj(self) -> dict[str, Any]:
        if self._obj is None:
            self._obj = self.stored.decode()
        return self._obj


Handler = Callable[[Snapshot | None, Snapshot | None], None]
"""Called as (None, new) on add, (old, new) on update, (old, None) on delete; must not block."""
IndexFunc = Callable[[Snapshot], Iterable[str]]
T = TypeVar("T")


class Derived(Generic[T]):
    """A small value per object (a summary) an informer keeps next to its cache, computed once per event.

    Controllers read summaries instead of decoding every object on every reconcile: that keeps a
    reconcile over thousands of pods linear in cheap tuples, not in JSON decoding.
    """

    __slots__ = ("func", "name", "values")

    def __init__(self, name: str, func: Callable[[Snapshot], T]) -> None:
        self.name = name
        self.func = func
        self.values: dict[Key, T] = {}

    def get(self, key: Key) -> T | None:
        return self.values.get(key)

    def of(self, snapshot: Snapshot) -> T:
        """The value for this revision (as handlers see it: the old one for the old snapshot)."""
        value = snapshot.derived.get(self.name)
        if value is None:
            value = snapshot.derived[self.name] = self.func(snapshot)
        return value


class Informer:
    """List + watch of one group-resource into `cache`, with handlers and secondary indexes."""

    def __init__(self, store: Store, gr: str) -> None:
        self.store = store
        self.gr = gr
        self.cache: dict[Key, StoredObject] = {}
        self.has_synced = False
        self.rv = 0
        self._handlers: list[Handler] = []
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, set[Key]]] = {}
        self._index_values: dict[str, dict[Key, tuple[str, ...]]] = {}
        self._derived: dict[str, Derived[Any]] = {}
        self._progress = asyncio.Event()

    # -- registration (before the informer runs) --
    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def add_index(self, name: str, func: IndexFunc) -> None:
        """Index objects by `func`'s values; registering the same name twice keeps the first."""
        if name in self._index_funcs:
            return
        self._index_funcs[name] = func
        self._indexes[name] = {}
        self._index_values[name] = {}
        for stored in self.cache.values():
            self._index(Snapshot(stored))

    def derive(self, name: str, func: Callable[[Snapshot], T]) -> Derived[T]:
        """Keep `func(object)` for every object; registering the same name twice returns the first."""
        existing = self._derived.get(name)
        if existing is not None:
            return existing
        derived: Derived[T] = Derived(name, func)
        self._derived[name] = derived
        for key, stored in self.cache.items():
            derived.values[key] = func(Snapshot(stored))
        return derived

    # -- reads --
    def get(self, key: Key) -> StoredObject | None:
        return self.cache.get(key)

    def by_index(self, name: str, value: str) -> list[StoredObject]:
        """The objects with this index value, in key order."""
        return [self.cache[k] for k in sorted(self.index_keys(name, value))]

    def index_keys(self, name: str, value: str) -> list[Key]:
        """The keys with this index value, in no particular order (cheaper than `by_index`)."""
        keys = self._indexes[name].get(value)
        return list(keys) if keys else []

    def keys(self) -> list[Key]:
        return list(self.cache)

    # -- waiting --
    async def wait_synced(self, timeout: float) -> bool:
        return await self._wait(lambda: self.has_synced, timeout)

    async def wait_for_rv(self, rv: int, timeout: float) -> bool:
        """True once this informer has processed everything up to revision `rv`."""
        return await self._wait(lambda: self.has_synced and self.rv >= rv, timeout)

    async def _wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            progress = self._progress
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await progress.wait()
        return True

    def _advance(self, rv: int) -> None:
        self.rv = max(self.rv, rv)
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    # -- the loop --
    async def run(self) -> None:
        """List, then watch; re-list (with back-off when the store fails) whenever the watch ends."""
        delay = _RELIST_MIN
        while True:
            try:
                watcher = await self._relist()
            except (TooOldError, WatcherClosedError, StoreError) as exc:
                log.v(2).info("informer cannot watch yet; retrying", gr=self.gr, err=exc, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(_RELIST_MAX, delay * 2)
                continue
            try:
                while True:
                    event = await watcher.next(_WATCH_WAIT)
                    if event is not None:
                        self._apply(event.type, event.object)
                        delay = _RELIST_MIN
            except (WatcherClosedError, TooOldError) as exc:
                log.v(2).info("informer watch ended; re-listing", gr=self.gr, err=exc)
            finally:
                watcher.close()

    async def _relist(self) -> Watcher:
        """Replay the difference between the cache and a fresh list as events; the watch that follows it.

        The list and the watch are taken in one step (no event can fall between them); the list is
        then applied in chunks so a big one does not hold the event loop, while the watch buffers.
        """
        items, rv = self.store.list(self.gr)
        watcher = self.store.watch(self.gr, None, rv)
        try:
            fresh = {stored.key: stored for stored in items}
            changes = [(EventType.DELETED, gone) for key, gone in self.cache.items() if key not in fresh]
            for key, stored in fresh.items():
                cached = self.cache.get(key)
                if cached is None:
                    changes.append((EventType.ADDED, stored))
                elif cached.rv != stored.rv:
                    changes.append((EventType.MODIFIED, stored))
            del items, fresh
            for done, (kind, stored) in enumerate(changes, 1):
                self._apply(kind, stored, advance=False)
                if done % _RELIST_CHUNK == 0:
                    await asyncio.sleep(0)
        except BaseException:
            watcher.close()
            raise
        self.has_synced = True
        self._advance(rv)
        return watcher

    def _apply(self, kind: EventType, stored: StoredObject, *, advance: bool = True) -> None:
        """Apply one event to the cache and indexes, then the handlers; `advance` the revision seen."""
        key = stored.key
        previous = self.cache.get(key)
        old: Snapshot | None = None
        if previous is not None:
            old = Snapshot(previous)
            for derived in self._derived.values():
                if key in derived.values:
                    old.derived[derived.name] = derived.values[key]
        new: Snapshot | None
        if kind is EventType.DELETED:
            if previous is None:
                if advance:
                    self._advance(stored.rv)
                return
            del self.cache[key]
            self._unindex(key)
            for derived in self._derived.values():
                derived.values.pop(key, None)
            new = None
        else:
            self.cache[key] = stored
            new = Snapshot(stored)
            self._unindex(key)
            self._index(new)
            self._derive(new)
        for handler in self._handlers:
            try:
                handler(old, new)
            except Exception:  # a handler bug must not stop the informer or the other handlers
                log.exception("informer handler failed", gr=self.gr, key=f"{key.namespace}/{key.name}")
        if advance:
            self._advance(stored.rv)

    def _derive(self, snapshot: Snapshot) -> None:
        for derived in self._derived.values():
            try:
                value = derived.func(snapshot)
            except Exception:
                log.exception("derive function failed", gr=self.gr, derived=derived.name)
                derived.values.pop(snapshot.key, None)
                continue
            derived.values[snapshot.key] = snapshot.derived[derived.name] = value

    def _index(self, snapshot: Snapshot) -> None:
        for name, func in self._index_funcs.items():
            try:
                values = tuple(func(snapshot))
            except Exception:
                log.exception("index function failed", gr=self.gr, index=name)
                continue
            if values:
                self._index_values[name][snapshot.key] = values
                index = self._indexes[name]
                for value in values:
                    index.setdefault(value, set()).add(snapshot.key)

    def _unindex(self, key: Key) -> None:
        for name, by_key in self._index_values.items():
            values = by_key.pop(key, ())
            index = self._indexes[name]
            for value in values:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


class Informers:
    """One shared informer per group-resource; `run()` owns their tasks (cancel it to stop them all)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._informers: dict[str, Informer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False

    def get(self, gr: str) -> Informer:
        """The informer of `gr`, made on first use (and started at once if the set already runs)."""
        informer = self._informers.get(gr)
        if informer is None:
            informer = self._informers[gr] = Informer(self.store, gr)
            if self._running:
                self._start(gr)
        return informer

    def find(self, gr: str) -> Informer | None:
        return self._informers.get(gr)

    def remove(self, gr: str) -> None:
        """Stop and forget the informer of `gr` (a custom resource that is no longer served)."""
        self._informers.pop(gr, None)
        task = self._tasks.pop(gr, None)
        if task is not None:
            task.cancel()

    def _start(self, gr: str) -> None:
        self._tasks[gr] = asyncio.create_task(self._informers[gr].run(), name=f"informer {gr}")

    async def run(self) -> None:
        self._running = True
        for gr in self._informers:
            self._start(gr)
        try:
            while True:  # supervise: an informer that died (a bug) is logged and restarted
                await asyncio.sleep(_IDLE_WAIT)
                for gr, task in list(self._tasks.items()):
                    if task.done() and not task.cancelled():
                        log.error("informer stopped; restarting", gr=gr, err=task.exception())
                        self._start(gr)
        finally:
            self._running = False
            tasks = list(self._tasks.values())
            self._tasks.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


# ---- controllers ---------------------------------------------------------------------------------


KeyMapper = Callable[[Snapshot | None, Snapshot | None], Iterable[Key]]


def same_key(old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
    """The mapper of a controller's own resource: the object's key."""
    snapshot = new or old
    return () if snapshot is None else (snapshot.key,)


class Controller(abc.ABC):
    """Base of the workload controllers: informers in, keys through a WorkQueue, `reconcile` out.

    A subclass calls `watch(gr, mapper)` in its constructor for each resource it reads (the first
    one is its primary resource, re-queued wholesale by the periodic resync and after a queue
    overflow) and implements `reconcile(key)`, which returns None when done or a delay in seconds
    to look again (time-based work). An exception re-queues the key with back-off.
    """

    name: str = "controller"
    workers: int = 1
    resync_period: float | None = DEFAULT_RESYNC

    def __init__(self, objects: ObjectAPI, informers: Informers, *, queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
                 clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self.objects = objects
        self.informers = informers
        self.queue: WorkQueue[Key] = WorkQueue(queue_capacity, clock=clock)
        self.wall = wall  # seconds since the epoch: what object timestamps are compared with
        self.log = get_logger(self.name)
        self._watched: list[Informer] = []
        self._wake = asyncio.Event()
        self._cost: dict[Key, float] = {}  # seconds the last reconcile took, for the keys that were slow

    # -- wiring --
    def watch(self, gr: str, mapper: KeyMapper, *, coalesce: float = 0.0) -> Informer:
        """Follow `gr`: each event's keys (from `mapper`) are queued, after `coalesce` seconds if given,
        so a burst of events (pods turning ready one by one) makes one reconcile, not one each.

        The wait grows with what the key's last reconcile cost (twice its duration, at most
        `_MAX_COALESCE`): a Service of 10k pods is not re-synced back to back while they change.
        """
        informer = self.informers.get(gr)

        def handle(old: Snapshot | None, new: Snapshot | None) -> None:
            for key in mapper(old, new):
                delay = coalesce
                if coalesce > 0:
                    delay = max(coalesce, min(_MAX_COALESCE, 2 * self._cost.get(key, 0.0)))
                self.enqueue_after(key, delay)

        informer.add_handler(handle)
        self._watched.append(informer)
        return informer

    def info(self, group: str, version: str, plural: str) -> ResourceInfo:
        info = self.objects.registry.get(group, version, plural)
        if info is None:
            raise LookupError(f"resource {group}/{version} {plural} is not served")
        return info

    def enqueue(self, key: Key) -> None:
        self.queue.add(key)
        self._wake.set()

    def enqueue_after(self, key: Key, delay: float) -> None:
        self.queue.add_after(key, delay)
        self._wake.set()

    def resync_keys(self) -> Iterable[Key]:
        """What a resync re-queues: every object of the primary resource."""
        return self._watched[0].keys() if self._watched else ()

    def resync(self) -> None:
        for key in self.resync_keys():
            self.queue.add(key)
        self._wake.set()

    # -- running --
    @abc.abstractmethod
    async def reconcile(self, key: Key) -> float | None:
        """Make the world match `key`'s desired state; a float asks to be called again after it."""

    async def run(self) -> None:
        """Wait for the informers' first lists, then run the workers (and the resync) until cancelled."""
        for informer in self._watched:
            while not await informer.wait_synced(_IDLE_WAIT):
                self.log.info("waiting for the informer's first list", gr=informer.gr)
        tasks = [asyncio.create_task(self._worker(), name=f"{self.name} worker {i}") for i in range(self.workers)]
        if self.resync_period is not None:
            tasks.append(asyncio.create_task(self._resync_loop(self.resync_period), name=f"{self.name} resync"))
        self.log.info("controller started", workers=self.workers)
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _resync_loop(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            self.resync()

    async def _worker(self) -> None:
        queue = self.queue
        loop = asyncio.get_running_loop()
        while True:
            key = queue.get()
            if key is None:
                if queue.take_overflow():
                    self.log.warning("work queue overflowed; re-queueing every key", dropped=queue.dropped)
                    self.resync()
                    continue
                self._wake.clear()
                due = queue.next_due()
                timeout = _IDLE_WAIT if due is None else min(due, _IDLE_WAIT)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                continue
            started = loop.time()
            try:
                again = await self.reconcile(key)
            except APIError as exc:
                delay = queue.add_rate_limited(key)
                level = 2 if exc.reason in ("Conflict", "NotFound", "AlreadyExists") else 0
                self.log.v(level).info("reconcile failed; retrying", key=_show(key), reason=exc.reason, err=exc,
                                       retry_in=round(delay, 3))
            except Exception:
                delay = queue.add_rate_limited(key)
                self.log.exception("reconcile failed; retrying", key=_show(key), retry_in=round(delay, 3))
            else:
                queue.forget(key)
                if again is not None:
                    queue.add_after(key, again)
            finally:
                queue.done(key)
                self._wake.set()
                took = loop.time() - started
                if took >= _SLOW_RECONCILE:
                    self._cost[key] = took
                else:
                    self._cost.pop(key, None)

    # -- writes through the ObjectAPI, read back through the informers --
    async def create(self, info: ResourceInfo, namespace: str, body: dict[str, Any]) -> StoredObject:
        stored = (await self.objects.create(info, namespace, body, _CONTROLLER_WRITE)).stored
        await self._caught_up(info.gr, stored.rv)
        return stored

    async def update(self, info: ResourceInfo, obj: dict[str, Any], subresource: str = "") -> StoredObject:
        """Write `obj` (a decoded object, resourceVersion kept as the precondition) back."""
        meta = obj["metadata"]
        stored = (await self.objects.update(info, meta.get("namespace", ""), meta["name"], obj, _CONTROLLER_WRITE,
                                            subresource)).stored
        await self._caught_up(info.gr, stored.rv)
        return stored

    async def delete(self, info: ResourceInfo, namespace: str, name: str, *, uid: str = "",
                     propagation: str = "") -> StoredObject | None:
        """Delete (gracefully where the API says so); None if it was already gone."""
        try:
            stored = await self.objects.delete(info, namespace, name,
                                               DeleteOptions(propagation_policy=propagation, precondition_uid=uid))
        except APIError as exc:
            if exc.reason == "NotFound":
                return None
            raise
        await self._caught_up(info.gr, stored.rv)
        return stored

    async def mutate(self, info: ResourceInfo, key: Key, change: Callable[[dict[str, Any]], bool],
                     subresource: str = "") -> StoredObject | None:
        """Read the latest `key`, let `change` edit it (False: nothing to write), write; retry on Conflict.

        None when the object is gone.
        """
        for attempt in range(_MUTATE_ATTEMPTS):
            stored = self.objects.store.get(key)
            if stored is None:
                return None
            obj = stored.decode()
            if not change(obj):
                return stored
            try:
                return await self.update(info, obj, subresource)
            except APIError as exc:
                if exc.reason != "Conflict" or attempt == _MUTATE_ATTEMPTS - 1:
                    raise
        return None

    async def _caught_up(self, gr: str, rv: int) -> None:
        informer = self.informers.find(gr)
        if informer is not None and not await informer.wait_for_rv(rv, _CATCH_UP):
            self.log.v(2).info("informer did not catch up with a write in time", gr=gr, rv=rv)


def _show(key: Key) -> str:
    return f"{key.gr} {key.namespace}/{key.name}" if key.namespace else f"{key.gr} {key.name}"


# ---- helpers shared by the controllers -----------------------------------------------------------


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with controller=true, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_reference(owner: dict[str, Any], *, block: bool = True) -> dict[str, Any]:
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": block}


def controller_uid_index(snapshot: Snapshot) -> Iterable[str]:
    """Index function: the uid of the object's controller (the owner with controller=true)."""
    if b'"ownerReferences"' not in snapshot.stored.raw:
        return ()
    ref = controller_of(snapshot.obj)
    return (str(ref.get("uid", "")),) if ref else ()


def orphan_namespace_index(snapshot: Snapshot) -> Iterable[str]:
    """Index function: the namespace of objects no controller owns (candidates for adoption)."""
    if b'"ownerReferences"' in snapshot.stored.raw and controller_of(snapshot.obj) is not None:
        return ()
    return (snapshot.key.namespace,)


def namespace_index(snapshot: Snapshot) -> Iterable[str]:
    return (snapshot.key.namespace,)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind:
            return dict(cond)
    return None


def pod_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp (as the API writes them) in seconds since the epoch."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True, slots=True)
class PodSummary:
    """What the workload and endpoint controllers need of a pod, extracted once per pod revision."""

    key: Key
    uid: str
    labels: Mapping[str, str]
    controller_uid: str
    controller_kind: str
    controller_name: str
    node: str
    phase: str
    deleting: bool
    ready: bool
    ready_since: float | None
    created: float
    restarts: int
    deletion_cost: int
    ip: str
    hostname: str
    subdomain: str
    ports: tuple[tuple[str, int, str], ...]  # container ports: (name, number, protocol)

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def active(self) -> bool:
        """Counts towards a workload's replicas: not finished and not being deleted."""
        return not self.terminal and not self.deleting

    def available(self, min_ready_seconds: int, now: float) -> tuple[bool, float | None]:
        """Ready for `min_ready_seconds`; if ready but not yet available, in how many seconds it will be."""
        if not self.ready:
            return False, None
        if min_ready_seconds <= 0 or self.ready_since is None:
            return True, None
        left = self.ready_since + min_ready_seconds - now
        return (True, None) if left <= 0 else (False, left)


def summarize_pod(snapshot: Snapshot) -> PodSummary:
    pod = snapshot.obj
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    ref = controller_of(pod) or {}
    ready = condition(pod, "Ready")
    is_ready = ready is not None and ready.get("status") == "True"
    try:
        cost = int((meta.get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost", 0))
    except ValueError:
        cost = 0
    ports = tuple((str(p.get("name") or ""), int(p["containerPort"]), str(p.get("protocol") or "TCP"))
                  for c in spec.get("containers") or () for p in c.get("ports") or () if "containerPort" in p)
    return PodSummary(
        key=snapshot.key, uid=snapshot.stored.uid, labels=snapshot.stored.labels,
        controller_uid=str(ref.get("uid", "")), controller_kind=str(ref.get("kind", "")),
        controller_name=str(ref.get("name", "")), node=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or ""), deleting=bool(meta.get("deletionTimestamp")), ready=is_ready,
        ready_since=parse_time(ready.get("lastTransitionTime")) if is_ready and ready else None,
        created=parse_time(meta.get("creationTimestamp")) or 0.0,
        restarts=sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or ()),
        deletion_cost=cost, ip=str(status.get("podIP") or ""), hostname=str(spec.get("hostname") or ""),
        subdomain=str(spec.get("subdomain") or ""), ports=ports)


def pod_summaries(informer: Informer) -> Derived[PodSummary]:
    """The shared pod summaries of the pods informer (registered once, whoever asks first)."""
    return informer.derive("pod-summary", summarize_pod)


def set_condition(conditions: list[dict[str, Any]], kind: str, status: str, reason: str, message: str,
                  now: str, *, update_time: bool = False) -> bool:
    """Set a condition like the API helpers do; keeps lastTransitionTime unless the status changes.

    Returns True when anything changed. `update_time` maintains `lastUpdateTime` (deployments).
    """
    for cond in conditions:
        if cond.get("type") != kind:
            continue
        if cond.get("status") == status and cond.get("reason") == reason and cond.get("message") == message:
            return False
        if cond.get("status") != status:
            cond["lastTransitionTime"] = now
        cond.update(status=status, reason=reason, message=message)
        if update_time:
            cond["lastUpdateTime"] = now
        return True
    added = {"type": kind, "status": status, "lastTransitionTime": now, "reason": reason, "message": message}
    if update_time:
        added["lastUpdateTime"] = now
    conditions.append(added)
    return True


class SelectorCache:
    """Each object's parsed `spec.selector` (metav1.LabelSelector), parsed once per revision."""

    def __init__(self) -> None:
        self._by_key: dict[Key, tuple[int, LabelSelector]] = {}

    def get(self, stored: StoredObject) -> LabelSelector | None:
        """The selector of `stored`, or None when it does not parse."""
        cached = self._by_key.get(stored.key)
        if cached is not None and cached[0] == stored.rv:
            return cached[1]
        try:
            selector = label_selector_from_object((stored.decode().get("spec") or {}).get("selector"))
        except SelectorError:
            return None
        self._by_key[stored.key] = (stored.rv, selector)
        return selector

    def forget(self, key: Key) -> None:
        self._by_key.pop(key, None)
