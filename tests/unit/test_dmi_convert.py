"""edgecore.dmi.convert: Device/DeviceModel JSON to DMI messages, configData packing, reports to twin bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import wrappers_pb2

from edgecore.dmi.convert import (
    ConversionError,
    customized_dict,
    device_message,
    device_model_id,
    device_protocol,
    model_message,
    pack_value,
    twin_update_body,
    unpack_value,
)
from edgecore.dmi.generate import DMIProto, load_protocol

SAMPLES = Path(__file__).resolve().parents[2] / "config" / "samples" / "thermometer.yaml"


@pytest.fixture(scope="module")
def proto() -> DMIProto:
    return load_protocol()


def sample(kind: str) -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all(SAMPLES.read_text()) if d["kind"] == kind)


def full_device() -> dict[str, Any]:
    """A Device using every field the CRD has, with Kubernetes' JSON key spellings."""
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "thermo-01", "namespace": "plant", "resourceVersion": "9"},
        "spec": {
            "deviceModelRef": {"name": "thermo-model"}, "nodeName": "edge-1",
            "protocol": {"protocolName": "modbus",
                         "configData": {"tcp": {"ip": "192.168.1.50", "port": 502}, "slaveID": 1, "debug": True,
                                        "ids": [1, "a"], "skip": None}},
            "methods": [{"name": "reset", "description": "reset it", "propertyNames": ["setpoint"]}],
            "properties": [
                {"name": "temperature", "reportCycle": 10000, "collectCycle": 5000.0, "reportToCloud": True,
                 "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "scale": 0.1}},
                 "pushMethod": {
                     "http": {"hostName": "collector", "port": 8080, "requestPath": "/in", "timeout": 3},
                     "mqtt": {"address": "tcp://127.0.0.1:1883", "topic": "thermo/temp", "qos": 1, "retained": True},
                     "otel": {"endpointURL": "http://otel:4318/v1/metrics"},
                     "dbMethod": {
                         "influxdb2": {"influxdb2ClientConfig": {"url": "http://i:8086", "org": "o", "bucket": "b"},
                                       "influxdb2DataConfig": {"measurement": "m", "tag": {"site": "a", "n": 1},
                                                               "fieldKey": "v"}},
                         "redis": {"redisClientConfig": {"addr": "r:6379", "db": 2, "poolsize": 4,
                                                         "minIdleConns": 1}},
                         "TDEngine": {"TDEngineClientConfig": {"addr": "td:6041", "dbName": "plant"}},
                         "mysql": {"mysqlClientConfig": {"addr": "db:3306", "database": "d", "userName": "u"}}}}},
                {"name": "setpoint", "desired": {"value": "42", "metadata": {"timestamp": "1", "n": 2}}},
            ]},
        "status": {"reportToCloud": True, "reportCycle": 1000, "twins": [
            {"propertyName": "temperature", "reported": {"value": "21.5", "metadata": {"type": "float"}},
             "observedDesired": {"value": ""}}]},
    }


def test_device_json_becomes_the_device_message_field_by_field(proto: DMIProto) -> None:
    message = device_message(proto, full_device())
    assert (message.name, message.namespace) == ("thermo-01", "plant")
    spec = message.spec
    assert spec.deviceModelReference == "thermo-model"
    assert spec.protocol.protocolName == "modbus"
    assert customized_dict(spec.protocol.configData) == {
        "tcp": {"ip": "192.168.1.50", "port": 502.0}, "slaveID": 1.0, "debug": True, "ids": [1.0, "a"]}
    assert [(m.name, m.description, list(m.propertyNames)) for m in spec.methods] == [
        ("reset", "reset it", ["setpoint"])]
    temperature, setpoint = spec.properties
    assert (temperature.name, temperature.reportCycle, temperature.collectCycle, temperature.reportToCloud) == (
        "temperature", 10000, 5000, True)
    assert temperature.visitors.protocolName == "modbus"
    assert customized_dict(temperature.visitors.configData) == {"register": "HoldingRegister",
                                                                "scale": pytest.approx(0.1)}
    push = temperature.pushMethod
    # Go decodes JSON into the generated structs case-insensitively: hostName -> hostname, TDEngine -> tdengine
    assert (push.http.hostname, push.http.port, push.http.requestpath, push.http.timeout) == ("collector", 8080, "/in",
                                                                                              3)
    assert (push.mqtt.address, push.mqtt.topic, push.mqtt.qos, push.mqtt.retained) == (
        "tcp://127.0.0.1:1883", "thermo/temp", 1, True)
    assert push.otel.endpointURL == "http://otel:4318/v1/metrics"
    influx = push.dbMethod.influxdb2
    assert (influx.influxdb2ClientConfig.url, influx.influxdb2ClientConfig.org, influx.influxdb2ClientConfig.bucket) \
        == ("http://i:8086", "o", "b")
    assert dict(influx.influxdb2DataConfig.tag) == {"site": "a", "n": "1"}
    assert (push.dbMethod.redis.redisClientConfig.addr, push.dbMethod.redis.redisClientConfig.db) == ("r:6379", 2)
    assert (push.dbMethod.tdengine.tdEngineClientConfig.addr, push.dbMethod.tdengine.tdEngineClientConfig.dbname) == (
        "td:6041", "plant")
    assert push.dbMethod.mysql.mysqlClientConfig.userName == "u"
    # the desired value reaches the mapper inside the Device
    assert setpoint.desired.value == "42" and dict(setpoint.desired.metadata) == {"timestamp": "1", "n": "2"}
    assert not setpoint.HasField("pushMethod") and not setpoint.HasField("visitors")
    assert (message.status.reportToCloud, message.status.reportCycle) == (True, 1000)
    assert message.status.twins[0].reported.value == "21.5"
    # and it is a valid message on the wire
    assert type(message).FromString(message.SerializeToString()) == message


def test_number_packing_follows_upstream_float_and_strings_stay_strings(proto: DMIProto) -> None:
    packed = pack_value(proto, 502)
    assert packed.type_url == "type.googleapis.com/google.protobuf.FloatValue"
    assert wrappers_pb2.FloatValue.FromString(packed.value).value == 502.0
    assert pack_value(proto, "502").type_url.endswith("google.protobuf.StringValue")
    assert pack_value(proto, False).type_url.endswith("google.protobuf.BoolValue")
    assert pack_value(proto, {"a": 1}).type_url.endswith("google.protobuf.Struct")
    assert pack_value(proto, [1]).type_url.endswith("google.protobuf.ListValue")
    assert pack_value(proto, None) is None
    for value in ("x", True, 2.5, {"k": "v", "n": [1.0, None]}, [1.0, "a"]):
        assert unpack_value(pack_value(proto, value)) == value
    other = proto.message("Any")(type_url="type.googleapis.com/google.protobuf.Int64Value",
                                 value=wrappers_pb2.Int64Value(value=7).SerializeToString())
    assert unpack_value(other) == 7
    with pytest.raises(ConversionError):
        unpack_value(proto.message("Any")(type_url="type.googleapis.com/v1beta1.Device"))


def test_sample_device_and_model_convert(proto: DMIProto) -> None:
    device, model = sample("Device"), sample("DeviceModel")
    assert device_protocol(device) == "virtual-thermometer" == model["spec"]["protocol"]
    assert device_model_id(device) == "default/thermometer-model"
    message = device_message(proto, device)
    assert {p.name: p.desired.value for p in message.spec.properties} == {"temperature": "", "threshold": "30"}
    assert customized_dict(message.spec.protocol.configData) == {"baseTemperature": 21.5,
                                                                 "noise": pytest.approx(0.2)}
    models = model_message(proto, model)
    assert (models.name, models.namespace) == ("thermometer-model", "default")
    assert [(p.name, p.type, p.accessMode, p.minimum, p.maximum, p.unit) for p in models.spec.properties] == [
        ("temperature", "FLOAT", "ReadOnly", "-40", "125", "degC"),
        ("threshold", "FLOAT", "ReadWrite", "-40", "125", "degC")]


def test_objects_without_a_name_are_refused_and_odd_values_are_tolerated(proto: DMIProto) -> None:
    with pytest.raises(ConversionError, match=r"metadata\.name"):
        device_message(proto, {"metadata": {}})
    with pytest.raises(ConversionError):
        model_message(proto, {"spec": {}})
    odd = device_message(proto, {"metadata": {"name": "d"}, "spec": {
        "properties": [{"name": "p", "reportCycle": "fast", "reportToCloud": "yes"}, "junk"],
        "protocol": {"protocolName": 5, "configData": "not a map"}}})
    assert odd.namespace == "default"
    assert [(p.name, p.reportCycle, p.reportToCloud) for p in odd.spec.properties] == [("p", 0, False)]
    assert odd.spec.protocol.protocolName == "5" and not odd.spec.protocol.configData.data
    assert model_message(proto, {"metadata": {"name": "m"}, "spec": {
        "properties": [{"name": "x", "minimum": 0, "maximum": 1.5}]}}).spec.properties[0].maximum == "1.5"


def twin(proto: DMIProto, name: str, reported: str = "", desired: str = "", kind: str = "") -> Any:
    out = proto.message("Twin")(propertyName=name)
    out.reported.value, out.observedDesired.value = reported, desired
    if kind:
        out.reported.metadata["type"] = kind
    return out


def test_a_report_becomes_the_twin_update_mqtt_mappers_send(proto: DMIProto) -> None:
    body = twin_update_body([twin(proto, "temperature", "21.5", kind="float"),
                             twin(proto, "threshold", "30", "30", kind="DOUBLE"),
                             twin(proto, "mode", "eco", kind="bytes"),
                             twin(proto, "empty"), twin(proto, "")], now=1234, event_id="e1")
    assert body == {"event_id": "e1", "timestamp": 1234, "twin": {
        "temperature": {"actual": {"value": "21.5"}, "metadata": {"type": "float"}},
        "threshold": {"expected": {"value": "30"}, "actual": {"value": "30"}, "metadata": {"type": "float"}},
        "mode": {"actual": {"value": "eco"}}}}
    assert twin_update_body([], now=1)["event_id"]  # a fresh event id when none is given
