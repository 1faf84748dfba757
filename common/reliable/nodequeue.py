"""CloudHub's reliable delivery to ONE edge node: latest-per-object queue, ACK tracking, resends, bounds.

Owns what is pending, in flight, parked and acknowledged for a node, and decides what to write next.
It never does I/O, reads a clock, sleeps or touches ObjectSync: the asyncio shell writes each
`Outgoing` (calling `next_message` until it returns None), feeds back ACKs and connection loss,
persists each `Acked` (RV update, or ObjectSync delete after a delete), and then sleeps until
`next_deadline()` or until it enqueues or gets an ACK.
Methods take `now` (seconds on a monotonic clock that never goes backwards).

Rules (upstream facts in ref/protocol.md section 4; where we differ, it says so):

- Keys are chosen by the caller (e.g. kind + resource without the node prefix; upstream keys by UID).
  Each key has at most one unsent entry, so a burst of updates costs one message. A newer entry
  replaces an unsent older one and the key keeps its place in the send order, like a deduplicating
  work queue. Every enqueued message must carry its own msg_id.
- STALE: a message whose RV is not newer than every RV the key has pending, in flight or acked is
  dropped. A delete skips the RV check (its RV may equal the object's last one) but is STALE when a
  delete for the key is already queued or unacknowledged: the edge hears of it once.
- COLLAPSED: a delete for a key the edge never acknowledged, whose only entry is an insert that was
  never written, drops both. Any earlier write of the key (even unacknowledged) rules this out.
- One message per key in flight, so the edge sees each key's messages in RV order; a message
  enqueued meanwhile waits behind it and replaces any other waiting one. At most `window` (128)
  messages are in flight for the node (the no-ACK lane aside): with 1 KiB objects that is 128 KiB
  unacknowledged, which bounds both the edge's backlog and the re-send burst after a timeout, yet
  keeps a 10 ms ACK round trip above 10,000 messages/s.
- ACK timeout, re-sends of the same msg_id and back-off come from `RetryPolicy` (5 s, 5 sends). After
  a back-off the same msg_id is sent again, unless a newer message for the key arrived meanwhile:
  then that one goes instead. Back-offs survive reconnects, so a message the edge keeps rejecting
  cannot spin a flapping link.
- Messages that need no ACK (replies to edge queries) go to a FIFO lane, are written once and are
  dropped on disconnect: they are fire-and-forget upstream too. The lane keeps the newest
  `max_no_ack` messages.
- Bounds: at most `max_entries` entries hold message content, and at most `max_bytes` of it (per
  `size_of`). Beyond that the queue never drops a key: it drops the content of the entries that have
  held theirs longest (in-flight ones excepted) and keeps key, RV and delete flag, a dirty marker.
  When a marker's turn comes, `resolve(key)` (backed by the informer cache) returns the object's
  current message, RV and delete flag, or None when nothing needs sending any more; the resolved
  message has its own msg_id. Memory stays bounded and nothing is lost. `stats.dropped_contents`
  counts these drops.
- `on_ack_rtt`, when given, is called with each ACK's round trip (seconds from the message's last
  write), for the ACK latency histogram; it must be cheap and must not call back into the queue.
- ADVANCE: `advance(key, rv)` takes an update the edge already has in substance (a pod change made only
  of the status the edge itself reported) without sending it. With nothing of the key pending, waiting
  or unacknowledged and an earlier RV acked, `rv` is acknowledged now (NOW). With only an earlier
  message of the key in flight, that message's ACK will acknowledge `rv` (ON_ACK): the edge then holds
  the same object less the status. Otherwise (NO) the caller enqueues the message as usual, which at
  worst replaces an unsent one.
- Acknowledged RVs per key come from ACKs and from `load_acked` (ObjectSync at start), so after a
  cloudcore restart only newer RVs are sent. An acknowledged delete forgets the key. Like upstream,
  the shell should record a key (RV "0") when it is first accepted, so a restart can still send the
  delete of an object the edge may hold.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

from common.message import Message, encode
from common.reliable.policy import ResendSchedule, RetryPolicy, Tracked

DEFAULT_WINDOW = 128
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_NO_ACK = 1024

# resolve(key) -> (message, rv, delete) for the object's current state, or None: nothing to send.
Resolved: TypeAlias = tuple[Message, int | None, bool]
Resolver: TypeAlias = Callable[[str], Resolved | None]


def encoded_size(message: Message) -> int:
    """Wire size of a message; the default `size_of` (costs one encode per enqueue)."""
    return len(encode(message))


class EnqueueResult(enum.Enum):
    QUEUED = "queued"
    REPLACED = "replaced"  # an unsent older message for the key was dropped in favour of this one
    STALE = "stale"  # dropped: not newer than what is pending, in flight or acked
    COLLAPSED = "collapsed"  # delete of an unsent insert the edge never acked: both dropped
    FULL_KEY_ONLY = "full_key_only"  # accepted, and the bound dropped content: dirty markers now exist


class Outgoing(NamedTuple):
    """One message to write now. `attempt` counts writes of this msg_id, this one included."""

    message: Message
    key: str
    attempt: int
    is_resend: bool


class Advanced(enum.Enum):
    """What `advance` did (see ADVANCE in the module docstring)."""

    NOW = "now"  # acknowledged at once: persist it now
    ON_ACK = "on_ack"  # the in-flight message's ACK acknowledges it (its `Acked` carries the RV)
    NO = "no"  # enqueue the message instead


class Acked(NamedTuple):
    """The edge stored this key at this RV; for a delete, the shell deletes the ObjectSync."""

    key: str
    rv: int | None
    delete: bool


@dataclass(frozen=True, slots=True)
class NodeQueueStats:
    pending: int  # keys with an entry not written on this connection (includes dirty markers)
    in_flight: int
    parked: int
    acked_keys: int
    held_bytes: int
    sent: int  # first writes
    resent: int  # further writes of the same msg_id
    replaced: int
    stale: int
    collapsed: int
    acked: int
    advanced: int  # updates recorded as acknowledged without being sent (`advance`)
    dropped_contents: int
    dropped_no_ack: int
    last_ack_rtt: float  # seconds from the last write of a message to its ACK


class _Counters:
    __slots__ = ("acked", "advanced", "collapsed", "dropped_contents", "dropped_no_ack", "replaced", "resent", "sent",
                 "stale")

    def __init__(self) -> None:
        self.sent = self.resent = self.replaced = self.stale = self.collapsed = self.acked = self.advanced = 0
        self.dropped_contents = self.dropped_no_ack = 0


class _Where(enum.Enum):
    PENDING = "pending"  # ready, in pending_by_key's send order
    WAITING = "waiting"  # behind the key's unacknowledged message
    SCHEDULED = "scheduled"  # written: in flight or parked in the ResendSchedule


class _Entry(Tracked):
    __slots__ = ("delete", "edge_may_know", "key", "message", "rv", "size", "where", "writes")

    def __init__(self, key: str, message: Message, rv: int | None, delete: bool, size: int) -> None:
        super().__init__(message.msg_id)
        self.key = key
        self.message: Message | None = message  # None: content dropped by the bound, resolve at send time
        self.rv = rv
        self.delete = delete
        self.size = size
        self.writes = 0
        self.edge_may_know = False  # an earlier message for this key was written (maybe stored)
        self.where = _Where.PENDING


class NodeQueue:
    """Reliable, deduplicating cloud-to-edge queue of one node; see the module docstring for rules."""

    def __init__(
        self,
        *,
        resolve: Resolver,
        policy: RetryPolicy | None = None,
        window: int = DEFAULT_WINDOW,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_no_ack: int = DEFAULT_MAX_NO_ACK,
        size_of: Callable[[Message], int] = encoded_size,
        on_ack_rtt: Callable[[float], None] | None = None,
    ) -> None:
        if window < 1 or max_no_ack < 1 or max_entries < 0 or max_bytes < 0:
            raise ValueError("window and max_no_ack must be >= 1, max_entries and max_bytes >= 0")
        self.policy = policy or RetryPolicy()
        self.window = window
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._resolve = resolve
        self._size_of = size_of
        self._on_ack_rtt = on_ack_rtt  # observability hook: seconds from a message's last write to its ACK
        self._schedule: ResendSchedule[_Entry] = ResendSchedule(self.policy, on_park=self._parked)
        self._pending_by_key: OrderedDict[str, _Entry] = OrderedDict()
        self._waiting_by_key: dict[str, _Entry] = {}
        self._unacked_by_key: dict[str, _Entry] = {}  # written, in flight or parked
        self._unacked_by_msg_id: dict[str, _Entry] = {}  # also written entries back in pending
        self._acked_rv: dict[str, int] = {}
        self._no_ack_lane: deque[tuple[str, Message]] = deque(maxlen=max_no_ack)
        self._content_age: OrderedDict[_Entry, None] = OrderedDict()  # trimmable, oldest content first
        self._held_entries = 0
        self._held_bytes = 0
        self._counts = _Counters()
        self._last_ack_rtt = 0.0

    # -- enqueue -------------------------------------------------------------------------------------

    def enqueue(self, key: str, message: Message, *, rv: int | None, delete: bool,
                needs_ack: bool = True) -> EnqueueResult:
        """Offer a message for `key`; see the module docstring for what each result means."""
        if not needs_ack:
            return self._enqueue_no_ack(key, message)
        latest = self._latest(key)
        if self._is_stale(key, latest, rv, delete):
            self._counts.stale += 1
            return EnqueueResult.STALE
        if delete and latest is not None and self._collapses(key, latest):
            self._drop(latest)
            del self._pending_by_key[key]
            self._counts.collapsed += 1
            return EnqueueResult.COLLAPSED
        result = self._store(_Entry(key, message, rv, delete, self._size_of(message)))
        return EnqueueResult.FULL_KEY_ONLY if self._trim() else result

    def _enqueue_no_ack(self, key: str, message: Message) -> EnqueueResult:
        lane = self._no_ack_lane
        if len(lane) == lane.maxlen:
            self._counts.dropped_no_ack += 1
        lane.append((key, message))
        return EnqueueResult.QUEUED

    def _latest(self, key: str) -> _Entry | None:
        """The newest entry of `key`: waiting, else pending, else unacknowledged."""
        return self._waiting_by_key.get(key) or self._pending_by_key.get(key) or self._unacked_by_key.get(key)

    def _is_stale(self, key: str, latest: _Entry | None, rv: int | None, delete: bool) -> bool:
        if delete:
            return latest is not None and latest.delete
        if rv is None:
            return False
        newest = self._newest_rv(key)
        return newest is not None and rv <= newest

    def _newest_rv(self, key: str) -> int | None:
        newest = self._acked_rv.get(key)
        for entry in (self._unacked_by_key.get(key), self._waiting_by_key.get(key), self._pending_by_key.get(key)):
            if entry is not None and entry.rv is not None and (newest is None or entry.rv > newest):
                newest = entry.rv
        return newest

    def _collapses(self, key: str, latest: _Entry) -> bool:
        return (latest.where is _Where.PENDING and not latest.delete and latest.writes == 0
                and not latest.edge_may_know and key not in self._acked_rv)

    def _store(self, entry: _Entry) -> EnqueueResult:
        key = entry.key
        if key in self._unacked_by_key:
            entry.where = _Where.WAITING
            replaced = self._waiting_by_key.get(key)
            self._waiting_by_key[key] = entry
        else:
            replaced = self._pending_by_key.get(key)
            self._pending_by_key[key] = entry  # an existing key keeps its place in the send order
        self._hold(entry)
        if replaced is None:
            return EnqueueResult.QUEUED
        entry.edge_may_know = replaced.edge_may_know or replaced.writes > 0
        self._drop(replaced)
        self._counts.replaced += 1
        return EnqueueResult.REPLACED

    # -- acknowledged state --------------------------------------------------------------------------

    def acked_rv(self, key: str) -> int | None:
        return self._acked_rv.get(key)

    def advance(self, key: str, rv: int) -> Advanced:
        """Take an update the edge has in substance without sending it, if possible (ADVANCE above)."""
        latest = self._latest(key)
        if latest is None:
            acked = self._acked_rv.get(key)
            if acked is None or rv <= acked:
                return Advanced.NO
            self._acked_rv[key] = rv
            self._counts.advanced += 1
            return Advanced.NOW
        if (latest.where is not _Where.SCHEDULED or latest.delete or latest.rv is None or rv <= latest.rv):
            return Advanced.NO
        latest.rv = rv  # its content stays the older version; the edge's copy differs only in status
        self._counts.advanced += 1
        return Advanced.ON_ACK

    def load_acked(self, acked_rv_by_key: Mapping[str, int]) -> None:
        """Seed acknowledged RVs (ObjectSync at start); call before the first enqueue."""
        self._acked_rv.update(acked_rv_by_key)

    def take_over(self, acked_rv_by_key: Mapping[str, int]) -> int:
        """Another cloudcore served the node since this queue last did: its acked RVs (ObjectSync, read
        now) replace ours, and every entry not newer than them is dropped, so nothing the edge acked
        elsewhere is sent again. Call with no connection (nothing in flight). Returns the entries dropped.

        Deletes are kept: a missing record says either "never sent" or "delete acked", and a delete
        the edge already applied is harmless.
        """
        self._acked_rv = dict(acked_rv_by_key)
        dropped = 0
        for key, entry in [*self._pending_by_key.items(), *self._waiting_by_key.items()]:
            acked = self._acked_rv.get(key)
            if entry.delete or entry.rv is None or acked is None or entry.rv > acked:
                continue
            if self._pending_by_key.get(key) is entry:
                del self._pending_by_key[key]
            else:
                del self._waiting_by_key[key]
            self._drop(entry)
            dropped += 1
        for key, entry in list(self._unacked_by_key.items()):  # parked from an earlier session here
            acked = self._acked_rv.get(key)
            if entry.delete or entry.rv is None or acked is None or entry.rv > acked:
                continue
            self._schedule.discard(entry.msg_id)
            del self._unacked_by_key[key]
            self._drop(entry)
            dropped += 1
            successor = self._waiting_by_key.pop(key, None)
            if successor is not None:
                successor.where = _Where.PENDING
                self._pending_by_key[key] = successor
        self._counts.stale += dropped
        return dropped

    def ack(self, parent_msg_id: str, now: float) -> Acked | None:
        """The edge stored message `parent_msg_id`. None for unknown, repeated or superseded ids."""
        entry = self._unacked_by_msg_id.pop(parent_msg_id, None)
        if entry is None:
            return None
        key = entry.key
        if entry.where is _Where.SCHEDULED:
            self._schedule.discard(parent_msg_id)
            del self._unacked_by_key[key]
            self._last_ack_rtt = now - entry.sent_at
            if self._on_ack_rtt is not None:
                self._on_ack_rtt(self._last_ack_rtt)
        else:
            del self._pending_by_key[key]
        self._release(entry)
        self._counts.acked += 1
        self._record_acked(entry)
        successor = self._waiting_by_key.pop(key, None)
        if successor is not None:
            successor.where = _Where.PENDING
            self._pending_by_key[key] = successor
        return Acked(key, entry.rv, entry.delete)

    def _record_acked(self, entry: _Entry) -> None:
        if entry.delete:
            self._acked_rv.pop(entry.key, None)
        elif entry.rv is not None:
            self._acked_rv[entry.key] = max(entry.rv, self._acked_rv.get(entry.key, entry.rv))

    # -- sending -------------------------------------------------------------------------------------

    def next_message(self, now: float) -> Outgoing | None:
        """What to write now: due re-sends, then the no-ACK lane, then pending keys; None when idle."""
        while (due := self._schedule.due(now, room=self._has_room())) is not None:
            entry, after_back_off = due
            ready = self._after_back_off(entry) if after_back_off else entry
            if ready is not None:
                return self._write(ready, now)
        if self._no_ack_lane:
            key, message = self._no_ack_lane.popleft()
            self._counts.sent += 1
            return Outgoing(message, key, 1, False)
        while self._pending_by_key and self._has_room():
            _, entry = self._pending_by_key.popitem(last=False)
            ready = self._with_content(entry)
            if ready is not None:
                return self._write(ready, now)
        return None

    def next_deadline(self) -> float | None:
        """When `next_message` may next have something without new input (re-send or back-off end)."""
        return self._schedule.next_deadline(room=self._has_room())

    def disconnected(self) -> None:
        """The connection is gone: in-flight messages go back to the front of the send order.

        They keep their order and msg_ids, except that a newer waiting message of the same key takes
        the place of the unacknowledged one. Parked messages stay parked; the no-ACK lane is dropped.
        """
        for entry in reversed(self._schedule.drain_in_flight()):
            key = entry.key
            del self._unacked_by_key[key]
            front = self._waiting_by_key.pop(key, None)
            if front is None:
                front = entry
            else:
                front.edge_may_know = True
                self._drop(entry)
            front.where = _Where.PENDING
            self._pending_by_key[key] = front
            self._pending_by_key.move_to_end(key, last=False)
            if front.message is not None:
                self._content_age[front] = None
        self._no_ack_lane.clear()

    def _has_room(self) -> bool:
        return len(self._schedule.in_flight_by_msg_id) < self.window

    def _after_back_off(self, entry: _Entry) -> _Entry | None:
        """A parked entry's back-off ended: send it again, or the newer message waiting behind it."""
        successor = self._waiting_by_key.pop(entry.key, None)
        if successor is None:
            return self._with_content(entry)
        del self._unacked_by_key[entry.key]
        self._drop(entry)
        return self._with_content(successor)

    def _with_content(self, entry: _Entry) -> _Entry | None:
        """`entry` itself, or for a dirty marker the freshly resolved entry; None if nothing to send.

        Callers write the result at once, so it needs no memory of earlier writes of the key.
        """
        if entry.message is not None:
            return entry
        key = entry.key
        self._drop(entry)
        if self._unacked_by_key.get(key) is entry:
            del self._unacked_by_key[key]
        resolved = self._resolve(key)
        if resolved is None:
            return None
        message, rv, delete = resolved
        acked = self._acked_rv.get(key)
        if not delete and rv is not None and acked is not None and rv <= acked:
            self._counts.stale += 1
            return None
        fresh = _Entry(key, message, rv, delete, self._size_of(message))
        self._hold(fresh)
        return fresh

    def _write(self, entry: _Entry, now: float) -> Outgoing:
        assert entry.message is not None  # callers resolve dirty markers first
        entry.writes += 1
        if entry.writes > 1:
            self._counts.resent += 1
        else:
            self._counts.sent += 1
        entry.where = _Where.SCHEDULED
        self._content_age.pop(entry, None)
        self._unacked_by_key[entry.key] = entry
        self._unacked_by_msg_id[entry.msg_id] = entry
        self._schedule.sent(entry, now)
        return Outgoing(entry.message, entry.key, entry.writes, entry.writes > 1)

    # -- memory bound --------------------------------------------------------------------------------

    def _hold(self, entry: _Entry) -> None:
        self._held_entries += 1
        self._held_bytes += entry.size
        self._content_age[entry] = None

    def _release(self, entry: _Entry) -> None:
        """Give back the content's share of the bound (the entry is leaving or becoming a marker)."""
        self._content_age.pop(entry, None)
        if entry.message is not None:
            self._held_entries -= 1
            self._held_bytes -= entry.size
            entry.message = None

    def _drop(self, entry: _Entry) -> None:
        """Forget an entry that will never be written again (replaced, collapsed, superseded)."""
        self._release(entry)
        if self._unacked_by_msg_id.get(entry.msg_id) is entry:
            del self._unacked_by_msg_id[entry.msg_id]

    def _parked(self, entry: _Entry) -> None:
        """A parked message may wait long: its content becomes reclaimable by the bound."""
        if entry.message is not None:
            self._content_age[entry] = None
            self._trim()

    def _trim(self) -> bool:
        """Turn the oldest held contents into dirty markers until within bounds; True if any was."""
        trimmed = False
        while (self._held_entries > self.max_entries or self._held_bytes > self.max_bytes) and self._content_age:
            oldest = next(iter(self._content_age))
            self._release(oldest)
            self._counts.dropped_contents += 1
            trimmed = True
        return trimmed

    # -- observability -------------------------------------------------------------------------------

    @property
    def stats(self) -> NodeQueueStats:
        counts = self._counts
        return NodeQueueStats(
            pending=len(self._pending_by_key) + len(self._waiting_by_key),
            in_flight=len(self._schedule.in_flight_by_msg_id),
            parked=len(self._schedule.parked_by_msg_id),
            acked_keys=len(self._acked_rv),
            held_bytes=self._held_bytes,
            sent=counts.sent,
            resent=counts.resent,
            replaced=counts.replaced,
            stale=counts.stale,
            collapsed=counts.collapsed,
            acked=counts.acked,
            advanced=counts.advanced,
            dropped_contents=counts.dropped_contents,
            dropped_no_ack=counts.dropped_no_ack,
            last_ack_rtt=self._last_ack_rtt,
        )
