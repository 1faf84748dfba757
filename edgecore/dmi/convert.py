"""Pure conversions between devices.kubeedge.io/v1beta1 JSON objects, DMI messages and DeviceTwin bodies.

Owns: Device / DeviceModel JSON (as MetaManager stores it) to `v1beta1.Device` / `v1beta1.DeviceModel`;
configData values to and from `google.protobuf.Any`; a ReportDeviceStatus request to the twin update body
DeviceTwin already handles for MQTT. Never does I/O and never reads a clock (`now` is passed in).

Upstream (facts, ref/devices-groups.md 4 and dtcommon's ConvertDevice) decodes the object's JSON into the
generated Go structs, so JSON keys match proto fields case-insensitively (`hostName` fills `hostname`,
`TDEngine` fills `tdengine`); `_get` does the same. configData values are packed one per top-level key:
a string as `StringValue`, a bool as `BoolValue`, every number as `FloatValue` (Go reads JSON numbers as
float64, upstream then narrows them to float32). Upstream refuses nested objects and lists; we pack them as
`Struct` / `ListValue` instead of refusing the whole device, and leave out nulls.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Final

from google.protobuf import json_format, struct_pb2, wrappers_pb2

from edgecore.dmi.generate import DMIProto

DEFAULT_NAMESPACE: Final = "default"
TYPE_URL_PREFIX: Final = "type.googleapis.com/"
# metadata.type values the edge twin validator accepts (ref 2.2); `double` reads as a float.
_TWIN_TYPES: Final = frozenset({"string", "int", "integer", "float", "boolean"})
_TWIN_TYPE_ALIASES: Final = {"double": "float"}
_UNPACKERS: Final[dict[str, Any]] = {
    "google.protobuf.StringValue": wrappers_pb2.StringValue, "google.protobuf.BoolValue": wrappers_pb2.BoolValue,
    "google.protobuf.FloatValue": wrappers_pb2.FloatValue, "google.protobuf.DoubleValue": wrappers_pb2.DoubleValue,
    "google.protobuf.Int32Value": wrappers_pb2.Int32Value, "google.protobuf.Int64Value": wrappers_pb2.Int64Value,
    "google.protobuf.UInt32Value": wrappers_pb2.UInt32Value, "google.protobuf.UInt64Value": wrappers_pb2.UInt64Value,
    "google.protobuf.BytesValue": wrappers_pb2.BytesValue,
}


class ConversionError(ValueError):
    """The object cannot become a DMI message (the text says which object and why)."""


# -- JSON access (Go's case-insensitive key match) -------------------------------------------------------
def _get(obj: Any, key: str) -> Any:
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    folded = key.casefold()
    return next((v for k, v in obj.items() if isinstance(k, str) and k.casefold() == folded), None)


def _obj(obj: Any, key: str) -> dict[str, Any]:
    value = _get(obj, key)
    return value if isinstance(value, dict) else {}


def _list(obj: Any, key: str) -> list[Any]:
    value = _get(obj, key)
    return value if isinstance(value, list) else []


def _str(obj: Any, key: str) -> str:
    value = _get(obj, key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) else ""


def _int(obj: Any, key: str) -> int:
    value = _get(obj, key)
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return 0


def _bool(obj: Any, key: str) -> bool:
    return _get(obj, key) is True


def _str_map(value: Any) -> dict[str, str]:
    """A map<string, string>: scalar values as text, anything else left out."""
    if not isinstance(value, dict):
        return {}
    return {k: _str(value, k) for k, v in value.items() if isinstance(k, str) and isinstance(v, str | int | float)}


def object_id(obj: Any) -> str | None:
    """`<namespace>/<name>` of a Kubernetes object (namespace `default` when absent), None without a name."""
    metadata = _obj(obj, "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return None
    namespace = metadata.get("namespace")
    return f"{namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE}/{name}"


def device_id(namespace: str, name: str) -> str:
    return f"{namespace or DEFAULT_NAMESPACE}/{name}"


def _name_and_namespace(obj: Any, what: str) -> tuple[str, str]:
    ident = object_id(obj)
    if ident is None:
        raise ConversionError(f"{what} without metadata.name")
    namespace, name = ident.split("/", 1)
    return name, namespace


# -- configData <-> Any ----------------------------------------------------------------------------------
def pack_value(proto: DMIProto, value: Any) -> Any | None:
    """One configData value as a `google.protobuf.Any` (None for null, which is left out)."""
    if value is None:
        return None
    if isinstance(value, bool):
        inner: Any = wrappers_pb2.BoolValue(value=value)
    elif isinstance(value, int | float):
        inner = wrappers_pb2.FloatValue(value=float(value))
    elif isinstance(value, str):
        inner = wrappers_pb2.StringValue(value=value)
    elif isinstance(value, dict):
        inner = struct_pb2.Struct()
        inner.update(value)
    elif isinstance(value, list):
        inner = struct_pb2.ListValue()
        inner.extend(value)
    else:
        raise ConversionError(f"a configData value of type {type(value).__name__} cannot be packed")
    packed = proto.message("Any")()
    packed.type_url = TYPE_URL_PREFIX + inner.DESCRIPTOR.full_name
    packed.value = inner.SerializeToString()
    return packed


def unpack_value(packed: Any) -> Any:
    """A configData value back from its Any (wrappers, Struct, ListValue); raises ConversionError otherwise."""
    type_name = str(packed.type_url).rsplit("/", 1)[-1]
    unpacker = _UNPACKERS.get(type_name)
    if unpacker is not None:
        return unpacker.FromString(packed.value).value
    if type_name == "google.protobuf.Struct":
        return json_format.MessageToDict(struct_pb2.Struct.FromString(packed.value))
    if type_name == "google.protobuf.ListValue":
        return json_format.MessageToDict(struct_pb2.ListValue.FromString(packed.value))
    raise ConversionError(f"configData value of type {type_name!r} is not supported")


def fill_customized(proto: DMIProto, target: Any, config_data: Any) -> None:
    """Pack `config_data` (a JSON object) into the CustomizedValue `target`."""
    if not isinstance(config_data, dict):
        return
    for key, value in config_data.items():
        packed = pack_value(proto, value)
        if packed is not None:
            target.data[key].CopyFrom(packed)


def customized_dict(value: Any) -> dict[str, Any]:
    """A CustomizedValue back as a JSON object (values that cannot be unpacked are left out)."""
    out: dict[str, Any] = {}
    for key, packed in value.data.items():
        try:
            out[key] = unpack_value(packed)
        except ConversionError:
            continue
    return out


# -- Device ----------------------------------------------------------------------------------------------
def device_message(proto: DMIProto, device: Any) -> Any:
    """A Device object (devices.kubeedge.io/v1beta1 JSON) as a `v1beta1.Device`."""
    name, namespace = _name_and_namespace(device, "Device")
    spec = _obj(device, "spec")
    out = proto.message("Device")(name=name, namespace=namespace)
    out.spec.deviceModelReference = _str(_obj(spec, "deviceModelRef"), "name")
    protocol = _obj(spec, "protocol")
    if protocol:
        out.spec.protocol.protocolName = _str(protocol, "protocolName")
        fill_customized(proto, out.spec.protocol.configData, _get(protocol, "configData"))
    for prop in _list(spec, "properties"):
        if isinstance(prop, dict):
            _fill_property(proto, out.spec.properties.add(), prop)
    for method in _list(spec, "methods"):
        if isinstance(method, dict):
            out.spec.methods.add(name=_str(method, "name"), description=_str(method, "description"),
                                 propertyNames=[n for n in _list(method, "propertyNames") if isinstance(n, str)])
    status = _obj(device, "status")
    if status:
        out.status.reportToCloud = _bool(status, "reportToCloud")
        out.status.reportCycle = _int(status, "reportCycle")
        for twin in _list(status, "twins"):
            if isinstance(twin, dict):
                item = out.status.twins.add(propertyName=_str(twin, "propertyName"))
                _fill_twin_property(item.observedDesired, _obj(twin, "observedDesired"))
                _fill_twin_property(item.reported, _obj(twin, "reported"))
    return out


def _fill_twin_property(target: Any, source: dict[str, Any]) -> None:
    target.value = _str(source, "value")
    target.metadata.update(_str_map(_get(source, "metadata")))


def _fill_property(proto: DMIProto, target: Any, prop: dict[str, Any]) -> None:
    target.name = _str(prop, "name")
    desired = _obj(prop, "desired")
    if desired:
        _fill_twin_property(target.desired, desired)
    visitors = _obj(prop, "visitors")
    if visitors:
        target.visitors.protocolName = _str(visitors, "protocolName")
        fill_customized(proto, target.visitors.configData, _get(visitors, "configData"))
    target.reportCycle = _int(prop, "reportCycle")
    target.collectCycle = _int(prop, "collectCycle")
    target.reportToCloud = _bool(prop, "reportToCloud")
    push = _obj(prop, "pushMethod")
    if push:
        _fill_push_method(target.pushMethod, push)


def _fill_push_method(target: Any, push: dict[str, Any]) -> None:
    http = _obj(push, "http")
    if http:
        target.http.hostname = _str(http, "hostname")
        target.http.port = _int(http, "port")
        target.http.requestpath = _str(http, "requestpath")
        target.http.timeout = _int(http, "timeout")
    mqtt = _obj(push, "mqtt")
    if mqtt:
        target.mqtt.address = _str(mqtt, "address")
        target.mqtt.topic = _str(mqtt, "topic")
        target.mqtt.qos = _int(mqtt, "qos")
        target.mqtt.retained = _bool(mqtt, "retained")
    otel = _obj(push, "otel")
    if otel:
        target.otel.endpointURL = _str(otel, "endpointURL")
    db = _obj(push, "dbMethod")
    influx = _obj(db, "influxdb2")
    if influx:
        client, data = _obj(influx, "influxdb2ClientConfig"), _obj(influx, "influxdb2DataConfig")
        target.dbMethod.influxdb2.influxdb2ClientConfig.url = _str(client, "url")
        target.dbMethod.influxdb2.influxdb2ClientConfig.org = _str(client, "org")
        target.dbMethod.influxdb2.influxdb2ClientConfig.bucket = _str(client, "bucket")
        target.dbMethod.influxdb2.influxdb2DataConfig.measurement = _str(data, "measurement")
        target.dbMethod.influxdb2.influxdb2DataConfig.tag.update(_str_map(_get(data, "tag")))
        target.dbMethod.influxdb2.influxdb2DataConfig.fieldKey = _str(data, "fieldKey")
    redis = _obj(_obj(db, "redis"), "redisClientConfig")
    if redis:
        config = target.dbMethod.redis.redisClientConfig
        config.addr, config.db = _str(redis, "addr"), _int(redis, "db")
        config.poolsize, config.minIdleConns = _int(redis, "poolsize"), _int(redis, "minIdleConns")
    tdengine = _obj(_obj(db, "tdengine"), "tdEngineClientConfig")
    if tdengine:
        target.dbMethod.tdengine.tdEngineClientConfig.addr = _str(tdengine, "addr")
        target.dbMethod.tdengine.tdEngineClientConfig.dbname = _str(tdengine, "dbname")
    mysql = _obj(_obj(db, "mysql"), "mysqlClientConfig")
    if mysql:
        config = target.dbMethod.mysql.mysqlClientConfig
        config.addr, config.database, config.userName = (_str(mysql, "addr"), _str(mysql, "database"),
                                                          _str(mysql, "userName"))


def device_protocol(device: Any) -> str:
    """`spec.protocol.protocolName`: which mapper serves the device."""
    return _str(_obj(_obj(device, "spec"), "protocol"), "protocolName")


def device_model_id(device: Any) -> str | None:
    """`<namespace>/<deviceModelRef.name>` (the model lives in the Device's namespace), None without one."""
    ident = object_id(device)
    ref = _str(_obj(_obj(device, "spec"), "deviceModelRef"), "name")
    return f"{ident.split('/', 1)[0]}/{ref}" if ident and ref else None


# -- DeviceModel -----------------------------------------------------------------------------------------
def model_message(proto: DMIProto, model: Any) -> Any:
    """A DeviceModel object (devices.kubeedge.io/v1beta1 JSON) as a `v1beta1.DeviceModel`."""
    name, namespace = _name_and_namespace(model, "DeviceModel")
    out = proto.message("DeviceModel")(name=name, namespace=namespace)
    for prop in _list(_obj(model, "spec"), "properties"):
        if isinstance(prop, dict):
            out.spec.properties.add(**{key: _str(prop, key) for key in (
                "name", "description", "type", "accessMode", "minimum", "maximum", "unit")})
    return out


# -- mapper reports -> DeviceTwin ------------------------------------------------------------------------
def twin_type(metadata: Any) -> str | None:
    """The twin type of a TwinProperty's metadata, when the edge validator accepts it."""
    raw = str(metadata.get("type", "")).strip().lower() if metadata else ""
    raw = _TWIN_TYPE_ALIASES.get(raw, raw)
    return raw if raw in _TWIN_TYPES else None


def twin_update_body(twins: Iterable[Any], now: int, event_id: str | None = None) -> dict[str, Any]:
    """A ReportDeviceStatus's twins as the body of `.../twin/update` (upstream: expected = observedDesired.value,
    actual = reported.value). Empty values are left out; a twin with neither is skipped."""
    update: dict[str, Any] = {}
    for twin in twins:
        name = str(twin.propertyName)
        if not name:
            continue
        msg: dict[str, Any] = {}
        if twin.observedDesired.value:
            msg["expected"] = {"value": twin.observedDesired.value}
        if twin.reported.value:
            msg["actual"] = {"value": twin.reported.value}
        if not msg:
            continue
        kind = twin_type(twin.reported.metadata) or twin_type(twin.observedDesired.metadata)
        if kind is not None:
            msg["metadata"] = {"type": kind}
        update[name] = msg
    return {"event_id": event_id or str(uuid.uuid4()), "timestamp": now, "twin": update}
