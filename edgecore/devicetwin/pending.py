"""Twin and state reports on their way to the cloud (sans-I/O; the clock is passed in).

EdgeHub's outbox keeps only node/pod status kinds, so DeviceTwin keeps its own reports, one entry per device
and kind (`<id>/twin`, `<id>/state`), persisted by the module in `devicetwin_pending`:

- a twin report merges into a pending one of the same device (newer properties win), under a new msg_id;
- while the cloud is connected, entries not yet sent, and twin reports unacknowledged for `resend_after`
  seconds, are due; the cloud acknowledges a twin report (`node/<node>/twin`, op response, parent = its id),
  a state report is not answered, so it is done once handed to EdgeHub while connected;
- on a disconnect everything in flight becomes unsent again;
- at most `limit` entries: the oldest is dropped (and reported) to make room.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from common.constants import Group, Op
from common.errors import MessageDecodeError
from common.message import Message, decode, encode, now_ms
from edgecore.devicetwin.messages import CLOUD_STATE_SUFFIX, CLOUD_TWIN_SUFFIX, new_event_id, sorted_map

SOURCE: Final = "twin"
DEFAULT_LIMIT: Final = 4096
RESEND_AFTER: Final = 10.0  # upstream dtcommon RetryInterval


@dataclass(slots=True)
class _Entry:
    message: Message
    needs_ack: bool
    sent_at: float | None = None


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
        return rest[: -len(CLOUD_TWIN_SUFFIX)] + "/twin"
    if rest.endswith(CLOUD_STATE_SUFFIX):
        return rest[: -len(CLOUD_STATE_SUFFIX)] + "/state"
    return None


class PendingReports:
    def __init__(self, limit: int = DEFAULT_LIMIT, resend_after: float = RESEND_AFTER) -> None:
        self.limit = limit
        self.resend_after = resend_after
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_msg_id: dict[str, str] = {}
        self._dirty: dict[str, bytes | None] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        return list(self._entries)

    def message(self, key: str) -> Message | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.message

    @classmethod
    def restore(cls, rows: list[tuple[str, bytes]], limit: int = DEFAULT_LIMIT) -> PendingReports:
        pending = cls(limit)
        for key, raw in rows:
            try:
                message = decode(raw)
            except MessageDecodeError:  # a corrupt row must not stop edgecore: forget it
                pending._dirty[key] = None
                continue
            pending._set(key, _Entry(message, needs_ack=key.endswith("/twin")))
        pending._dirty = {k: v for k, v in pending._dirty.items() if v is None}
        return pending

    def put_twin(self, device_id: str, twin: dict[str, Any]) -> Message:
        key = f"{device_id}/twin"
        old = self._entries.get(key)
        merged = dict(twin)
        if old is not None and isinstance(old.message.content, dict) and isinstance(old.message.content.get("twin"),
                                                                                  dict):
            merged = {**old.message.content["twin"], **twin}
        message = twin_report(device_id, merged)
        self._set(key, _Entry(message, needs_ack=True))
        return message

    def put_state(self, device_id: str, body: dict[str, Any]) -> Message:
        message = state_report(device_id, body)
        self._set(f"{device_id}/state", _Entry(message, needs_ack=False))
        return message

    def forget_device(self, device_id: str) -> None:
        for key in (f"{device_id}/twin", f"{device_id}/state"):
            self._remove(key)

    def due(self, now: float) -> list[Message]:
        """Messages to hand to EdgeHub now (call only while connected); marks them sent."""
        out: list[Message] = []
        for key, entry in list(self._entries.items()):
            if entry.sent_at is not None and (not entry.needs_ack or now - entry.sent_at < self.resend_after):
                continue
            entry.sent_at = now
            out.append(entry.message)
            if not entry.needs_ack:
                self._remove(key)
        return out

    def next_due(self) -> float | None:
        """When the earliest in-flight twin report is due again (None: nothing in flight)."""
        times = [e.sent_at + self.resend_after for e in self._entries.values() if e.sent_at is not None]
        return min(times) if times else None

    def has_unsent(self) -> bool:
        return any(e.sent_at is None for e in self._entries.values())

    def unsend(self, message: Message) -> None:
        """EdgeHub refused it: keep it as not sent (a state report is put back)."""
        key = key_of(message)
        if key is None:
            return
        entry = self._entries.get(key)
        if entry is not None and entry.message.msg_id == message.msg_id:
            entry.sent_at = None
        elif entry is None:
            self._set(key, _Entry(message, needs_ack=key.endswith("/twin")))

    def ack(self, parent_msg_id: str) -> str | None:
        key = self._by_msg_id.get(parent_msg_id)
        if key is None:
            return None
        self._remove(key)
        return key

    def disconnected(self) -> None:
        for entry in self._entries.values():
            entry.sent_at = None

    def take_dirty(self) -> dict[str, bytes | None]:
        """Rows to write to `devicetwin_pending` since the last call (None = delete)."""
        dirty, self._dirty = self._dirty, {}
        return dirty

    def _set(self, key: str, entry: _Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._by_msg_id.pop(old.message.msg_id, None)
        while len(self._entries) >= self.limit:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.dropped += 1
        self._entries[key] = entry
        self._by_msg_id[entry.message.msg_id] = key
        self._dirty[key] = encode(entry.message)

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._by_msg_id.pop(entry.message.msg_id, None)
            self._dirty[key] = None
