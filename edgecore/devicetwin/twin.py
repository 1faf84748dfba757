"""The twin of one device, and what an update does to it (pure; no I/O, no clock: `now` is passed in).

A `Twin` is one `device_twin` row. `to_msg` is upstream's MsgTwin JSON of it. Three writers change twins:

- `apply_edge_update`: a mapper or app published `.../twin/update` (upstream's "rest" deal type). Every
  expected/actual value given is stored with a fresh timestamp and its edge version bumped; the result
  (for `.../twin/update/result`), the document (last/current) and the sync (to the cloud, with versions)
  come back. A bad value rejects the whole update (nothing is applied).
- `apply_cloud_sync`: the cloud's `twin/cloud_updated` (upstream's "sync" type): a value is taken only when
  the request's version is not older than ours on either counter; a refused one is sent back in `sync`.
- `apply_desired`: `spec.properties[].desired.value` of the Device object the cloud pushed: a changed
  desired value becomes the expected value with the cloud version bumped.

`build_delta` is upstream's delta: every non-deleted twin with a non-empty expected value, and the map of
those whose expected differs from actual; published only when that map is not empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from edgecore.devicetwin.messages import (
    BAD_REQUEST,
    ERR_KEY,
    ERR_VALUE,
    TYPE_DELETED,
    TYPE_STRING,
    base,
    sorted_map,
    validate_key,
    validate_value,
    validate_value_chars,
)

Version = tuple[int, int]  # (cloud, edge)
MsgTwin = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Twin:
    expected: str | None = None
    actual: str | None = None
    expected_ts: int | None = None  # expected_meta {"timestamp": ms}; None = no meta
    actual_ts: int | None = None
    expected_version: Version | None = None
    actual_version: Version | None = None
    optional: bool = True
    attr_type: str = TYPE_STRING
    metadata: str = "{}"  # the metadata column: the twin's metadata JSON with its type blanked
    description: str = ""

    @property
    def deleted(self) -> bool:
        return self.attr_type == TYPE_DELETED


class TwinError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Outcome:
    twins: dict[str, Twin]  # the device's twins after the change
    changed: dict[str, Twin] = field(default_factory=dict)  # rows to write
    result: dict[str, MsgTwin | None] = field(default_factory=dict)
    sync: dict[str, MsgTwin | None] = field(default_factory=dict)
    document: dict[str, dict[str, MsgTwin | None]] = field(default_factory=dict)


# -- JSON views ------------------------------------------------------------------------------------------
def version_json(version: Version) -> dict[str, int]:
    return {"cloud": version[0], "edge": version[1]}


def parse_version(value: Any) -> Version | None:
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            return None
    if not isinstance(value, dict):
        return None
    cloud, edge = value.get("cloud", 0), value.get("edge", 0)
    return (cloud if isinstance(cloud, int) else 0, edge if isinstance(edge, int) else 0)


def parse_ts(meta: str | None) -> int | None:
    if not meta:
        return None
    try:
        value = orjson.loads(meta)
    except orjson.JSONDecodeError:
        return None
    ts = value.get("timestamp", 0) if isinstance(value, dict) else 0
    return ts if isinstance(ts, int) else 0


def ts_json(ts: int | None) -> str | None:
    return None if ts is None else orjson.dumps({"timestamp": ts} if ts else {}).decode()


def _value(value: str | None, ts: int | None) -> dict[str, Any] | None:
    if not value:
        return None
    out: dict[str, Any] = {"value": value}
    if ts is not None:
        out["metadata"] = {"timestamp": ts} if ts else {}
    return out


def to_msg(twin: Twin, versions: bool = True) -> MsgTwin:
    """Upstream's MsgTwin of a row (DeviceTwinToMsgTwin), optionally without the version fields."""
    out: MsgTwin = {}
    expected, actual = _value(twin.expected, twin.expected_ts), _value(twin.actual, twin.actual_ts)
    if expected is not None:
        out["expected"] = expected
    if actual is not None:
        out["actual"] = actual
    out["optional"] = twin.optional
    out["metadata"] = {"type": twin.attr_type} if twin.attr_type else {}
    if versions and twin.expected_version is not None:
        out["expected_version"] = version_json(twin.expected_version)
    if versions and twin.actual_version is not None:
        out["actual_version"] = version_json(twin.actual_version)
    return out


_MSG_ORDER = ("expected", "actual", "optional", "metadata", "expected_version", "actual_version")


def ordered(msg: MsgTwin) -> MsgTwin:
    return {k: msg[k] for k in _MSG_ORDER if k in msg}


def without_versions(msg: MsgTwin | None) -> MsgTwin | None:
    if msg is None:
        return None
    return {k: v for k, v in msg.items() if k not in ("expected_version", "actual_version")}


def twin_body(event_id: str, timestamp: int, twins: dict[str, MsgTwin | None]) -> dict[str, Any]:
    return {**base(event_id, timestamp), "twin": sorted_map(twins)}


def document_body(event_id: str, timestamp: int, document: dict[str, dict[str, MsgTwin | None]]) -> dict[str, Any]:
    return {**base(event_id, timestamp), "twin": sorted_map(document)}


def get_result(twins: dict[str, Twin]) -> dict[str, MsgTwin | None]:
    """Twin get / update result view: deleted twins left out, no versions."""
    return {k: to_msg(t, versions=False) for k, t in twins.items() if not t.deleted}


def build_delta(event_id: str, timestamp: int, twins: dict[str, Twin]) -> dict[str, Any] | None:
    """Upstream's delta body, or None when no expected value differs from its actual value."""
    shown: dict[str, MsgTwin | None] = {}
    delta: dict[str, str] = {}
    for key, twin in twins.items():
        if twin.deleted or not twin.expected:
            continue
        if twin.expected != (twin.actual or ""):
            delta[key] = twin.expected
        shown[key] = to_msg(twin, versions=False)
    if not delta:
        return None
    return {**twin_body(event_id, timestamp, shown), "delta": sorted_map(delta)}


# -- checks ----------------------------------------------------------------------------------------------
def check_update(twin: Any) -> dict[str, Any]:
    """The `twin` map of an update body, keys and values checked as upstream (UnmarshalDeviceTwinUpdate)."""
    if not isinstance(twin, dict):
        raise TwinError(BAD_REQUEST, "Update twin error, key:twin does not exist")
    for key, value in twin.items():
        if not validate_key(key):
            raise TwinError(BAD_REQUEST, ERR_KEY)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise TwinError(BAD_REQUEST, f"twin {key!r} must be an object or null")
        for side in ("expected", "actual"):
            side_value = value.get(side)
            if side_value is None:
                continue
            raw = side_value.get("value") if isinstance(side_value, dict) else None
            if not isinstance(raw, str):
                raise TwinError(BAD_REQUEST, f"twin {key!r}: {side}.value must be a string")
            if not validate_value_chars(raw):
                raise TwinError(BAD_REQUEST, ERR_VALUE)
    return twin


def _type_of(msg: MsgTwin) -> str | None:
    meta = msg.get("metadata")
    if not isinstance(meta, dict):
        return None
    kind = meta.get("type", "")
    return kind if isinstance(kind, str) else ""


def _meta_column(msg: MsgTwin) -> str:
    meta = msg.get("metadata")
    rest = {k: v for k, v in meta.items() if k != "type"} if isinstance(meta, dict) else {}
    return orjson.dumps(rest).decode()


def _side(msg: MsgTwin, side: str) -> str | None:
    value = msg.get(side)
    return value.get("value") if isinstance(value, dict) else None


def _bump_edge(version: Version | None) -> Version:
    cloud, edge = version or (0, 0)
    return cloud, edge + 1


def _newer_or_same(ours: Version | None, theirs: Version | None) -> bool:
    """Upstream dealVersion for a cloud sync: a request without a version, or older on either counter, is refused."""
    if theirs is None:
        return False
    cloud, edge = ours or (0, 0)
    return cloud <= theirs[0] and edge <= theirs[1]


# -- edge update (mapper / app) --------------------------------------------------------------------------
def apply_edge_update(twins: dict[str, Twin], update: dict[str, Any], now: int) -> Outcome:
    """Apply a `.../twin/update` twin map; raises TwinError (nothing applied) on a bad value."""
    out = Outcome(dict(twins))
    for key in sorted(update):
        msg = update[key]
        current = out.twins.get(key)
        if current is None:
            _edge_add(out, key, msg, now)
        elif msg is None:
            _edge_delete(out, key, current)
        else:
            _edge_compare(out, key, current, msg, now)
    return out


def _edge_add(out: Outcome, key: str, msg: MsgTwin | None, now: int) -> None:
    if msg is None:
        raise TwinError(BAD_REQUEST, "The request body is wrong")
    kind = _type_of(msg)
    value_type = TYPE_STRING if kind is None else kind
    twin = Twin(optional=msg["optional"] if isinstance(msg.get("optional"), bool) else True,
                attr_type=TYPE_STRING if kind is None else kind, metadata=_meta_column(msg))
    for side in ("expected", "actual"):
        value = _side(msg, side)
        if value is None:
            continue
        problem = validate_value(value_type, value)
        if problem:
            raise TwinError(BAD_REQUEST, problem)
        twin = (replace(twin, expected=value, expected_ts=now, expected_version=(0, 1)) if side == "expected"
                else replace(twin, actual=value, actual_ts=now, actual_version=(0, 1)))
    out.twins[key] = out.changed[key] = twin
    out.document[key] = {"last": None, "current": None if twin.deleted else to_msg(twin, versions=False)}
    out.sync[key] = to_msg(twin)
    out.result[key] = to_msg(twin, versions=False)


def _edge_delete(out: Outcome, key: str, current: Twin) -> None:
    if not current.optional or current.deleted:
        return
    if current.expected_version is None and current.actual_version is None:
        return
    twin = replace(current, attr_type=TYPE_DELETED, expected=None, expected_ts=None, actual=None, actual_ts=None,
                   expected_version=None if current.expected_version is None else _bump_edge(current.expected_version),
                   actual_version=None if current.actual_version is None else _bump_edge(current.actual_version))
    out.twins[key] = out.changed[key] = twin
    out.document[key] = {"last": to_msg(current, versions=False), "current": None}
    out.sync[key] = to_msg(twin)
    out.result[key] = None


def _edge_compare(out: Outcome, key: str, current: Twin, msg: MsgTwin, now: int) -> None:
    kind = _type_of(msg)
    value_type = (kind or TYPE_STRING) if current.deleted else current.attr_type
    twin = current
    sync: MsgTwin = {}
    for side in ("expected", "actual"):
        value = _side(msg, side)
        if value is None:
            continue
        problem = validate_value(value_type, value)
        if problem:
            raise TwinError(BAD_REQUEST, problem)
        if side == "expected":
            twin = replace(twin, expected=value, expected_ts=now, expected_version=_bump_edge(twin.expected_version))
            sync["expected"] = {"value": value, "metadata": {"timestamp": now}}
            sync["expected_version"] = version_json(twin.expected_version or (0, 0))
        else:
            twin = replace(twin, actual=value, actual_ts=now, actual_version=_bump_edge(twin.actual_version))
            sync["actual"] = {"value": value, "metadata": {"timestamp": now}}
            sync["actual_version"] = version_json(twin.actual_version or (0, 0))
    optional = msg.get("optional")
    if isinstance(optional, bool) and optional != twin.optional and twin.optional:
        twin = replace(twin, optional=optional)
    if kind is not None:
        if {"type": kind} != {"type": current.attr_type} or _meta_column(msg) != current.metadata:
            twin = replace(twin, metadata=_meta_column(msg))
            if current.deleted:
                twin = replace(twin, attr_type=kind)
    elif current.deleted:
        twin = replace(twin, attr_type=TYPE_STRING)
    if twin == current:
        return
    if sync:
        sync["optional"] = twin.optional
        sync["metadata"] = {"type": twin.attr_type} if twin.attr_type else {}
    out.twins[key] = out.changed[key] = twin
    out.document[key] = {"last": None if current.deleted else to_msg(current, versions=False),
                         "current": to_msg(twin, versions=False)}
    out.sync[key] = ordered(sync) if sync else to_msg(twin)
    out.result[key] = without_versions(out.sync[key])


# -- cloud sync (twin/cloud_updated) ---------------------------------------------------------------------
def apply_cloud_sync(twins: dict[str, Twin], update: dict[str, Any], now: int) -> Outcome:
    out = Outcome(dict(twins))
    for key in sorted(update):
        msg = update[key]
        if not isinstance(msg, dict) or not validate_key(key):
            continue
        current = out.twins.get(key)
        if current is None:
            _sync_add(out, key, msg, now)
        elif _type_of(msg) == TYPE_DELETED:
            _sync_delete(out, key, current, msg)
        else:
            _sync_compare(out, key, current, msg, now)
    return out


def _sync_add(out: Outcome, key: str, msg: MsgTwin, now: int) -> None:
    kind = _type_of(msg)
    if kind == TYPE_DELETED:
        return
    twin = Twin(optional=msg["optional"] if isinstance(msg.get("optional"), bool) else True,
                attr_type=TYPE_STRING if kind is None else kind, metadata=_meta_column(msg))
    for side in ("expected", "actual"):
        value = _side(msg, side)
        if value is None:
            continue
        version = parse_version(msg.get(f"{side}_version"))
        if version is None or validate_value(twin.attr_type, value):
            return  # refused: upstream drops a sync add without a version or with a bad value
        twin = (replace(twin, expected=value, expected_ts=now, expected_version=version) if side == "expected"
                else replace(twin, actual=value, actual_ts=now, actual_version=version))
    out.twins[key] = out.changed[key] = twin
    out.document[key] = {"last": None, "current": to_msg(twin, versions=False)}


def _sync_delete(out: Outcome, key: str, current: Twin, msg: MsgTwin) -> None:
    if current.deleted:
        return
    for side in ("expected", "actual"):
        ours = current.expected_version if side == "expected" else current.actual_version
        theirs = parse_version(msg.get(f"{side}_version"))
        if ours is not None and theirs is not None and not _newer_or_same(ours, theirs):
            out.sync[key] = to_msg(current)
            return
    twin = replace(current, attr_type=TYPE_DELETED, expected=None, expected_ts=None, actual=None, actual_ts=None,
                   expected_version=parse_version(msg.get("expected_version")) or current.expected_version,
                   actual_version=parse_version(msg.get("actual_version")) or current.actual_version)
    out.twins[key] = out.changed[key] = twin
    out.document[key] = {"last": to_msg(current, versions=False), "current": None}


def _sync_compare(out: Outcome, key: str, current: Twin, msg: MsgTwin, now: int) -> None:
    kind = _type_of(msg)
    value_type = (kind or TYPE_STRING) if current.deleted else current.attr_type
    twin = current
    refused: MsgTwin = {}
    for side in ("expected", "actual"):
        value = _side(msg, side)
        if value is None or validate_value(value_type, value):
            continue
        ours = twin.expected_version if side == "expected" else twin.actual_version
        theirs = parse_version(msg.get(f"{side}_version"))
        if not _newer_or_same(ours, theirs):
            mine = to_msg(current)
            for k in (side, f"{side}_version", "optional", "metadata"):
                if k in mine:
                    refused[k] = mine[k]
            break  # upstream stops taking values once one is refused
        twin = (replace(twin, expected=value, expected_ts=now, expected_version=theirs) if side == "expected"
                else replace(twin, actual=value, actual_ts=now, actual_version=theirs))
    if not refused:
        optional = msg.get("optional")
        if isinstance(optional, bool) and optional != twin.optional and twin.optional:
            twin = replace(twin, optional=optional)
        if kind is not None and ({"type": kind} != {"type": current.attr_type} or
                                 _meta_column(msg) != current.metadata):
            twin = replace(twin, metadata=_meta_column(msg), attr_type=kind if current.deleted else twin.attr_type)
        elif kind is None and current.deleted:
            twin = replace(twin, attr_type=TYPE_STRING)
    else:
        out.sync[key] = ordered(refused)
    if twin != current:
        out.twins[key] = out.changed[key] = twin
        out.document[key] = {"last": None if current.deleted else to_msg(current, versions=False),
                             "current": to_msg(twin, versions=False)}


# -- desired values of the Device object -----------------------------------------------------------------
def desired_of(device: Any) -> dict[str, str]:
    """`spec.properties[].desired.value` by property name (empty values left out)."""
    spec = device.get("spec") if isinstance(device, dict) else None
    props = spec.get("properties") if isinstance(spec, dict) else None
    desired: dict[str, str] = {}
    for prop in props if isinstance(props, list) else []:
        if not isinstance(prop, dict) or not isinstance(prop.get("name"), str):
            continue
        want = prop.get("desired")
        value = want.get("value") if isinstance(want, dict) else None
        if isinstance(value, str) and value and validate_key(prop["name"]):
            desired[prop["name"]] = value
    return desired


def apply_desired(twins: dict[str, Twin], desired: dict[str, str], now: int) -> Outcome:
    """The cloud's desired values as expected values (cloud version bumped); unchanged ones are no-ops."""
    out = Outcome(dict(twins))
    for key in sorted(desired):
        value = desired[key]
        current = out.twins.get(key)
        if current is not None and not current.deleted and current.expected == value:
            continue
        if current is None or current.deleted:
            base_twin = current or Twin(optional=False)
            cloud, edge = base_twin.expected_version or (0, 0)
            twin = replace(base_twin, attr_type=TYPE_STRING, expected=value, expected_ts=now,
                           expected_version=(cloud + 1, edge))
            last = None
        else:
            cloud, edge = current.expected_version or (0, 0)
            twin = replace(current, expected=value, expected_ts=now, expected_version=(cloud + 1, edge))
            last = to_msg(current, versions=False)
        out.twins[key] = out.changed[key] = twin
        out.document[key] = {"last": last, "current": to_msg(twin, versions=False)}
    return out
