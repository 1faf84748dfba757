"""The store's change feed: every committed change of the `meta` table, in commit order, for in-process readers.

`MetaStore.apply` turns each written change into a `MetaEvent` (ADDED, MODIFIED or DELETED, with the
object as stored, or for DELETED the last stored object) and logs it in `meta_events` in the same
transaction. After the commit MetaManager hands the events to `EventHub.publish`, which fans them out to
the subscribers (MetaServer's watches) without ever waiting: each subscription has a bounded buffer,
and a subscriber whose buffer is full is closed rather than slowing the store down or growing without
bound. A closed watcher ends its stream; its client re-watches from the last resourceVersion it saw
and catches up from the persisted log.

`seq` orders events (the log's primary key, increasing with every commit); `rv` is the cloud's
resourceVersion of the change, which clients see.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

ADDED: Final = "ADDED"
MODIFIED: Final = "MODIFIED"
DELETED: Final = "DELETED"

DEFAULT_BUFFER: Final = 1024  # events one subscriber may have pending before it is dropped
DEFAULT_MAX_SUBSCRIBERS: Final = 256


@dataclass(frozen=True, slots=True)
class MetaEvent:
    """One committed change: `value` is the object JSON (for DELETED, the last stored object)."""

    seq: int
    key: str
    type: str
    event: str
    rv: int | None
    value: str


class SubscriptionClosed(Exception):
    """The subscription ended: `dropped` when it fell behind, otherwise the hub or its owner closed it."""

    def __init__(self, dropped: bool) -> None:
        super().__init__("fell behind the store's changes" if dropped else "closed")
        self.dropped = dropped


class TooManySubscribers(Exception):
    pass


class Subscription:
    """Events of some resource types, buffered up to `capacity`; one consumer task."""

    def __init__(self, hub: EventHub, types: frozenset[str], capacity: int) -> None:
        self._hub = hub
        self.types = types
        self.capacity = capacity
        self._items: deque[MetaEvent] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.dropped = False

    def _offer(self, event: MetaEvent) -> None:
        if self.closed:
            return
        if len(self._items) >= self.capacity:
            self.dropped = True
            self._items.clear()
            self.close()
            return
        self._items.append(event)
        self._ready.set()

    async def next(self, timeout: float) -> MetaEvent | None:
        """The next event; None when none came within `timeout`; SubscriptionClosed once closed."""
        if not self._items and not self.closed:
            self._ready.clear()
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._ready.wait()
            except TimeoutError:
                return None
        if self.closed:
            raise SubscriptionClosed(self.dropped)
        return self._items.popleft()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub._remove(self)
        self._ready.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class EventHub:
    """Fan-out of committed changes to at most `max_subscribers` bounded subscriptions."""

    def __init__(self, buffer: int = DEFAULT_BUFFER, max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS) -> None:
        self.buffer = buffer
        self.max_subscribers = max_subscribers
        self._subscribers: set[Subscription] = set()
        self.published = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, types: Iterable[str]) -> Subscription:
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManySubscribers(f"{self.max_subscribers} watches are open already")
        subscription = Subscription(self, frozenset(types), self.buffer)
        self._subscribers.add(subscription)
        return subscription

    def publish(self, events: Iterable[MetaEvent]) -> None:
        """Hand committed events to every interested subscriber; never waits."""
        for event in events:
            self.published += 1
            for subscription in tuple(self._subscribers):
                if event.type in subscription.types:
                    subscription._offer(event)
                    if subscription.dropped:
                        self.dropped += 1

    def close(self) -> None:
        """End every subscription (shutdown)."""
        for subscription in tuple(self._subscribers):
            subscription.close()

    def _remove(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
