"""When to send again: the retry and reconnect strategies, and the timer book-keeping that applies them.

Owns `RetryPolicy` (ACK timeout, sends per round, back-off between rounds), `ReconnectPolicy` with its
per-client counter `ReconnectBackoff`, and `ResendSchedule`, which applies a `RetryPolicy` to the
messages awaiting an ACK (deadlines in send order, parking with back-off). Time is always passed in as
`now` (seconds on any monotonic clock); this module never reads a clock, sleeps, draws random numbers
on its own or touches messages: callers inject the clock and the randomness.

Upstream facts (ref/protocol.md section 4.4): the cloud waits 5 s for an ACK, re-sends the same msg_id
at most 4 more times (5 sends over about 25 s), then requeues the key with a rate limiter.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

# 2**62 times any sane base is far beyond any cap; bounding the exponent keeps floats finite.
_MAX_EXPONENT: Final = 62


def _doubling(base: float, cap: float, attempt: int) -> float:
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait for an ACK, how often to send, and how long to back off between rounds.

    A round is up to `max_sends` writes of one msg_id, `ack_timeout` apart (5 sends = first send plus
    4 re-sends, like upstream). When a round ends without an ACK the message is parked for
    `backoff(n)` seconds, n = 1 for its first back-off, then a new round starts with the same msg_id.
    `backoff` doubles from `backoff_base` (1 s) up to `backoff_cap` (60 s); `jitter`, when given,
    maps that delay to the one used (e.g. `lambda d: d * rng.uniform(0.5, 1.0)` with a seeded rng),
    so tests stay deterministic. A negative jittered delay counts as 0.
    """

    ack_timeout: float = 5.0
    max_sends: int = 5
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    jitter: Callable[[float], float] | None = None

    def __post_init__(self) -> None:
        if self.ack_timeout <= 0:
            raise ValueError(f"ack_timeout must be > 0, got {self.ack_timeout}")
        if self.max_sends < 1:
            raise ValueError(f"max_sends must be >= 1, got {self.max_sends}")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise ValueError(f"need 0 < backoff_base <= backoff_cap, got {self.backoff_base}, {self.backoff_cap}")

    def backoff(self, attempt: int) -> float:
        """Seconds to park a message after its `attempt`-th round without an ACK (attempt >= 1)."""
        delay = _doubling(self.backoff_base, self.backoff_cap, attempt)
        return delay if self.jitter is None else max(0.0, self.jitter(delay))


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Client back-off between connection attempts: full jitter over a doubling ceiling.

    `delay(attempt, rand)` is `rand() * min(cap, base * 2**(attempt - 1))` with `rand` returning a
    float in [0, 1): 0.5 s ceiling for the first retry, 10 s at most. Full jitter spreads the
    reconnects of many edge nodes after a cloudcore restart instead of having them arrive in waves.
    The 10 s cap bounds how long a node stays away after its network heals (upstream waits a fixed
    30 s); 1,000 nodes dialling at most every 10 s cost a cloudcore about 100 handshakes a second.

    Reset: the attempt count goes back to 0 only once a connection has stayed up `stable_after`
    seconds (default 30 s, two edge heartbeats), not on a bare connect, so a server that accepts and
    then drops at once cannot make a client spin. `ReconnectBackoff` keeps that count per client.
    """

    base: float = 0.5
    cap: float = 10.0
    stable_after: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"need 0 < base <= cap, got {self.base}, {self.cap}")
        if self.stable_after < 0:
            raise ValueError(f"stable_after must be >= 0, got {self.stable_after}")

    def ceiling(self, attempt: int) -> float:
        """Largest delay for the `attempt`-th retry (attempt >= 1)."""
        return _doubling(self.base, self.cap, attempt)

    def delay(self, attempt: int, rand: Callable[[], float]) -> float:
        """Seconds to wait before the `attempt`-th retry; `rand()` must return a float in [0, 1)."""
        return rand() * self.ceiling(attempt)


class ReconnectBackoff:
    """One client's retry counter around a `ReconnectPolicy` (see its reset rule)."""

    def __init__(self, policy: ReconnectPolicy | None = None) -> None:
        self.policy = policy or ReconnectPolicy()
        self.attempt = 0
        self._connected_at: float | None = None

    def connected(self, now: float) -> None:
        """A connection is up; it resets the count once it has lasted `stable_after`."""
        self._connected_at = now

    def next_delay(self, now: float, rand: Callable[[], float]) -> float:
        """A dial failed or a connection dropped: seconds to wait before the next dial."""
        if self._connected_at is not None and now - self._connected_at >= self.policy.stable_after:
            self.attempt = 0
        self._connected_at = None
        self.attempt += 1
        return self.policy.delay(self.attempt, rand)

    def reset(self) -> None:
        """Forget every failure (e.g. after the operator changed the server address)."""
        self.attempt = 0
        self._connected_at = None


class Tracked:
    """What `ResendSchedule` keeps per message awaiting an ACK: its id and where it is in its retries."""

    __slots__ = ("due_at", "msg_id", "rounds", "sends", "sent_at")

    def __init__(self, msg_id: str) -> None:
        self.msg_id = msg_id
        self.sends = 0  # writes in the current round
        self.rounds = 0  # rounds that ended without an ACK
        self.sent_at = 0.0
        self.due_at = 0.0  # ACK deadline while in flight, end of back-off while parked


T = TypeVar("T", bound=Tracked)


class ResendSchedule(Generic[T]):
    """Messages written and not yet ACKed: in flight (ACK deadline running) or parked (backing off).

    Every message gets the same `ack_timeout`, so send order is deadline order and an OrderedDict is
    the timer queue (O(1) per operation, provided `now` never goes backwards). Back-offs differ, so
    parked messages sit in a heap; entries removed early are skipped lazily. `on_park` is told of
    each message parked (e.g. so its owner may let the memory bound reclaim its content).
    """

    def __init__(self, policy: RetryPolicy, on_park: Callable[[T], None] | None = None) -> None:
        self.policy = policy
        self._on_park = on_park
        self.in_flight_by_msg_id: OrderedDict[str, T] = OrderedDict()
        self.parked_by_msg_id: dict[str, T] = {}
        self._park_heap: list[tuple[float, int, T]] = []
        self._park_order = itertools.count()

    def sent(self, item: T, now: float) -> None:
        """`item` was just written: start (or restart) its ACK deadline."""
        item.sends += 1
        item.sent_at = now
        item.due_at = now + self.policy.ack_timeout
        self.in_flight_by_msg_id[item.msg_id] = item
        self.in_flight_by_msg_id.move_to_end(item.msg_id)

    def discard(self, msg_id: str) -> T | None:
        """Stop tracking `msg_id` (ACKed or superseded); None when it is neither in flight nor parked."""
        item = self.in_flight_by_msg_id.pop(msg_id, None)
        return item if item is not None else self.parked_by_msg_id.pop(msg_id, None)

    def due(self, now: float, *, room: bool) -> tuple[T, bool] | None:
        """The next message whose time has come, and whether it comes back from a back-off.

        An in-flight message past its deadline is returned for a re-send while its round has sends
        left, and parked otherwise. A parked message whose back-off ended is returned only when the
        caller has `room` for one more in flight; it leaves the schedule with a fresh round.
        """
        while self.in_flight_by_msg_id:
            item = next(iter(self.in_flight_by_msg_id.values()))
            if item.due_at > now:
                break
            if item.sends < self.policy.max_sends:
                return item, False
            self._park(item, now)
        released = self._release_parked(now) if room else None
        return None if released is None else (released, True)

    def next_deadline(self, *, room: bool) -> float | None:
        """Earliest ACK deadline, or end of back-off when the caller has room to send it."""
        deadlines = []
        if self.in_flight_by_msg_id:
            deadlines.append(next(iter(self.in_flight_by_msg_id.values())).due_at)
        if room and self._drop_stale_heap_top():
            deadlines.append(self._park_heap[0][0])
        return min(deadlines, default=None)

    def drain_in_flight(self) -> list[T]:
        """Take every in-flight message out, in send order, with a fresh round (connection lost)."""
        drained = list(self.in_flight_by_msg_id.values())
        self.in_flight_by_msg_id.clear()
        for item in drained:
            item.sends = 0
        return drained

    def _park(self, item: T, now: float) -> None:
        del self.in_flight_by_msg_id[item.msg_id]
        item.rounds += 1
        item.sends = 0
        item.due_at = now + self.policy.backoff(item.rounds)
        self.parked_by_msg_id[item.msg_id] = item
        heapq.heappush(self._park_heap, (item.due_at, next(self._park_order), item))
        if self._on_park is not None:
            self._on_park(item)

    def _release_parked(self, now: float) -> T | None:
        if not self._drop_stale_heap_top() or self._park_heap[0][0] > now:
            return None
        item = heapq.heappop(self._park_heap)[2]
        del self.parked_by_msg_id[item.msg_id]
        return item

    def _drop_stale_heap_top(self) -> bool:
        """Pop heap entries of messages no longer parked; True when a live one is on top."""
        heap = self._park_heap
        while heap:
            due_at, _, item = heap[0]
            if self.parked_by_msg_id.get(item.msg_id) is item and item.due_at == due_at:
                return True
            heapq.heappop(heap)
        return False
