"""Twin and state reports on their way to the cloud (sans-I/O; the clock is passed in).

EdgeHub's outbox keeps only node/pod status kinds, so DeviceTwin keeps its own reports, one entry per device
and kind (`<id>/twin`, `<id>/state`), persisted by the module in `devicetwin_pending`:

- **one twin report in flight per device**: a report is sent, and until the cloud acknowledges it
  (`node/<node>/twin`, op response or error, parent = its msg_id) newer twin properties of that device wait,
  merged (newer properties win; `put_twin` returns the report that will carry them). The ACK makes them due as
  one report. A report unacknowledged for `resend_after` seconds is sent again under a new msg_id, with the
  waiting properties merged in. So a device updated a thousand times while one report travels costs the cloud
  one more report, and the latest value of every twin still reaches it. A device whose properties came while
  its report was in flight, at least twice ("hot"), sends its next report no sooner than `hot_interval` after the
  previous one (at most 20 reports/s per device by default): without it a fast cloud answers quickly, more
  reports go, and on a small node the cloud's CPU starves edgecore's. A device updated at most once per cloud
  round trip is not delayed;
- a state report is not answered: the latest state is due at once and done once handed to EdgeHub;
- on a disconnect (or when EdgeHub refuses a report) the in-flight report goes back to waiting;
- the persisted row of an entry (`take_dirty`) is everything not yet acknowledged, so a restart loses nothing;
- `begin`/`commit`/`rollback`: changes made between `begin` and `rollback` are undone (the module's
  transaction failed to commit, so they were never stored);
- at most `limit` entries: the oldest is dropped (and counted) to make room.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Final

from common.constants import Group, Op
from common.errors import MessageDecodeError
from common.message import Message, decode, encode, now_ms
from edgecore.devicetwin.messages import CLOUD_STATE_SUFFIX, CLOUD_TWIN_SUFFIX, new_event_id, sorted_map

SOURCE: Final = "twin"
DEFAULT_LIMIT: Final = 4096
RESEND_AFTER: Final = 10.0  # upstream dtcommon RetryInterval
HOT_INTERVAL: Final = 0.05  # a device updated while its report travels reports at most once per this (s)
HOT_AFTER: Final = 2  # updates during one flight that make a device hot
TWIN: Final = "twin"
STATE: Final = "state"


@dataclass(slots=True)
class _Entry:
    kind: str  # TWIN (acknowledged by the cloud) or STATE (not)
    waiting: dict[str, Any] | None = None  # not sent yet: twin properties (merged) or the state body
    ready: Message | None = None  # the twin report of `waiting`, built by put_twin
    flight: Message | None = None  # the twin report sent and not yet acknowledged
    flight_twin: dict[str, Any] | None = None  # its twin properties
    sent_at: float | None = None
    during_flight: int = 0  # updates merged while the report in flight travels (2+: the device is "hot")
    not_before: float | None = None  # a hot device's next report waits until then

    def unacknowledged(self) -> dict[str, Any]:
        """What the cloud may not have yet: the in-flight twin properties under the waiting ones."""
        if self.flight_twin is None:
            return self.waiting or {}
        return {**self.flight_twin, **(self.waiting or {})}


def twin_report(device_id: str, twin: dict[str, Any], event_id: str | None = None) -> Message:
    """`device/<id>/twin/edge_updated`, op update, `{event_id, timestamp, twin}` (source twin, group resource)."""
    content = {"event_id": event_id or new_event_id(), "timestamp": now_ms(), "twin": sorted_map(twin)}
    return Message.new(source=SOURCE, group=Group.RESOURCE, operation=Op.UPDATE,
                       resource=f"device/{device_id}{CLOUD_TWIN_SUFFIX}", content=content)


def state_report(device_id: str, body: dict[str, Any]) -> Message:
    """`device/<id>/state/update`, op update: the state body (see `messages.device_state_body`)."""
    return Message.new(source=SOURCE, group=Group.RESOURCE, operation=Op.UPDATE,
                       resource=f"device/{device_id}{CLOUD_STATE_SUFFIX}", content=body)


def key_of(message: Message) -> str | None:
    """`<id>/twin` or `<id>/state` of a report built here."""
    rest = message.resource.removeprefix("device/")
    if rest.endswith(CLOUD_TWIN_SUFFIX):
        return rest[: -len(CLOUD_TWIN_SUFFIX)] + "/" + TWIN
    if rest.endswith(CLOUD_STATE_SUFFIX):
        return rest[: -len(CLOUD_STATE_SUFFIX)] + "/" + STATE
    return None


def _split(key: str) -> tuple[str, str]:
    device_id, _, kind = key.rpartition("/")
    return device_id, kind


class PendingReports:
    def __init__(self, limit: int = DEFAULT_LIMIT, resend_after: float = RESEND_AFTER,
                 hot_interval: float = HOT_INTERVAL) -> None:
        self.limit = limit
        self.resend_after = resend_after
        self.hot_interval = hot_interval
        self.timer_changed = False  # an answer set a `not_before`: the caller's timer may need to fire sooner
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_msg_id: dict[str, str] = {}  # in-flight twin report -> key
        self._dirty: set[str] = set()
        self._taken: set[str] = set()  # the keys of the last take_dirty (written again after a rollback)
        self._journal: dict[str, _Entry | None] | None = None  # key -> entry before `begin` (None: absent)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[str]:
        return list(self._entries)

    def unacknowledged(self, key: str) -> dict[str, Any] | None:
        """The twin properties (or the state body) of `key` the cloud has not acknowledged yet."""
        entry = self._entries.get(key)
        return None if entry is None else entry.unacknowledged()

    def in_flight(self, key: str) -> Message | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.flight

    @classmethod
    def restore(cls, rows: list[tuple[str, bytes]], limit: int = DEFAULT_LIMIT,
                resend_after: float = RESEND_AFTER) -> PendingReports:
        pending = cls(limit, resend_after)
        for key, raw in rows:
            _, kind = _split(key)
            try:
                message = decode(raw)
            except MessageDecodeError:  # a corrupt row must not stop edgecore: forget it
                pending._dirty.add(key)
                continue
            content = message.content if isinstance(message.content, dict) else {}
            body = content.get("twin") if kind == TWIN else content
            if kind not in (TWIN, STATE) or not isinstance(body, dict):
                pending._dirty.add(key)
                continue
            pending._entries[key] = _Entry(kind, waiting=dict(body))
        return pending

    # -- changes --------------------------------------------------------------------------------------------
    def put_twin(self, device_id: str, twin: dict[str, Any]) -> Message:
        """Twin properties for the cloud, merged into what waits (newer properties win). Returns the report that
        will carry them (sent once no other report of the device is in flight)."""
        key = f"{device_id}/{TWIN}"
        entry = self._entry(key, TWIN)
        entry.waiting = {**entry.waiting, **twin} if entry.waiting else dict(twin)
        entry.ready = twin_report(device_id, entry.waiting)
        if entry.flight is not None:
            entry.during_flight += 1
        self._dirty.add(key)
        return entry.ready

    def put_state(self, device_id: str, body: dict[str, Any]) -> None:
        key = f"{device_id}/{STATE}"
        entry = self._entry(key, STATE)
        entry.waiting = body
        self._dirty.add(key)

    def forget_device(self, device_id: str) -> None:
        for key in (f"{device_id}/{TWIN}", f"{device_id}/{STATE}"):
            self._remove(key)

    def due(self, now: float) -> list[Message]:
        """Messages to hand to EdgeHub now (call only while connected); marks them sent."""
        out: list[Message] = []
        for key, entry in list(self._entries.items()):
            device_id, kind = _split(key)
            if kind == STATE:
                if entry.waiting is not None:
                    out.append(state_report(device_id, entry.waiting))
                    self._remove(key)
                continue
            if entry.flight is not None:
                assert entry.sent_at is not None
                if now - entry.sent_at < self.resend_after:
                    continue  # one in flight: newer properties wait for its answer
                twin = entry.unacknowledged()  # no answer: send everything again, under a new msg_id
                ready = None
            elif entry.waiting is not None:
                if entry.not_before is not None and now < entry.not_before:
                    continue  # a hot device: at most one report per hot_interval
                twin, ready = entry.waiting, entry.ready
            else:
                continue
            self._touch(key)
            if entry.flight is not None:
                self._by_msg_id.pop(entry.flight.msg_id, None)
            message = ready or twin_report(device_id, twin)
            entry.flight, entry.flight_twin, entry.sent_at = message, twin, now
            entry.waiting, entry.ready, entry.during_flight, entry.not_before = None, None, 0, None
            self._by_msg_id[message.msg_id] = key
            out.append(message)
        return out

    def next_due(self) -> float | None:
        """When the earliest in-flight twin report is due again (None: nothing in flight)."""
        times = [e.sent_at + self.resend_after if e.sent_at is not None else e.not_before
                 for e in self._entries.values() if e.sent_at is not None or e.not_before is not None]
        return min(t for t in times if t is not None) if times else None

    def has_unsent(self, now: float | None = None) -> bool:
        """Whether something waits with no report of its entry in flight (and, given `now`, is due by then)."""
        return any(e.waiting is not None and e.flight is None
                   and (now is None or e.not_before is None or now >= e.not_before) for e in self._entries.values())

    def take_timer_changed(self) -> bool:
        changed, self.timer_changed = self.timer_changed, False
        return changed

    def unsend(self, message: Message) -> None:
        """EdgeHub refused it: what it carried waits again (a newer state, if any, is kept)."""
        key = key_of(message)
        if key is None:
            return
        _, kind = _split(key)
        entry = self._entries.get(key)
        if kind == STATE:
            if (entry is None or entry.waiting is None) and isinstance(message.content, dict):
                self._entry(key, STATE).waiting = message.content
                self._dirty.add(key)
            return
        if entry is not None and entry.flight is not None and entry.flight.msg_id == message.msg_id:
            self._touch(key)
            self._land(entry)

    def ack(self, parent_msg_id: str) -> str | None:
        """The cloud answered a twin report: done, and what waited becomes due. The entry's key, if known."""
        key = self._by_msg_id.get(parent_msg_id)
        if key is None:
            return None
        entry = self._entries[key]
        self._touch(key)
        del self._by_msg_id[parent_msg_id]
        if entry.during_flight >= HOT_AFTER and entry.waiting is not None and entry.sent_at is not None:
            entry.not_before = entry.sent_at + self.hot_interval
            self.timer_changed = True
        entry.during_flight = 0
        entry.flight, entry.flight_twin, entry.sent_at = None, None, None
        if entry.waiting is None:
            self._remove(key)
        else:
            self._dirty.add(key)
        return key

    def disconnected(self) -> None:
        """The link is down: nothing is in flight any more (all of it is sent again on reconnect)."""
        for key, entry in self._entries.items():
            if entry.flight is not None or entry.not_before is not None:
                self._touch(key)
                entry.not_before, entry.during_flight = None, 0
                if entry.flight is not None:
                    self._land(entry)

    # -- persistence and transactions ------------------------------------------------------------------------
    def take_dirty(self) -> dict[str, bytes | None]:
        """Rows to write to `devicetwin_pending` since the last call (None = delete)."""
        dirty, self._dirty = self._dirty, set()
        self._taken = dirty
        rows: dict[str, bytes | None] = {}
        for key in dirty:
            entry = self._entries.get(key)
            if entry is None:
                rows[key] = None
                continue
            device_id, kind = _split(key)
            if entry.ready is not None and entry.flight is None:
                rows[key] = encode(entry.ready)
                continue
            body = entry.unacknowledged()
            rows[key] = encode(twin_report(device_id, body) if kind == TWIN else state_report(device_id, body))
        return rows

    def begin(self) -> None:
        self._journal = {}

    def commit(self) -> None:
        self._journal = None
        self._taken = set()

    def rollback(self) -> None:
        """Undo every change since `begin`; the rows taken since are written again at the next take_dirty."""
        journal, self._journal = self._journal or {}, None
        for key, before in journal.items():
            current = self._entries.pop(key, None)
            if current is not None and current.flight is not None:
                self._by_msg_id.pop(current.flight.msg_id, None)
            if before is not None:
                self._entries[key] = before
                if before.flight is not None:
                    self._by_msg_id[before.flight.msg_id] = key
        self._dirty |= self._taken | set(journal)
        self._taken = set()

    # -- internals ----------------------------------------------------------------------------------------------
    def _touch(self, key: str) -> None:
        if self._journal is not None and key not in self._journal:
            entry = self._entries.get(key)
            self._journal[key] = None if entry is None else replace(entry)

    def _entry(self, key: str, kind: str) -> _Entry:
        self._touch(key)
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        while len(self._entries) >= self.limit:
            oldest = next(iter(self._entries))
            self._touch(oldest)
            self._remove(oldest)
            self.dropped += 1
        entry = self._entries[key] = _Entry(kind)
        return entry

    def _land(self, entry: _Entry) -> None:
        """The in-flight report goes back to waiting (merged under what waits)."""
        assert entry.flight is not None
        self._by_msg_id.pop(entry.flight.msg_id, None)
        entry.waiting, entry.ready = entry.unacknowledged(), None
        entry.flight, entry.flight_twin, entry.sent_at = None, None, None

    def _remove(self, key: str) -> None:
        self._touch(key)
        entry = self._entries.pop(key, None)
        if entry is not None:
            if entry.flight is not None:
                self._by_msg_id.pop(entry.flight.msg_id, None)
            self._dirty.add(key)
