"""The watch cache and fan-out: recent committed events in revision order, and the watchers fed from it.

Owns the in-memory history that lets a watch resume from a resourceVersion, and the live delivery
of each committed batch to the watchers of its group-resource. It never touches SQLite and never
decides what is committed: the store publishes a batch only after it is durable.

History: every revision is exactly one event, so the cache covers one unbroken range of revisions
(`oldest_rv`, `current_rv`]. It keeps at most `capacity` events and nothing at or below the
compaction floor (`trim`). A watch from R replays the cached events above R and then continues
live; R below `oldest_rv` (compacted or evicted) raises TooOldError, the HTTP 410 that makes a
client relist. R above `current_rv` raises it too: such a client saw revisions this store never
had (a restored backup), and only a relist makes it consistent again.

Gap-free start: `watch()` is synchronous and so is `publish()`, both on the event loop; the replay
is taken from the cache and the watcher registered in the same step, so no batch can fall between
them. Each watcher still drops any event at or below the last revision it accepted, so a replayed
event can never be delivered twice.

Overflow policy: a watcher's live queue holds at most `queue_size` events. A consumer that falls
that far behind is closed: its queued events are dropped (freeing the memory at once) and its next
read raises WatcherClosedError. The writer never blocks and memory never grows for a slow client;
the client re-watches from `Watcher.rv` (served from this cache if still inside it, else a 410 and
a relist). Replayed events do not count against the bound: they are references to events the
cache holds anyway.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

from cloudcore.controlplane.store.types import TooOldError, WatcherClosedError, WatchEvent

DEFAULT_CAPACITY: Final = 100_000
DEFAULT_QUEUE_SIZE: Final = 10_000
# `async for` has no deadline of its own; it re-arms its bounded wait at this period.
_ITER_WAIT: Final = 60.0
# Evicted events are dropped from the front of the list in bulk, not one by one.
_EVICT_CHUNK: Final = 4096

_Scope = tuple[str, str | None]


def _event_rv(event: WatchEvent) -> int:
    return event.object.rv


class Watcher:
    """One watch on a group-resource, optionally one namespace. Label/field filtering is the caller's.

    Read with `await next(timeout)` (None when nothing came in time, so the caller can send a
    bookmark) or `async for`. `rv` is the revision of the last delivered event (at first the
    revision the watch started from). Closing is idempotent and immediate.
    """

    __slots__ = ("_cache", "_closed_by_consumer", "_closed_reason", "_live", "_queue_size", "_replay",
                 "_rv", "_seen_rv", "_wake", "gr", "namespace")

    def __init__(self, cache: WatchCache, gr: str, namespace: str | None, start_rv: int,
                 replay: list[WatchEvent], queue_size: int) -> None:
        self.gr = gr
        self.namespace = namespace
        self._cache = cache
        self._rv = start_rv
        self._replay: deque[WatchEvent] = deque(replay)
        self._live: deque[WatchEvent] = deque()
        self._queue_size = queue_size
        # Highest revision accepted into this watcher: live events at or below it are duplicates.
        self._seen_rv = replay[-1].rv if replay else start_rv
        self._wake = asyncio.Event()
        self._closed_reason: str | None = None
        self._closed_by_consumer = False

    @property
    def rv(self) -> int:
        """Revision of the last event handed to the consumer (or the start revision before any)."""
        return self._rv

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    @property
    def closed_reason(self) -> str | None:
        """Why the watcher was closed ("overflow: ...", "store closed", "closed by consumer"), if it was."""
        return self._closed_reason

    def pending(self) -> int:
        """Events waiting to be read (replay plus live)."""
        return len(self._replay) + len(self._live)

    async def next(self, timeout: float) -> WatchEvent | None:
        """The next event, or None if none arrived within `timeout` seconds.

        Raises WatcherClosedError once the watcher is closed, whoever closed it.
        """
        event = self._pop()
        if event is not None:
            return event
        self._wake.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            return None
        return self._pop()

    def close(self) -> None:
        """Stop the watch: it leaves the fan-out and an `async for` over it ends."""
        if self._closed_reason is None:
            self._closed_by_consumer = True
            self._shut("closed by consumer")
            self._cache._unregister(self)

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> WatchEvent:
        """Next event; ends quietly after `close()`, raises WatcherClosedError for any other closing."""
        while True:
            try:
                event = await self.next(_ITER_WAIT)
            except WatcherClosedError:
                if self._closed_by_consumer:
                    raise StopAsyncIteration from None
                raise
            if event is not None:
                return event

    def _pop(self) -> WatchEvent | None:
        if self._closed_reason is not None:
            raise WatcherClosedError(f"watch on {self.gr} closed: {self._closed_reason}")
        if self._replay:
            event = self._replay.popleft()
        elif self._live:
            event = self._live.popleft()
        else:
            return None
        self._rv = event.rv
        return event

    def _offer(self, event: WatchEvent) -> bool:
        """Queue a live event; False when this overflowed the queue and closed the watcher."""
        if self._closed_reason is not None or event.rv <= self._seen_rv:
            return True
        if len(self._live) >= self._queue_size:
            self._shut(f"overflow: consumer fell {self._queue_size} events behind at revision {event.rv}")
            return False
        self._seen_rv = event.rv
        self._live.append(event)
        self._wake.set()
        return True

    def _shut(self, reason: str) -> None:
        self._closed_reason = reason
        self._replay.clear()
        self._live.clear()
        self._wake.set()


class WatchCache:
    """The rv-ordered event history plus the watchers, indexed by (gr, namespace or None)."""

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if capacity < 1 or queue_size < 1:
            raise ValueError("capacity and queue_size must be positive")
        self._capacity = capacity
        self._queue_size = queue_size
        # Events live in _events[_head:]; the evicted prefix is deleted in chunks.
        self._events: list[WatchEvent] = []
        self._head = 0
        self._oldest_rv = 0
        self._current_rv = 0
        self._by_scope: dict[_Scope, dict[Watcher, None]] = {}
        self._closed = False

    @property
    def current_rv(self) -> int:
        """Revision of the newest published event (or of the store when loaded without history)."""
        return self._current_rv

    @property
    def oldest_rv(self) -> int:
        """Every event above this revision is cached: the lowest revision a watch can resume from."""
        return self._oldest_rv

    def __len__(self) -> int:
        return len(self._events) - self._head

    def watcher_count(self) -> int:
        return sum(len(watchers) for watchers in self._by_scope.values())

    def load(self, events: Iterable[WatchEvent], *, oldest_rv: int, current_rv: int) -> None:
        """Start from history read back from the log: `events` are every revision above `oldest_rv`."""
        self._events = list(events)
        self._head = 0
        self._oldest_rv = oldest_rv
        self._current_rv = current_rv
        if self._events and (self._events[0].rv != oldest_rv + 1 or self._events[-1].rv != current_rv):
            raise ValueError(f"history {self._events[0].rv}..{self._events[-1].rv} does not cover "
                             f"({oldest_rv}, {current_rv}]")
        self._evict()

    def publish(self, events: Sequence[WatchEvent]) -> None:
        """Append a committed batch (consecutive revisions after `current_rv`) and fan it out."""
        if not events:
            return
        if events[0].rv != self._current_rv + 1:
            raise ValueError(f"batch starts at revision {events[0].rv}, expected {self._current_rv + 1}")
        self._events.extend(events)
        self._current_rv = events[-1].rv
        self._evict()
        overflowed: list[Watcher] = []
        by_scope = self._by_scope
        for event in events:
            key = event.object.key
            for scope in ((key.gr, None), (key.gr, key.namespace)):
                watchers = by_scope.get(scope)
                if watchers:
                    for watcher in watchers:
                        if not watcher._offer(event):
                            overflowed.append(watcher)
        # Unregistered after the loop: the per-scope dicts must not change while iterated.
        for watcher in overflowed:
            self._unregister(watcher)

    def trim(self, floor: int) -> None:
        """Forget events at or below the compaction floor `floor`."""
        if floor <= self._oldest_rv:
            return
        self._head = bisect.bisect_right(self._events, floor, lo=self._head, key=_event_rv)
        self._oldest_rv = min(floor, self._current_rv)
        self._drop_evicted()

    def watch(self, gr: str, namespace: str | None, since_rv: int | None) -> Watcher:
        """A watcher that gets every event of `gr` (in `namespace` if given) after `since_rv`.

        `since_rv` None or 0 means from now. Raises TooOldError when the events after `since_rv`
        are no longer (or were never) all here.
        """
        if self._closed:
            raise WatcherClosedError("watch cache closed")
        if not since_rv:
            watcher = Watcher(self, gr, namespace, self._current_rv, [], self._queue_size)
        else:
            if since_rv < self._oldest_rv or since_rv > self._current_rv:
                raise TooOldError(since_rv, self._oldest_rv)
            start = bisect.bisect_right(self._events, since_rv, lo=self._head, key=_event_rv)
            replay = [event for event in self._events[start:]
                      if event.object.key.gr == gr
                      and (namespace is None or event.object.key.namespace == namespace)]
            watcher = Watcher(self, gr, namespace, since_rv, replay, self._queue_size)
        self._by_scope.setdefault((gr, namespace), {})[watcher] = None
        return watcher

    def close(self) -> None:
        """Close every watcher (their reads raise WatcherClosedError) and refuse new watches."""
        self._closed = True
        for watchers in self._by_scope.values():
            for watcher in watchers:
                watcher._shut("store closed")
        self._by_scope.clear()

    def _unregister(self, watcher: Watcher) -> None:
        scope = (watcher.gr, watcher.namespace)
        watchers = self._by_scope.get(scope)
        if watchers is not None:
            watchers.pop(watcher, None)
            if not watchers:
                del self._by_scope[scope]

    def _evict(self) -> None:
        excess = len(self._events) - self._head - self._capacity
        if excess > 0:
            self._head += excess
            self._oldest_rv = self._events[self._head - 1].rv
            self._drop_evicted()

    def _drop_evicted(self) -> None:
        # Amortised O(1) per event: the dead prefix goes once it is both big and half the list.
        if self._head >= _EVICT_CHUNK and self._head * 2 >= len(self._events):
            del self._events[: self._head]
            self._head = 0
