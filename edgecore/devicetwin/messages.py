"""DeviceTwin's topics and message bodies, as upstream edgecore writes them (ref/devices-groups.md 2.2, 3). Pure.

Bodies are dicts in Go's field order (maps with sorted keys, as Go's encoder writes them); the module hands
them to EventBus, which encodes them as compact JSON. Device IDs are `<namespace>/<name>` (v1.17+), so a
device topic is `$hw/events/device/<ns>/<name>/<suffix>`.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

DEVICE_PREFIX: Final = "$hw/events/device/"
NODE_PREFIX: Final = "$hw/events/node/"

TWIN_UPDATE: Final = "/twin/update"
TWIN_UPDATE_RESULT: Final = "/twin/update/result"
TWIN_DELTA: Final = "/twin/update/delta"
TWIN_DOCUMENT: Final = "/twin/update/document"
TWIN_GET: Final = "/twin/get"
TWIN_GET_RESULT: Final = "/twin/get/result"
TWIN_CLOUD_UPDATED: Final = "/twin/cloud_updated"
STATE_UPDATE: Final = "/state/update"
STATE_UPDATE_RESULT: Final = "/state/update/result"
MEMBERSHIP_UPDATED: Final = "/membership/updated"
MEMBERSHIP_GET: Final = "/membership/get"
MEMBERSHIP_GET_RESULT: Final = "/membership/get/result"

# Cloud resources (edge form; CloudHub adds `node/<node>/`).
CLOUD_TWIN_SUFFIX: Final = "/twin/edge_updated"
CLOUD_STATE_SUFFIX: Final = "/state/update"

BAD_REQUEST: Final = 400
NOT_FOUND: Final = 404
CONFLICT: Final = 409
INTERNAL_ERROR: Final = 500

TYPE_DELETED: Final = "deleted"
TYPE_STRING: Final = "string"
STATES: Final = frozenset({"online", "offline", "ok", "unknown", "unhealthy"})
ONLINE_STATES: Final = frozenset({"online", "ok"})

_KEY_RE: Final = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,128}$")
_VALUE_RE: Final = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,512}$")
_INT_RE: Final = re.compile(r"^[+-]?[0-9]+$")

ERR_KEY: Final = ("The key of twin must only include upper or lowercase letters, number, english, and special letter "
                  "- _ . , : / @ # and the length of key should be less than 128 bytes")
ERR_VALUE: Final = ("The value of twin must only include upper or lowercase letters, number, english, and special "
                    "letter - _ . , : / @ # and the length of value should be less than 512 bytes")
ERR_UNMARSHAL: Final = "Unmarshal update request body failed, please check the request"
ERR_NO_TWIN: Final = "Update twin error, key:twin does not exist"
ERR_NO_DEVICE: Final = "Update rejected due to the device is not existed"


class Action(Enum):
    TWIN_UPDATE = "TwinUpdate"
    TWIN_GET = "TwinGet"
    TWIN_CLOUD_SYNC = "TwinCloudSync"
    STATE_UPDATE = "DeviceStateUpdate"
    MEMBERSHIP_GET = "MemGet"


_DEVICE_ACTIONS: Final = {TWIN_UPDATE: Action.TWIN_UPDATE, TWIN_GET: Action.TWIN_GET,
                          TWIN_CLOUD_UPDATED: Action.TWIN_CLOUD_SYNC, STATE_UPDATE: Action.STATE_UPDATE}


@dataclass(frozen=True, slots=True)
class TopicEvent:
    action: Action
    identity: str  # device ID `<ns>/<name>` or node name


def parse_topic(topic: str) -> TopicEvent | None:
    """The action of an MQTT topic EventBus hands over, None when DeviceTwin has no handler for it."""
    parts = topic.split("/")
    if topic.startswith(DEVICE_PREFIX) and len(parts) >= 7 and parts[3] and parts[4]:
        action = _DEVICE_ACTIONS.get("/" + "/".join(parts[5:]))
        return TopicEvent(action, f"{parts[3]}/{parts[4]}") if action else None
    if topic.startswith(NODE_PREFIX) and len(parts) >= 5 and parts[3] and "/" + "/".join(parts[4:]) == MEMBERSHIP_GET:
        return TopicEvent(Action.MEMBERSHIP_GET, parts[3])
    return None


def device_topic(device_id: str, suffix: str) -> str:
    return f"{DEVICE_PREFIX}{device_id}{suffix}"


def node_topic(node: str, suffix: str) -> str:
    return f"{NODE_PREFIX}{node}{suffix}"


def encode_topic(topic: str) -> str:
    """EventBus puts the topic base64-URL-encoded into the resource (upstream)."""
    return base64.urlsafe_b64encode(topic.encode()).decode()


def decode_topic(resource: str) -> str:
    return base64.urlsafe_b64decode(resource.encode()).decode()


def new_event_id() -> str:
    return str(uuid.uuid4())


def base(event_id: str, timestamp: int) -> dict[str, Any]:
    return {"event_id": event_id, "timestamp": timestamp}


def error_result(event_id: str, timestamp: int, code: int, reason: str) -> dict[str, Any]:
    """`{event_id, timestamp, code, reason}` (code and reason omitted when empty, as Go's omitempty)."""
    out = base(event_id, timestamp)
    if code:
        out["code"] = code
    if reason:
        out["reason"] = reason
    return out


def sorted_map(values: dict[str, Any]) -> dict[str, Any]:
    """A Go map as encoding/json writes it: keys sorted."""
    return {k: values[k] for k in sorted(values)}


def validate_key(key: str) -> bool:
    return bool(_KEY_RE.match(key))


def validate_value_chars(value: str) -> bool:
    return value == "" or bool(_VALUE_RE.match(value))


def validate_value(value_type: str, value: str) -> str | None:
    """None when `value` fits `value_type` (edge rule), else the reason."""
    if value_type in ("", TYPE_STRING, TYPE_DELETED):
        return None
    if value_type in ("int", "integer"):
        return None if _INT_RE.match(value) else f"the value {value!r} is not an int"
    if value_type == "float":
        try:
            float(value)
        except ValueError:
            return f"the value {value!r} is not a float"
        return None
    if value_type == "boolean":
        return None if value in ("true", "false") else f"the value {value!r} is not a boolean"
    return f"the value type {value_type!r} is not allowed"


def state_of(body: dict[str, Any]) -> str | None:
    """The state of a state update (`state`, or `State` as upstream's DMI path writes it), None if absent."""
    raw = body.get("state", body.get("State"))
    return raw if isinstance(raw, str) else None


def device_state_body(event_id: str, timestamp: int, name: str, state: str, last_online: str) -> dict[str, Any]:
    """State result / state to the cloud: base plus `device{name, state, lastOnlineTime}` (empty fields omitted)."""
    device: dict[str, str] = {}
    for key, value in (("name", name), ("state", state), ("lastOnlineTime", last_online)):
        if value:
            device[key] = value
    return {**base(event_id, timestamp), "device": device}


def membership_device(device: dict[str, Any]) -> dict[str, Any]:
    """An edge Device as Go writes it: id, name, description, state, last_online, attributes, twin; empty ones left
    out (all omitempty)."""
    out: dict[str, Any] = {}
    for key in ("id", "name", "description", "state", "last_online", "attributes", "twin"):
        value = device.get(key)
        if value:
            out[key] = sorted_map(value) if isinstance(value, dict) else value
    return out
