"""A keyed work queue like client-go's: each key waits at most once, is never worked by two workers at
once, and a failed key comes back after a per-key back-off (0.1 s doubling to 30 s).

Bounded: at most `limit` distinct keys wait (`add` waits for room, with the caller's timeout). Pure asyncio,
no I/O; the clock is injectable so back-off is tested without sleeping. What it must never do: lose a key
added while that key was being worked (it is worked again after `done`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import deque
from collections.abc import Callable
from typing import Final

BACKOFF_MIN: Final = 0.1
BACKOFF_MAX: Final = 30.0
DEFAULT_LIMIT: Final = 100_000


class KeyQueue:
    def __init__(self, limit: int = DEFAULT_LIMIT, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._ready: deque[str] = deque()
        self._waiting: set[str] = set()  # in _ready, or to be put there when its worker is done
        self._working: set[str] = set()
        self._delayed: list[tuple[float, str]] = []
        self._failures: dict[str, int] = {}
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._delayed)

    async def add(self, key: str) -> None:
        async with self._changed:
            if key in self._waiting:
                return
            await self._changed.wait_for(lambda: len(self._waiting) < self.limit)
            if key in self._waiting:
                return
            self._waiting.add(key)
            if key not in self._working:
                self._ready.append(key)
            self._changed.notify_all()

    async def get(self) -> str:
        """The next key to work; the caller must call `done(key, ok)` afterwards."""
        async with self._changed:
            while True:
                self._promote_due()
                if self._ready:
                    key = self._ready.popleft()
                    self._waiting.discard(key)
                    self._working.add(key)
                    self._changed.notify_all()
                    return key
                timeout = self._delayed[0][0] - self._clock() if self._delayed else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)

    async def done(self, key: str, ok: bool) -> float | None:
        """Release a key; if not `ok`, schedule it again after its back-off (returned, in seconds)."""
        async with self._changed:
            self._working.discard(key)
            delay: float | None = None
            if ok:
                self._failures.pop(key, None)
            else:
                failures = self._failures.get(key, 0)
                self._failures[key] = failures + 1
                delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** failures)
                heapq.heappush(self._delayed, (self._clock() + delay, key))
            if key in self._waiting:
                self._ready.append(key)
            self._changed.notify_all()
            return delay

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, key = heapq.heappop(self._delayed)
            if key not in self._waiting:
                self._waiting.add(key)
                if key not in self._working:
                    self._ready.append(key)
