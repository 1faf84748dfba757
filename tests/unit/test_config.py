"""Tests for common.config: upstream defaults and keys, file semantics, messages, checks, dumps."""

from __future__ import annotations

import logging
import socket
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import (
    CloudCoreConfig,
    ConfigError,
    Duration,
    EdgeCoreConfig,
    default_config_yaml,
    dump_yaml,
    load_cloudcore,
    load_config,
    load_edgecore,
)
from common.config.base import first_host_ip, local_ip, parse_go_duration
from common.config.cloudcore import EdgeControllerLoad
from common.config.edgecore import EdgeHub, EventBus, TailoredKubeletConfig

REPO = Path(__file__).resolve().parents[2]
EDGE_SAMPLE = REPO / "config" / "edgecore.yaml"
CLOUD_SAMPLE = REPO / "config" / "cloudcore.yaml"
INT32_MAX = 2**31 - 1


def _tree(config: EdgeCoreConfig | CloudCoreConfig) -> dict[str, Any]:
    loaded = yaml.safe_load(dump_yaml(config))
    assert isinstance(loaded, dict)
    return loaded


def _at(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for key in dotted.split("/"):
        node = node[key]
    return node


def _write(tmp_path: Path, text: str, name: str = "edgecore.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _no_token(tmp_path: Path) -> Path:
    return tmp_path / "no-bootstrap-token"


# --- defaults ---------------------------------------------------------------------------------

EDGE_DEFAULTS = {
    "apiVersion": "edgecore.config.kubeedge.io/v1alpha2",
    "kind": "EdgeCore",
    "database/driverName": "sqlite3",
    "database/dataSource": "/var/lib/kubeedge/edgecore.db",
    "modules/edgeHub/heartbeat": 15,
    "modules/edgeHub/messageQPS": 30,
    "modules/edgeHub/messageBurst": 60,
    "modules/edgeHub/projectID": "e632aba927ea4ac2b575ec1603d56f10",
    "modules/edgeHub/tlsCaFile": "/etc/kubeedge/ca/rootCA.crt",
    "modules/edgeHub/token": "",
    "modules/edgeHub/rotateCertificates": True,
    "modules/edgeHub/websocket/enable": True,
    "modules/edgeHub/quic/enable": False,
    "modules/edgeHub/quic/handshakeTimeout": 30,
    "modules/edged/nodeIP": "",
    "modules/edged/registerNodeNamespace": "default",
    "modules/edged/podSandboxImage": "kubeedge/pause:3.6",
    "modules/edged/rootDirectory": "/var/lib/kubelet",
    "modules/edged/maxContainerCount": -1,
    "modules/edged/minimumGCAge": "0s",
    "modules/edged/tailoredKubeletConfig/cgroupDriver": "cgroupfs",
    "modules/edged/tailoredKubeletConfig/cgroupsPerQOS": True,
    "modules/edged/tailoredKubeletConfig/readOnlyPort": 10350,
    "modules/edged/tailoredKubeletConfig/registryPullQPS": 5,
    "modules/edged/tailoredKubeletConfig/eventRecordQPS": 50,
    "modules/edged/tailoredKubeletConfig/imageGCHighThresholdPercent": 85,
    "modules/edged/tailoredKubeletConfig/imageGCLowThresholdPercent": 80,
    "modules/edged/tailoredKubeletConfig/imageMinimumGCAge": "2m0s",
    "modules/edged/tailoredKubeletConfig/cpuCFSQuotaPeriod": "100ms",
    "modules/edged/tailoredKubeletConfig/makeIPTablesUtilChains": True,
    "modules/edged/tailoredKubeletConfig/memoryManagerPolicy": "None",
    "modules/edged/tailoredKubeletConfig/streamingConnectionIdleTimeout": "4h0m0s",
    "modules/edged/tailoredKubeletConfig/enforceNodeAllocatable": ["pods"],
    "modules/edged/tailoredKubeletConfig/evictionHard/imagefs.available": "15%",
    "modules/edged/tailoredKubeletConfig/memoryThrottlingFactor": 0.9,
    "modules/eventBus/mqttMode": 2,
    "modules/eventBus/mqttQOS": 0,
    "modules/eventBus/mqttSubClientID": "",
    "modules/eventBus/eventBusTLS/tlsMqttCAFile": "/etc/kubeedge/ca/rootCA.crt",
    "modules/metaManager/contextSendModule": "websocket",
    "modules/metaManager/metaServer/dummyServer": "169.254.30.10:10550",
    "modules/metaManager/metaServer/serviceAccountIssuers": ["https://kubernetes.default.svc.cluster.local"],
    "modules/deviceTwin/dmiSockPath": "/etc/kubeedge/dmi.sock",
    "modules/edgeStream/tlsTunnelCAFile": "/etc/kubeedge/ca/rootCA.crt",
    "modules/edgeStream/server": "127.0.0.1:10004",
    "modules/serviceBus/port": 9060,
    "modules/dbTest/enable": False,
}

CLOUD_DEFAULTS = {
    "apiVersion": "cloudcore.config.kubeedge.io/v1alpha1",
    "kind": "CloudCore",
    "commonConfig/tunnelPort": 10350,
    "commonConfig/monitorServer/bindAddress": "127.0.0.1:9091",
    "kubeAPIConfig/master": "",
    "kubeAPIConfig/contentType": "application/vnd.kubernetes.protobuf",
    "kubeAPIConfig/qps": 2500,
    "kubeAPIConfig/burst": 5000,
    "modules/cloudHub/nodeLimit": 500,
    "modules/cloudHub/dnsNames": [""],
    "modules/cloudHub/tlsCAFile": "/etc/kubeedge/ca/rootCA.crt",
    "modules/cloudHub/tlsCAKeyFile": "/etc/kubeedge/ca/rootCA.key",
    "modules/cloudHub/edgeCertSigningDuration": 365,
    "modules/cloudHub/tokenRefreshDuration": 12,
    "modules/cloudHub/unixsocket/address": "unix:///var/lib/kubeedge/kubeedge.sock",
    "modules/cloudHub/quic/maxIncomingStreams": 10000,
    "modules/cloudHub/https/port": 10002,
    "modules/cloudHub/authorization/debug": True,
    "modules/cloudHub/authorization/modes": [{"node": {"enable": True}}],
    "modules/edgeController/nodeUpdateFrequency": 10,
    "modules/edgeController/buffer/patchNode": 1274,
    "modules/edgeController/buffer/queryNode": 1524,
    "modules/edgeController/buffer/createLease": 1524,
    "modules/edgeController/buffer/podEvent": 1,
    "modules/edgeController/buffer/processEvent": 1024,
    "modules/edgeController/load/patchNodeWorkers": 110,
    "modules/edgeController/load/queryNodeWorkers": 500,
    "modules/edgeController/load/createLeaseWorkers": 500,
    "modules/edgeController/load/UpdateRuleStatusWorkers": 4,
    "modules/edgeController/load/ServiceAccountTokenWorkers": 100,
    "modules/edgeController/load/CreatePodWorks": 4,
    "modules/edgeController/load/queryConfigMapWorkers": 100,
    "modules/deviceController/buffer/updateDeviceTwins": 1024,
    "modules/deviceController/load/updateDeviceStatusWorkers": 1,
    "modules/taskManager/buffer/taskStatus": 1024,
    "modules/taskManager/load/taskWorkers": 1,
    "modules/dynamicController/enable": False,
    "modules/cloudStream/tlsStreamCAFile": "/etc/kubeedge/ca/streamCA.crt",
    "modules/cloudStream/streamPort": 10003,
    "modules/router/port": 9443,
    "modules/iptablesManager/mode": "internal",
}


@pytest.mark.parametrize(("key", "expected"), EDGE_DEFAULTS.items())
def test_edgecore_default(key: str, expected: object) -> None:
    assert _at(_tree(EdgeCoreConfig()), key) == expected


@pytest.mark.parametrize(("key", "expected"), CLOUD_DEFAULTS.items())
def test_cloudcore_default(key: str, expected: object) -> None:
    assert _at(_tree(CloudCoreConfig()), key) == expected


def test_host_dependent_defaults() -> None:
    edge = EdgeCoreConfig()
    assert edge.modules.edge_hub.websocket.server == f"{local_ip()}:10000"
    assert edge.modules.edge_hub.quic.server == f"{local_ip()}:10001"
    assert edge.modules.edge_hub.http_server == f"https://{local_ip()}:10002"
    assert edge.modules.edged.hostname_override == socket.gethostname().strip().lower()
    assert CloudCoreConfig().modules.cloud_hub.advertise_address == [first_host_ip()]


def test_optional_kubelet_keys_are_accepted_and_omitted_when_unset(tmp_path: Path) -> None:
    assert "registerWithTaints" not in _at(_tree(EdgeCoreConfig()), "modules/edged/tailoredKubeletConfig")
    path = _write(
        tmp_path,
        """
modules:
  edged:
    tailoredKubeletConfig:
      registerWithTaints: [{key: dedicated, value: edge, effect: NoSchedule}]
      clusterDNS: [169.254.96.16]
      systemReserved: {cpu: 200m}
      shutdownGracePeriod: 30s
      reservedSystemCPUs: "0-1"
      podCIDR: 10.0.0.0/24
""",
    )
    result = load_config(path, EdgeCoreConfig)
    assert result.warnings == ()
    kubelet = result.config.modules.edged.tailored_kubelet_config
    assert kubelet.register_with_taints is not None
    assert kubelet.register_with_taints[0].effect == "NoSchedule"
    assert kubelet.cluster_dns == ["169.254.96.16"]
    assert kubelet.shutdown_grace_period == Duration("30s")
    assert kubelet.reserved_system_cpus == "0-1"
    assert kubelet.pod_cidr == "10.0.0.0/24"


def test_irregular_aliases() -> None:
    assert EdgeHub.model_fields["tls_ca_file"].alias == "tlsCaFile"
    assert EdgeHub.model_fields["message_qps"].alias == "messageQPS"
    assert EventBus.model_fields["event_bus_tls"].alias == "eventBusTLS"
    assert TailoredKubeletConfig.model_fields["cgroups_per_qos"].alias == "cgroupsPerQOS"
    assert EdgeControllerLoad.model_fields["create_pod_workers"].alias == "CreatePodWorks"
    assert "unixsocket" in _tree(CloudCoreConfig())["modules"]["cloudHub"]


# --- samples, round trips, generated configs --------------------------------------------------


def test_edge_sample_loads_without_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert load_config(EDGE_SAMPLE, EdgeCoreConfig).warnings == ()
    with caplog.at_level(logging.WARNING, logger="config"):
        config = load_edgecore(EDGE_SAMPLE, bootstrap_token_path=_no_token(tmp_path))
    assert caplog.records == []
    assert config.modules.edged.hostname_override == "edge-node-1"
    assert config.modules.edge_hub.websocket.server == "192.168.1.10:10000"
    assert config.modules.edged.tailored_kubelet_config.node_status_update_frequency.seconds == 10


def test_cloud_sample_loads_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    assert load_config(CLOUD_SAMPLE, CloudCoreConfig).warnings == ()
    with caplog.at_level(logging.WARNING, logger="config"):
        config = load_cloudcore(CLOUD_SAMPLE)
    assert caplog.records == []
    assert config.api_version == "cloudcore.config.kubeedge.io/v1alpha2"
    assert config.modules.cloud_hub.node_limit == 1000
    assert config.modules.cloud_hub.advertise_address == ["192.168.1.10"]


@pytest.mark.parametrize(
    ("source", "model"),
    [(EDGE_SAMPLE, EdgeCoreConfig), (CLOUD_SAMPLE, CloudCoreConfig)],
)
def test_dump_load_round_trip(
    tmp_path: Path, source: Path, model: type[EdgeCoreConfig] | type[CloudCoreConfig]
) -> None:
    original = load_config(source, model).config
    dumped = _write(tmp_path, dump_yaml(original), "dumped.yaml")
    again = load_config(dumped, model)
    assert again.warnings == ()
    assert again.config == original
    assert dump_yaml(again.config) == dump_yaml(original)


@pytest.mark.parametrize("kind", ["edgecore", "cloudcore"])
@pytest.mark.parametrize("minimal", [False, True])
def test_generated_configs_parse_back(tmp_path: Path, kind: str, minimal: bool) -> None:
    model: type[EdgeCoreConfig] | type[CloudCoreConfig] = (
        EdgeCoreConfig if kind == "edgecore" else CloudCoreConfig
    )
    text = default_config_yaml("edgecore" if kind == "edgecore" else "cloudcore", minimal=minimal)
    result = load_config(_write(tmp_path, text, f"{kind}.yaml"), model)
    assert result.warnings == ()
    if not minimal:
        assert result.config == model()


def test_min_configs_hold_the_upstream_subset() -> None:
    edge = yaml.safe_load(default_config_yaml("edgecore", minimal=True))
    assert set(edge) == {"apiVersion", "kind", "database", "modules"}
    assert edge["database"] == {"dataSource": "/var/lib/kubeedge/edgecore.db"}
    assert set(edge["modules"]) == {"deviceTwin", "edged", "edgeHub", "eventBus"}
    assert "eventBusTLS" not in edge["modules"]["eventBus"]
    assert edge["modules"]["eventBus"]["mqttMode"] == 2
    assert "tailoredKubeletConfig" in edge["modules"]["edged"]
    assert "quic" not in edge["modules"]["edgeHub"]
    cloud = yaml.safe_load(default_config_yaml("cloudcore", minimal=True))
    assert cloud["kubeAPIConfig"] == {"kubeConfig": "/root/.kube/config"}
    assert cloud["modules"]["cloudHub"]["nodeLimit"] == 1000
    assert cloud["modules"]["router"] == {"enable": False}
    assert "edgeController" in cloud["modules"]


def test_dump_keeps_duration_text(tmp_path: Path) -> None:
    path = _write(tmp_path, "modules: {edged: {tailoredKubeletConfig: {syncFrequency: 1m}}}\n")
    config = load_config(path, EdgeCoreConfig).config
    assert config.modules.edged.tailored_kubelet_config.sync_frequency == Duration("1m0s")
    assert config.modules.edged.tailored_kubelet_config.sync_frequency.timedelta == timedelta(minutes=1)
    assert "syncFrequency: 1m\n" in dump_yaml(config)


@settings(max_examples=40, deadline=None)
@given(
    heartbeat=st.integers(min_value=-(2**31), max_value=INT32_MAX),
    message_qps=st.integers(min_value=0, max_value=INT32_MAX),
    qps=st.integers(min_value=-(2**31), max_value=INT32_MAX),
)
def test_int_values_round_trip(heartbeat: int, message_qps: int, qps: int) -> None:
    edge = EdgeCoreConfig()
    edge.modules.edge_hub.heartbeat = heartbeat
    edge.modules.edge_hub.message_qps = message_qps
    cloud = CloudCoreConfig()
    cloud.kube_api_config.qps = qps
    with tempfile.TemporaryDirectory() as tmp:
        edge_path = _write(Path(tmp), dump_yaml(edge), "edgecore.yaml")
        cloud_path = _write(Path(tmp), dump_yaml(cloud), "cloudcore.yaml")
        assert load_config(edge_path, EdgeCoreConfig).config == edge
        assert load_config(cloud_path, CloudCoreConfig).config == cloud


# --- merge semantics --------------------------------------------------------------------------


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, ""), EdgeCoreConfig).config == EdgeCoreConfig()


def test_missing_keys_keep_defaults_and_nested_partial_override(tmp_path: Path) -> None:
    path = _write(tmp_path, "modules:\n  edgeHub:\n    websocket:\n      server: 10.0.0.1:10000\n")
    hub = load_config(path, EdgeCoreConfig).config.modules.edge_hub
    assert hub.websocket.server == "10.0.0.1:10000"
    assert hub.websocket.enable is True
    assert hub.websocket.handshake_timeout == 30
    assert hub.heartbeat == 15
    assert hub.quic.server == f"{local_ip()}:10001"


def test_lists_are_replaced(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "modules:\n  edged:\n    tailoredKubeletConfig:\n      enforceNodeAllocatable: [system-reserved]\n",
    )
    kubelet = load_config(path, EdgeCoreConfig).config.modules.edged.tailored_kubelet_config
    assert kubelet.enforce_node_allocatable == ["system-reserved"]
    cloud_path = _write(tmp_path, "modules: {cloudHub: {dnsNames: [a.example, b.example]}}\n", "c.yaml")
    assert load_config(cloud_path, CloudCoreConfig).config.modules.cloud_hub.dns_names == [
        "a.example",
        "b.example",
    ]


def test_maps_are_merged(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
featureGates: {requireAuthorization: true}
modules:
  edged:
    nodeLabels: {zone: a}
    tailoredKubeletConfig:
      evictionHard:
        memory.available: 200Mi
""",
    )
    config = load_config(path, EdgeCoreConfig).config
    eviction = config.modules.edged.tailored_kubelet_config.eviction_hard
    assert eviction["memory.available"] == "200Mi"
    assert eviction["nodefs.available"] == "10%"
    assert len(eviction) == 5
    assert config.modules.edged.node_labels == {"zone": "a"}
    assert config.feature_gates == {"requireAuthorization": True}


def test_null_keeps_default_unless_the_key_may_be_empty(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "modules:\n  edgeHub:\n    heartbeat:\n  metaManager:\n    metaServer: {apiAudiences: null}\n",
    )
    config = load_config(path, EdgeCoreConfig).config
    assert config.modules.edge_hub.heartbeat == 15
    assert config.modules.meta_manager.meta_server.api_audiences is None


@pytest.mark.parametrize(
    "api_version",
    [
        "cloudcore.config.kubeedge.io/v1alpha1",
        "cloudcore.config.kubeedge.io/v1alpha2",
        "something/else",
    ],
)
def test_cloudcore_api_version_is_not_checked(tmp_path: Path, api_version: str) -> None:
    path = _write(tmp_path, f"apiVersion: {api_version}\nkind: Whatever\n", "cloudcore.yaml")
    result = load_config(path, CloudCoreConfig)
    assert result.warnings == ()
    assert result.config.api_version == api_version
    assert f"apiVersion: {api_version}\nkind: Whatever\n" in dump_yaml(result.config)


# --- unknown keys -----------------------------------------------------------------------------


def test_unknown_key_warns_with_path_and_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = "apiVersion: x\nmodules:\n  edgeHub:\n    heartbeat: 20\n    websockt:\n      enable: true\n"
    path = _write(tmp_path, text)
    result = load_config(path, EdgeCoreConfig)
    assert [str(w) for w in result.warnings] == [f"{path}:5: unknown key modules.edgeHub.websockt (ignored)"]
    assert result.warnings[0].path == "modules.edgeHub.websockt"
    assert result.config.modules.edge_hub.heartbeat == 20
    with caplog.at_level(logging.WARNING, logger="config"):
        load_edgecore(path, bootstrap_token_path=_no_token(tmp_path))
    assert [r.getMessage() for r in caplog.records] == [str(result.warnings[0])]


def test_unknown_keys_everywhere(tmp_path: Path) -> None:
    text = """
extra: 1
modules:
  cloudHub:
    authorization:
      modes:
        - node: {enable: true}
          nodee: {}
  edgeController: {buffer: {patchNod: 1}}
"""
    result = load_config(_write(tmp_path, text, "cloudcore.yaml"), CloudCoreConfig)
    found = {(w.path, w.line) for w in result.warnings}
    assert found == {
        ("extra", 2),
        ("modules.cloudHub.authorization.modes[0].nodee", 8),
        ("modules.edgeController.buffer.patchNod", 9),
    }


def test_snake_case_keys_are_unknown_in_files(tmp_path: Path) -> None:
    result = load_config(_write(tmp_path, "modules: {edgeHub: {message_qps: 5}}\n"), EdgeCoreConfig)
    assert [w.path for w in result.warnings] == ["modules.edgeHub.message_qps"]
    assert result.config.modules.edge_hub.message_qps == 30


# --- errors -----------------------------------------------------------------------------------


def _error(tmp_path: Path, text: str, model: type[EdgeCoreConfig] | type[CloudCoreConfig]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text), model)
    return caught.value


def test_wrong_type_names_file_line_and_path(tmp_path: Path) -> None:
    text = "modules:\n  edgeHub:\n    enable: true\n    heartbeat: fast\n"
    error = _error(tmp_path, text, EdgeCoreConfig)
    path = tmp_path / "edgecore.yaml"
    assert str(error) == f"{path}:4: modules.edgeHub.heartbeat: expected an integer, got 'fast'"
    assert isinstance(error, ValueError)
    assert error.issues[0].line == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('modules: {edgeHub: {heartbeat: "15"}}', "modules.edgeHub.heartbeat: expected an integer, got '15'"),
        (
            "modules: {edgeHub: {enable: 1}}",
            "modules.edgeHub.enable: expected a boolean (true or false), got 1",
        ),
        ("modules: {edgeHub: {token: 12}}", "modules.edgeHub.token: expected a string, got 12"),
        ("modules: {edgeHub: {websocket: on}}", "modules.edgeHub.websocket: expected a mapping, got true"),
        (
            "modules: {edged: {tailoredKubeletConfig: {syncFrequency: 10}}}",
            "modules.edged.tailoredKubeletConfig.syncFrequency: expected a duration such as '1m0s', '10s'"
            " or '100ms', got 10",
        ),
        (
            "modules: {edged: {tailoredKubeletConfig: {logging: {options: {json: {infoBufferSize: []}}}}}}",
            "modules.edged.tailoredKubeletConfig.logging.options.json.infoBufferSize: expected a string or an"
            " integer, got a list",
        ),
        (
            "modules: {edgeHub: {heartbeat: 3000000000}}",
            "modules.edgeHub.heartbeat: expected a number <= 2147483647, got 3000000000",
        ),
    ],
)
def test_type_error_messages(tmp_path: Path, text: str, expected: str) -> None:
    assert str(_error(tmp_path, text, EdgeCoreConfig)).endswith(f":1: {expected}")


def test_error_inside_list(tmp_path: Path) -> None:
    text = "modules:\n  cloudHub:\n    advertiseAddress:\n      - 10.0.0.1\n      - 7\n"
    error = _error(tmp_path, text, CloudCoreConfig)
    assert str(error).endswith(":5: modules.cloudHub.advertiseAddress[1]: expected a string, got 7")


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    text = "modules:\n  edgeHub:\n    heartbeat: x\n  eventBus:\n    mqttRetain: maybe\n"
    error = _error(tmp_path, text, EdgeCoreConfig)
    assert [(i.path, i.line) for i in error.issues] == [
        ("modules.edgeHub.heartbeat", 3),
        ("modules.eventBus.mqttRetain", 5),
    ]
    assert len(str(error).splitlines()) == 2


def test_unknown_keys_are_listed_under_errors(tmp_path: Path) -> None:
    text = "modules:\n  edgeHub:\n    websockt: {enable: false}\n    quic: {enable: true}\n"
    error = _error(tmp_path, text, EdgeCoreConfig)
    lines = str(error).splitlines()
    # websocket is not in the file, so the line is that of its parent edgeHub
    assert lines[0].endswith(
        ":2: modules.edgeHub.websocket.enable: exactly one of websocket.enable and quic.enable"
        " must be true when edgeHub is enabled, both are true"
    )
    assert lines[1].endswith(":3: unknown key modules.edgeHub.websockt (ignored)")
    assert [w.path for w in error.warnings] == ["modules.edgeHub.websockt"]


def test_map_keys_with_dots_are_quoted(tmp_path: Path) -> None:
    text = "modules:\n  edged:\n    tailoredKubeletConfig:\n      evictionHard: {memory.available: 5}\n"
    assert str(_error(tmp_path, text, EdgeCoreConfig)).endswith(
        ':4: modules.edged.tailoredKubeletConfig.evictionHard["memory.available"]: expected a string, got 5'
    )


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    error = _error(tmp_path, "modules:\n  edgeHub:\n    heartbeat: [15\n  eventBus: {}\n", EdgeCoreConfig)
    assert str(error) == (
        f"{tmp_path / 'edgecore.yaml'}:4: invalid YAML: did not find expected ',' or ']'"
        " (while parsing a flow sequence started at line 3)"
    )


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    error = _error(tmp_path, "- a\n- b\n", EdgeCoreConfig)
    assert str(error).endswith(":1: expected a mapping at the top level, got a list")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"^config file {missing} not exist$"):
        load_edgecore(missing, bootstrap_token_path=_no_token(tmp_path))
    with pytest.raises(ConfigError, match="not exist"):
        load_cloudcore(missing)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "modules:\n  edgeHub:\n    websocket: {enable: true}\n    quic: {enable: true}\n",
            ":3: modules.edgeHub.websocket.enable: exactly one of websocket.enable and quic.enable must be"
            " true when edgeHub is enabled, both are true",
        ),
        (
            "modules:\n  edgeHub:\n    websocket: {enable: false}\n",
            ":3: modules.edgeHub.websocket.enable: exactly one of",
        ),
        (
            "modules:\n  edgeHub:\n    messageQPS: -1\n",
            ":3: modules.edgeHub.messageQPS: must not be negative, got -1",
        ),
        (
            "modules:\n  eventBus:\n    mqttMode: 3\n",
            ":3: modules.eventBus.mqttMode: expected 0 (internal), 1 (both) or 2 (external), got 3",
        ),
        (
            "modules:\n  edged:\n    tailoredKubeletConfig:\n      cgroupDriver: cgroupfs2\n",
            ":4: modules.edged.tailoredKubeletConfig.cgroupDriver: expected 'cgroupfs' or 'systemd', got"
            " 'cgroupfs2'",
        ),
        (
            "modules:\n  edged:\n    hostnameOverride: Edge_Node\n",
            ":3: modules.edged.hostnameOverride: expected a lowercase RFC 1123 subdomain",
        ),
    ],
)
def test_edgecore_validation(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in str(_error(tmp_path, text, EdgeCoreConfig))


def test_edgecore_checks_skip_disabled_modules(tmp_path: Path) -> None:
    text = """
modules:
  edgeHub: {enable: false, websocket: {enable: true}, quic: {enable: true}}
  eventBus: {enable: false, mqttMode: 3}
  edged: {enable: false, hostnameOverride: Bad_Name}
"""
    result = load_config(_write(tmp_path, text), EdgeCoreConfig)
    assert result.config.modules.event_bus.mqtt_mode == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "modules:\n  iptablesManager:\n    mode: hybrid\n",
            ":3: modules.iptablesManager.mode: expected one of 'internal' or 'external', got 'hybrid'",
        ),
        (
            "modules:\n  cloudHub:\n    unixsocket: {address: /var/lib/kubeedge/kubeedge.sock}\n",
            ":3: modules.cloudHub.unixsocket.address: expected an address starting with unix://",
        ),
        (
            "modules:\n  cloudHub:\n    tokenRefreshDuration: 0\n",
            ":3: modules.cloudHub.tokenRefreshDuration: expected a positive number of hours, got 0",
        ),
        (
            "modules:\n  cloudHub:\n    websocket:\n      address: cloud.example\n",
            ":4: modules.cloudHub.websocket.address: expected a valid IP address, got 'cloud.example'",
        ),
        (
            "modules:\n  edgeController:\n    nodeUpdateFrequency: 0\n",
            ":3: modules.edgeController.nodeUpdateFrequency: expected a positive number of seconds, got 0",
        ),
        (
            "commonConfig:\n  monitorServer:\n    bindAddress: 127.0.0.1\n",
            ":3: commonConfig.monitorServer.bindAddress: expected IP:port, got '127.0.0.1'",
        ),
        (
            "kubeAPIConfig:\n  kubeConfig: kube/config\n",
            ":2: kubeAPIConfig.kubeConfig: expected an absolute path, got 'kube/config'",
        ),
    ],
)
def test_cloudcore_validation(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in str(_error(tmp_path, text, CloudCoreConfig))


def test_assignment_is_validated() -> None:
    config = EdgeCoreConfig()
    with pytest.raises(ValueError, match="valid integer"):
        config.modules.edge_hub.heartbeat = "fast"  # type: ignore[assignment]
    config.modules.edged.tailored_kubelet_config.sync_frequency = "30s"  # type: ignore[assignment]
    assert config.modules.edged.tailored_kubelet_config.sync_frequency.seconds == 30


# --- cloudcore adjust() ------------------------------------------------------------------------


def test_adjust_scales_with_node_limit() -> None:
    config = CloudCoreConfig()
    config.modules.cloud_hub.node_limit = 1000
    assert config.adjust() is True
    assert (config.kube_api_config.qps, config.kube_api_config.burst) == (5000, 10000)
    buffer = config.modules.edge_controller.buffer
    load = config.modules.edge_controller.load
    assert (buffer.patch_node, buffer.query_node, buffer.create_lease) == (1524, 2024, 2024)
    assert (load.patch_node_workers, load.query_node_workers, load.create_lease_workers) == (120, 1000, 1000)
    assert config.adjust() is False


def test_adjust_only_raises_buffers_and_workers(tmp_path: Path) -> None:
    text = "modules:\n  edgeController:\n    buffer: {patchNode: 9999}\n    load: {queryNodeWorkers: 1}\n"
    config = load_config(_write(tmp_path, text, "cloudcore.yaml"), CloudCoreConfig).config
    assert config.adjust() is True
    assert config.modules.edge_controller.buffer.patch_node == 9999
    assert config.modules.edge_controller.load.query_node_workers == 500
    assert CloudCoreConfig().adjust() is False


def test_adjust_on_the_sample() -> None:
    config = load_cloudcore(CLOUD_SAMPLE)
    assert config.modules.edge_controller.buffer.query_node == 1524  # default built from nodeLimit 500
    assert config.adjust() is True  # qps/burst already match nodeLimit 1000, the buffers do not
    assert (config.kube_api_config.qps, config.kube_api_config.burst) == (5000, 10000)
    assert config.modules.edge_controller.buffer.query_node == 2024


# --- bootstrap token --------------------------------------------------------------------------


def test_bootstrap_token_file_overrides_token(tmp_path: Path) -> None:
    config_path = _write(tmp_path, 'modules: {edgeHub: {token: "from-file"}}\n')
    token_path = tmp_path / "bootstrap-edgecore.conf"
    assert load_edgecore(config_path, bootstrap_token_path=token_path).modules.edge_hub.token == "from-file"
    token_path.write_text("  abc.def.ghi.jkl \n")
    assert (
        load_edgecore(config_path, bootstrap_token_path=token_path).modules.edge_hub.token
        == "abc.def.ghi.jkl"
    )


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("0", 0),
        ("0s", 0),
        ("1m0s", 60 * 10**9),
        ("100ms", 100 * 10**6),
        ("4h", 4 * 3600 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("1.5s", 1_500_000_000),
        ("-2m", -120 * 10**9),
        ("3us", 3000),
        ("3\u00b5s", 3000),
        ("7ns", 7),
    ],
)
def test_go_durations(text: str, nanoseconds: int) -> None:
    assert parse_go_duration(text) == nanoseconds
    assert str(Duration(text)) == text


@pytest.mark.parametrize("text", ["", "10", "1x", "m", ".s", "1h-1m", "-", "9999999999h"])
def test_invalid_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        Duration(text)
