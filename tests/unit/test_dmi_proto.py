"""edgecore/dmi/proto/api.proto against upstream's DMI v1beta1 numbers, and the compile-on-first-use cache.

A field under a wrong number is no error anywhere: a mapper built on mapper-framework would silently read it as
another field or drop it. So every declared field is compared with the table below, written from upstream's
api/apis/dmi/v1beta1/api.proto (facts: names and numbers), and every RPC with its request and response.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgecore.dmi import generate
from edgecore.dmi.generate import PROTO, DMIProtoError, build_protocol, descriptor_file_name, ensure_descriptor_set

UPSTREAM: dict[str, dict[str, int]] = {
    "MapperRegisterRequest": {"withData": 1, "mapper": 2},
    "MapperRegisterResponse": {"modelList": 1, "deviceList": 2},
    "MapperInfo": {"name": 1, "version": 2, "api_version": 3, "protocol": 4, "address": 5, "state": 6},
    "DeviceModel": {"name": 1, "spec": 2, "namespace": 3},
    "DeviceModelSpec": {"properties": 1},  # commands = 2 left out
    "ModelProperty": {"name": 1, "description": 2, "type": 3, "accessMode": 4, "minimum": 5, "maximum": 6, "unit": 7},
    "Device": {"name": 1, "spec": 2, "status": 3, "namespace": 4},
    "DeviceSpec": {"deviceModelReference": 1, "protocol": 2, "properties": 3, "methods": 4},
    "DeviceMethod": {"name": 1, "description": 2, "propertyNames": 3},
    "DeviceProperty": {"name": 1, "desired": 2, "visitors": 3, "reportCycle": 4, "collectCycle": 5,
                       "reportToCloud": 6, "pushMethod": 7},
    "ProtocolConfig": {"protocolName": 1, "configData": 2},
    "VisitorConfig": {"protocolName": 1, "configData": 2},
    "CustomizedValue": {"data": 1},
    "PushMethod": {"http": 1, "mqtt": 2, "dbMethod": 3, "otel": 4},  # anomalyDetection = 5 left out
    "PushMethodHTTP": {"hostname": 1, "port": 2, "requestpath": 3, "timeout": 4},
    "PushMethodMQTT": {"address": 1, "topic": 2, "qos": 3, "retained": 4},
    "PushMethodOTEL": {"endpointURL": 1},
    "DBMethod": {"influxdb2": 1, "redis": 2, "tdengine": 3, "mysql": 4},
    "DBMethodInfluxdb2": {"influxdb2ClientConfig": 1, "influxdb2DataConfig": 2},
    "Influxdb2ClientConfig": {"url": 1, "org": 2, "bucket": 3},
    "Influxdb2DataConfig": {"measurement": 1, "tag": 2, "fieldKey": 3},
    "DBMethodRedis": {"redisClientConfig": 1},
    "RedisClientConfig": {"addr": 1, "db": 2, "poolsize": 3, "minIdleConns": 4},
    "DBMethodTDEngine": {"tdEngineClientConfig": 1},
    "TDEngineClientConfig": {"addr": 1, "dbname": 2},
    "DBMethodMySQL": {"mysqlClientConfig": 1},
    "MySQLClientConfig": {"addr": 1, "database": 2, "userName": 3},
    "DeviceStatus": {"twins": 1, "reportToCloud": 2, "reportCycle": 3},
    "Twin": {"propertyName": 1, "observedDesired": 2, "reported": 3},
    "TwinProperty": {"value": 1, "metadata": 2},
    "ReportDeviceStatusRequest": {"deviceName": 1, "reportedDevice": 2, "deviceNamespace": 3},
    "ReportDeviceStatusResponse": {},
    "ReportDeviceStatesRequest": {"deviceName": 1, "deviceNamespace": 2, "state": 3},
    "ReportDeviceStatesResponse": {},
    "RegisterDeviceRequest": {"device": 1},
    "RegisterDeviceResponse": {"deviceName": 1, "deviceNamespace": 2},
    "RemoveDeviceRequest": {"deviceName": 1, "deviceNamespace": 2},
    "RemoveDeviceResponse": {},
    "UpdateDeviceRequest": {"device": 1},
    "UpdateDeviceResponse": {},
    "CreateDeviceModelRequest": {"model": 1},
    "CreateDeviceModelResponse": {"deviceModelName": 1, "deviceModelNamespace": 2},
    "RemoveDeviceModelRequest": {"modelName": 1, "modelNamespace": 2},
    "RemoveDeviceModelResponse": {},
    "UpdateDeviceModelRequest": {"model": 1},
    "UpdateDeviceModelResponse": {},
    "GetDeviceRequest": {"deviceName": 1, "deviceNamespace": 2},
    "GetDeviceResponse": {"device": 1},
}
RPCS = {
    "DeviceManagerService": {"MapperRegister", "ReportDeviceStatus", "ReportDeviceStates"},
    "DeviceMapperService": {"RegisterDevice", "RemoveDevice", "UpdateDevice", "CreateDeviceModel",
                            "RemoveDeviceModel", "UpdateDeviceModel", "GetDevice"},
}


def test_every_message_and_field_has_upstreams_number() -> None:
    proto = generate.load_protocol()
    ours = {name: {f.name: f.number for f in cls.DESCRIPTOR.fields}
            for name, cls in proto.messages.items() if name != "Any"}
    assert ours == UPSTREAM


def test_every_rpc_is_there_with_upstreams_request_and_response() -> None:
    proto = generate.load_protocol()
    assert {s: {m.name for m in proto.service_methods(s)} for s in RPCS} == RPCS
    for method in proto.methods.values():
        assert method.path == f"/v1beta1.{method.service}/{method.name}"
        assert method.request.DESCRIPTOR.name == f"{method.name}Request"
        assert method.response.DESCRIPTOR.name == f"{method.name}Response"
    assert proto.messages["CustomizedValue"].DESCRIPTOR.fields_by_name["data"].message_type.fields_by_name[
        "value"].message_type.full_name == "google.protobuf.Any"


@pytest.fixture
def proto_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "src" / "api.proto"
    copy.parent.mkdir()
    copy.write_bytes(PROTO.read_bytes())
    return copy


def test_compiled_once_into_a_hashed_file_that_git_ignores(proto_copy: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    path = ensure_descriptor_set(proto_copy, [cache])
    assert path == cache / descriptor_file_name(proto_copy.read_bytes())
    assert sorted(p.name for p in cache.iterdir()) == [".gitignore", path.name]
    assert (cache / ".gitignore").read_text() == "*\n"
    assert "MapperRegisterRequest" in build_protocol(path.read_bytes()).messages

    def no_protoc(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("protoc must not run again for an unchanged proto")

    monkeypatch.setattr(subprocess, "run", no_protoc)
    assert ensure_descriptor_set(proto_copy, [cache]) == path


def test_an_edited_proto_replaces_the_old_file_and_a_broken_one_says_why(proto_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = ensure_descriptor_set(proto_copy, [cache])
    proto_copy.write_text(proto_copy.read_text() + "\nmessage Extra { string x = 1; }\n")
    new = ensure_descriptor_set(proto_copy, [cache])
    assert new != old and not old.exists() and "Extra" in build_protocol(new.read_bytes()).messages
    proto_copy.write_text(proto_copy.read_text() + "\nmessage Broken { string = 1; }\n")
    with pytest.raises(DMIProtoError, match="protoc failed"):
        ensure_descriptor_set(proto_copy, [cache])
