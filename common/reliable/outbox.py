"""The edge's outbox to the cloud: the latest message per key, sent with ACK tracking and re-sends.

Owns which upstream messages (node and pod status, leases, events) are unsent, in flight or parked,
and what must survive an edgecore restart (`to_rows`/`from_rows`). It never does I/O, reads a clock
or opens SQLite: the persistence shell stores the rows, the edge hub writes each `Outgoing` and feeds
back ACKs (op `response`, matched on parent_msg_id) and connection loss.

Rules:
- `put` keeps the newest message per key: it replaces an unsent older one, which keeps its place in
  the send order (status updates are snapshots, only the latest matters).
- One message per key in flight; a newer one waits behind it and goes out once it is ACKed or its
  connection is lost. Re-sends keep the msg_id and follow `RetryPolicy` (5 s, 5 sends, back-off),
  like the cloud's `NodeQueue`; after a back-off a newer waiting message goes instead of the old one.
- `disconnected()` puts in-flight messages back at the front of the send order, msg_ids kept.
- At most `window` (128) messages in flight, as in `NodeQueue`.
- Bound: at most `max_entries` keys held. When a `put` would exceed it, the message at the front of
  the send order (else the oldest waiting one) is dropped and counted in `stats.dropped`. Messages in
  flight or parked are never dropped, so while `max_entries` of them wait for a cloud that does not
  answer, each new `put` drops itself.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from common.message import Message, decode, encode
from common.reliable.nodequeue import DEFAULT_WINDOW, EnqueueResult, Outgoing
from common.reliable.policy import ResendSchedule, RetryPolicy, Tracked

DEFAULT_MAX_ENTRIES = 10_000


class OutboxRow(NamedTuple):
    """What the SQLite shell persists per key, in `to_rows` order (e.g. an INTEGER PRIMARY KEY).

    `message` is the wire JSON (`common.message.encode`); `attempt` counts earlier writes of
    `msg_id`, 0 if never written, so a restored message goes out as a re-send with the same id.
    """

    key: str
    msg_id: str
    message: bytes
    attempt: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    in_flight: int
    parked: int
    sent: int
    resent: int
    replaced: int
    acked: int
    dropped: int


class _Where(enum.Enum):
    PENDING = "pending"
    WAITING = "waiting"
    SCHEDULED = "scheduled"


class _Letter(Tracked):
    __slots__ = ("key", "message", "where", "writes")

    def __init__(self, key: str, message: Message, writes: int = 0) -> None:
        super().__init__(message.msg_id)
        self.key = key
        self.message = message
        self.writes = writes
        self.where = _Where.PENDING


class Outbox:
    """Latest-per-key upstream messages of one edge node; see the module docstring for the rules."""

    def __init__(self, policy: RetryPolicy | None = None, *, window: int = DEFAULT_WINDOW,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if window < 1 or max_entries < 1:
            raise ValueError(f"window and max_entries must be >= 1, got {window}, {max_entries}")
        self.policy = policy or RetryPolicy()
        self.window = window
        self.max_entries = max_entries
        self._schedule: ResendSchedule[_Letter] = ResendSchedule(self.policy)
        self._pending_by_key: OrderedDict[str, _Letter] = OrderedDict()
        self._waiting_by_key: dict[str, _Letter] = {}
        self._unacked_by_key: dict[str, _Letter] = {}
        self._unacked_by_msg_id: dict[str, _Letter] = {}
        self._sent = self._resent = self._replaced = self._acked = self._dropped = 0
        self._dropped_keys: list[str] = []

    def put(self, key: str, message: Message) -> EnqueueResult:
        """Queue `message` as the newest for `key` (QUEUED or REPLACED)."""
        result = self._store(_Letter(key, message))
        if len(self._pending_by_key) + len(self._waiting_by_key) + len(self._unacked_by_key) > self.max_entries:
            self._drop_oldest_unsent()
        return result

    def next_batch(self, now: float, limit: int) -> list[Outgoing]:
        """Up to `limit` messages to write now: due re-sends first, then pending keys in order."""
        batch: list[Outgoing] = []
        while len(batch) < limit:
            letter = self._next_letter(now)
            if letter is None:
                break
            batch.append(self._write(letter, now))
        return batch

    def next_deadline(self) -> float | None:
        """When `next_batch` may next have something without new input (re-send or back-off end)."""
        return self._schedule.next_deadline(room=self._has_room())

    def ack(self, parent_msg_id: str) -> str | None:
        """The cloud got `parent_msg_id`: the key it belonged to, or None for unknown or late ACKs."""
        letter = self._unacked_by_msg_id.pop(parent_msg_id, None)
        if letter is None:
            return None
        key = letter.key
        if letter.where is _Where.SCHEDULED:
            self._schedule.discard(parent_msg_id)
            del self._unacked_by_key[key]
        else:
            del self._pending_by_key[key]
        self._acked += 1
        successor = self._waiting_by_key.pop(key, None)
        if successor is not None:
            successor.where = _Where.PENDING
            self._pending_by_key[key] = successor
        return key

    def disconnected(self) -> None:
        """Connection lost: in-flight messages (or newer ones of their keys) go first when it is back."""
        for letter in reversed(self._schedule.drain_in_flight()):
            key = letter.key
            del self._unacked_by_key[key]
            front = self._waiting_by_key.pop(key, None)
            if front is None:
                front = letter
            else:
                del self._unacked_by_msg_id[letter.msg_id]
            front.where = _Where.PENDING
            self._pending_by_key[key] = front
            self._pending_by_key.move_to_end(key, last=False)

    def row_of(self, key: str) -> OutboxRow | None:
        """What the persistence shell should hold for `key` now (its newest message), None if nothing."""
        letter = self._waiting_by_key.get(key) or self._unacked_by_key.get(key) or self._pending_by_key.get(key)
        return None if letter is None else OutboxRow(letter.key, letter.msg_id, encode(letter.message), letter.writes)

    def take_dropped(self) -> list[str]:
        """Keys dropped by the bound since the last call (the shell re-reads their rows with `row_of`)."""
        dropped, self._dropped_keys = self._dropped_keys, []
        return dropped

    def to_rows(self) -> list[OutboxRow]:
        """One row per key (its newest message), in the order they should go out after a restart."""
        rows = []
        for letter in [*self._unacked_by_key.values(), *self._pending_by_key.values()]:
            newest = self._waiting_by_key.get(letter.key, letter)
            rows.append(OutboxRow(newest.key, newest.msg_id, encode(newest.message), newest.writes))
        return rows

    @classmethod
    def from_rows(cls, rows: Iterable[OutboxRow], policy: RetryPolicy | None = None, *,
                  window: int = DEFAULT_WINDOW, max_entries: int = DEFAULT_MAX_ENTRIES) -> Outbox:
        """Rebuild an outbox after a restart: every row pending, in row order, msg_ids kept."""
        outbox = cls(policy, window=window, max_entries=max_entries)
        for row in rows:
            message = decode(row.message)
            if message.msg_id != row.msg_id:
                raise ValueError(f"outbox row {row.key!r}: msg_id {row.msg_id} differs from the message's "
                                 f"{message.msg_id}")
            letter = _Letter(row.key, message, row.attempt)
            outbox._store(letter)
            if letter.writes:
                outbox._unacked_by_msg_id[letter.msg_id] = letter
        return outbox

    @property
    def stats(self) -> OutboxStats:
        return OutboxStats(
            pending=len(self._pending_by_key) + len(self._waiting_by_key),
            in_flight=len(self._schedule.in_flight_by_msg_id),
            parked=len(self._schedule.parked_by_msg_id),
            sent=self._sent, resent=self._resent, replaced=self._replaced, acked=self._acked, dropped=self._dropped,
        )

    def _store(self, letter: _Letter) -> EnqueueResult:
        key = letter.key
        if key in self._unacked_by_key:
            letter.where = _Where.WAITING
            replaced = self._waiting_by_key.get(key)
            self._waiting_by_key[key] = letter
        else:
            replaced = self._pending_by_key.get(key)
            self._pending_by_key[key] = letter  # an existing key keeps its place in the send order
        if replaced is None:
            return EnqueueResult.QUEUED
        self._forget(replaced)
        self._replaced += 1
        return EnqueueResult.REPLACED

    def _forget(self, letter: _Letter) -> None:
        if self._unacked_by_msg_id.get(letter.msg_id) is letter:
            del self._unacked_by_msg_id[letter.msg_id]

    def _drop_oldest_unsent(self) -> None:
        if self._pending_by_key:
            _, oldest = self._pending_by_key.popitem(last=False)
        elif self._waiting_by_key:
            oldest = self._waiting_by_key.pop(next(iter(self._waiting_by_key)))
        else:
            return
        self._forget(oldest)
        self._dropped += 1
        self._dropped_keys.append(oldest.key)

    def _has_room(self) -> bool:
        return len(self._schedule.in_flight_by_msg_id) < self.window

    def _next_letter(self, now: float) -> _Letter | None:
        due = self._schedule.due(now, room=self._has_room())
        if due is not None:
            letter, after_back_off = due
            successor = self._waiting_by_key.pop(letter.key, None) if after_back_off else None
            if successor is None:
                return letter
            del self._unacked_by_key[letter.key]
            self._forget(letter)
            return successor
        if self._pending_by_key and self._has_room():
            return self._pending_by_key.popitem(last=False)[1]
        return None

    def _write(self, letter: _Letter, now: float) -> Outgoing:
        letter.writes += 1
        if letter.writes > 1:
            self._resent += 1
        else:
            self._sent += 1
        letter.where = _Where.SCHEDULED
        self._unacked_by_key[letter.key] = letter
        self._unacked_by_msg_id[letter.msg_id] = letter
        self._schedule.sent(letter, now)
        return Outgoing(letter.message, letter.key, letter.writes, letter.writes > 1)
