"""The devicecontroller's messages and the status patches it writes (pure, no I/O).

Down (ref/devices-groups.md 2.3, ref/protocol.md 2.1):
- objects: source `devicecontroller`, group `resource`, resource `node/<node>/<ns>/device|devicemodel/<name>`,
  op insert/update/delete, the object as content and its resourceVersion in the header (ACKed path);
- membership: group `twin`, resource `node/<node>/membership`, op `update`, content
  `{event_id, timestamp, added_devices, removed_devices}`, each device only `{id, name, description}`
  (description from the label `description`); fire-and-forget (`membership` is on the no-ACK list).

Up: `node/<node>/device/<ns>/<name>/twin/edge_updated` (`{event_id, timestamp, twin}`) and
`node/<node>/device/<ns>/<name>/state/update` (upstream's `{event_id, timestamp, device: {name, state,
lastOnlineTime}}`, or a bare `{state}` / DMI's `{State}`; keys matched as Go's decoder matches them, exact
first, then ignoring case); v1.15's bare-name IDs (`device/<name>/...`) are read as namespace `default`.
Every report is answered on `node/<node>/twin` with parent = the report's msg_id: op `response` "OK" once
applied, op `error` with the reason when it never will be (the edge drops the report either way; it
resends only what gets no answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from cloudcore.devicecontroller.kinds import device_id
from cloudcore.devicecontroller.plan import Membership, Push
from cloudcore.edgecontroller.kinds import Object, meta, name_of, namespace_of, rv_of, with_type_meta
from common.constants import CloudModule, Group, Op, ResourceType
from common.message import Message, new_msg_id, now_ms
from common.resource import build_device_resource, build_resource

TWIN_EDGE_UPDATED: Final = "twin/edge_updated"
STATE_UPDATE: Final = "state/update"
STATES: Final = frozenset({"online", "offline", "ok", "unknown", "unhealthy"})
_ONLINE: Final = frozenset({"online", "ok"})
DEFAULT_NAMESPACE: Final = "default"


def push_message(push: Push) -> Message:
    obj = with_type_meta(push.kind, push.obj)
    return Message.new(
        source=CloudModule.DEVICECONTROLLER,
        group=Group.RESOURCE,
        operation=push.operation,
        resource=build_resource(push.node, namespace_of(obj), push.kind.type, name_of(obj)),
        content=obj,
        resource_version=rv_of(obj),
    )


def edge_device(device: Object) -> dict[str, str]:
    labels = meta(device).get("labels") or {}
    return {"id": device_id(device), "name": name_of(device), "description": str(labels.get("description") or "")}


def membership_message(membership: Membership) -> Message:
    content = {
        "event_id": new_msg_id(),
        "timestamp": now_ms(),
        "added_devices": [edge_device(d) for d in membership.added],
        "removed_devices": [edge_device(d) for d in membership.removed],
    }
    return Message.new(
        source=CloudModule.DEVICECONTROLLER,
        group=Group.TWIN,
        operation=Op.UPDATE,
        resource=build_device_resource(membership.node, ResourceType.MEMBERSHIP),
        content=content,
    )


def report_ack(request: Message, node: str) -> Message:
    """Upstream's answer to a twin report: `node/<node>/twin`, op response, content "OK", parent = the
    report's msg_id (what the edge's pending reports wait for; no-ACK itself)."""
    return Message.new(
        source=CloudModule.DEVICECONTROLLER,
        group=Group.TWIN,
        operation=Op.RESPONSE,
        resource=build_device_resource(node, "twin"),
        content="OK",
        parent_msg_id=request.msg_id,
    )


def report_refused(request: Message, node: str, reason: str) -> Message:
    """The answer to a report that will never apply (unknown device, another node's, malformed): op `error`,
    parent = the report's msg_id, so the edge stops resending it."""
    return Message.new(
        source=CloudModule.DEVICECONTROLLER,
        group=Group.TWIN,
        operation=Op.ERROR,
        resource=build_device_resource(node, "twin"),
        content=reason,
        parent_msg_id=request.msg_id,
    )


@dataclass(frozen=True, slots=True)
class Report:
    node: str
    namespace: str
    name: str
    action: str  # TWIN_EDGE_UPDATED or STATE_UPDATE


def parse_report(resource: str) -> Report | None:
    """`node/<node>/device/<ns>/<name>/<action>` (or `.../device/<name>/<action>`), None if not a report."""
    parts = resource.split("/")
    if len(parts) < 6 or parts[0] != "node" or not parts[1] or parts[2] != ResourceType.DEVICE:
        return None
    action = "/".join(parts[-2:])
    if action not in (TWIN_EDGE_UPDATED, STATE_UPDATE):
        return None
    ident = parts[3:-2]
    if len(ident) == 2 and all(ident):
        return Report(parts[1], ident[0], ident[1], action)
    if len(ident) == 1 and ident[0]:
        return Report(parts[1], DEFAULT_NAMESPACE, ident[0], action)
    return None


def body_of(message: Message) -> dict[str, Any]:
    content = message.content
    if isinstance(content, str | bytes):
        content = orjson.loads(content)
    if not isinstance(content, dict):
        raise ValueError("content must be a JSON object")
    return content


def _value(twin_value: Any, kind: str) -> dict[str, Any]:
    """One edge TwinValue `{value, metadata{timestamp}}` as the CRD's TwinProperty `{value, metadata{}}`."""
    meta_out: dict[str, str] = {}
    metadata = twin_value.get("metadata") if isinstance(twin_value, dict) else None
    if isinstance(metadata, dict) and metadata.get("timestamp") is not None:
        meta_out["timestamp"] = str(metadata["timestamp"])
    if kind:
        meta_out["type"] = kind
    value = twin_value.get("value") if isinstance(twin_value, dict) else None
    return {"value": "" if value is None else str(value), "metadata": meta_out}


def merged_twins(current: Object, reported: dict[str, Any]) -> list[dict[str, Any]]:
    """The Device's `status.twins` with the edge's report applied: `actual` -> `reported`, `expected` ->
    `observedDesired`, per property; properties not in the report keep their entries."""
    status = current.get("status") if isinstance(current.get("status"), dict) else {}
    twins = [dict(t) for t in (status or {}).get("twins") or [] if isinstance(t, dict)]
    by_name = {str(t.get("propertyName")): t for t in twins}
    for prop, twin in reported.items():
        if not isinstance(twin, dict):
            raise ValueError(f"twin {prop!r} must be a JSON object")
        metadata = twin.get("metadata")
        kind = str(metadata.get("type") or "") if isinstance(metadata, dict) else ""
        entry = by_name.get(prop)
        if entry is None:
            entry = by_name[prop] = {"propertyName": prop}
            twins.append(entry)
        if isinstance(twin.get("actual"), dict):
            entry["reported"] = _value(twin["actual"], kind)
        if isinstance(twin.get("expected"), dict):
            entry["observedDesired"] = _value(twin["expected"], kind)
    return twins


def reported_twins(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `twin` map of a twin report, every property a JSON object (ValueError otherwise)."""
    twin = body.get("twin")
    if not isinstance(twin, dict):
        raise ValueError("twin report without a `twin` object")
    for prop, value in twin.items():
        if not isinstance(value, dict):
            raise ValueError(f"twin {prop!r} must be a JSON object")
    return twin


def go_field(obj: dict[str, Any], name: str) -> Any:
    """`obj[name]` as Go's encoding/json finds a struct field: the exact key, else one equal ignoring case."""
    if name in obj:
        return obj[name]
    folded = name.casefold()
    return next((value for key, value in obj.items() if isinstance(key, str) and key.casefold() == folded), None)


@dataclass(frozen=True, slots=True)
class StateReport:
    state: str
    last_online: str  # as the edge sent it, "" if absent


def parse_state(body: dict[str, Any]) -> StateReport | None:
    """The state of a state report: `device.state` (upstream's cloud message), else a top-level `state`
    (`State` from upstream's DMI path); None when absent or not one of upstream's five (any case)."""
    device = go_field(body, "device")
    nested = device if isinstance(device, dict) else {}
    raw = go_field(nested, "state")
    if not isinstance(raw, str) or not raw:
        raw = go_field(body, "state")
    if not isinstance(raw, str) or raw.lower() not in STATES:
        return None
    last_online = go_field(nested, "lastOnlineTime")
    if not isinstance(last_online, str) or not last_online:
        last_online = go_field(body, "lastOnlineTime")
    return StateReport(raw, last_online if isinstance(last_online, str) else "")


def _rfc3339(text: str) -> str | None:
    """`text` as RFC3339 UTC (`...Z`), None if it is not a timestamp."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def state_patch(body: dict[str, Any], now: datetime | None = None) -> Object | None:
    """`status.state` as sent, and `lastOnlineTime`: for online/ok the edge's time (when it is a valid
    timestamp) or now, else "" (ref/devices-groups.md 1.1). None for a report without an accepted state."""
    report = parse_state(body)
    if report is None:
        return None
    when = ""
    if report.state.lower() in _ONLINE:
        sent = _rfc3339(report.last_online) if report.last_online else None
        when = sent or (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"status": {"state": report.state, "lastOnlineTime": when}}
