"""The devicecontroller's messages and the status patches it writes (pure, no I/O).

Down (ref/devices-groups.md 2.3, ref/protocol.md 2.1):
- objects: source `devicecontroller`, group `resource`, resource `node/<node>/<ns>/device|devicemodel/<name>`,
  op insert/update/delete, the object as content and its resourceVersion in the header (ACKed path);
- membership: group `twin`, resource `node/<node>/membership`, op `update`, content
  `{event_id, timestamp, added_devices, removed_devices}`, each device only `{id, name, description}`
  (description from the label `description`); fire-and-forget (`membership` is on the no-ACK list).

Up: `node/<node>/device/<ns>/<name>/twin/edge_updated` (`{event_id, timestamp, twin}`) and
`node/<node>/device/<ns>/<name>/state/update` (`{event_id, timestamp, state|State}`); v1.15's bare-name
IDs (`device/<name>/...`) are read as namespace `default`.
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


def twin_ack(request: Message, node: str) -> Message:
    """Upstream's answer to a twin report: `node/<node>/twin`, op response, content "OK" (no-ACK)."""
    return Message.new(
        source=CloudModule.DEVICECONTROLLER,
        group=Group.TWIN,
        operation=Op.RESPONSE,
        resource=build_device_resource(node, "twin"),
        content="OK",
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


def twin_patch(current: Object, body: dict[str, Any]) -> Object:
    twin = body.get("twin")
    if not isinstance(twin, dict):
        raise ValueError("twin report without a `twin` object")
    return {"status": {"twins": merged_twins(current, twin)}}


def state_patch(body: dict[str, Any], now: datetime | None = None) -> Object | None:
    """`status.state` (+ `lastOnlineTime` when online/ok, else ""), or None for a state the edge would
    not accept either. The key is `state` or upstream DMI's `State`."""
    raw = body.get("state", body.get("State"))
    if not isinstance(raw, str) or raw.lower() not in STATES:
        return None
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ") if raw.lower() in _ONLINE else ""
    return {"status": {"state": raw, "lastOnlineTime": when}}
