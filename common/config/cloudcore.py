"""The cloudcore.yaml model (``kind: CloudCore``; apiVersion v1alpha1 and v1alpha2 both accepted).

This module owns every section of the cloud daemon's config file with upstream v1.20 keys and
defaults (including the buffers and worker counts derived from the default node limit), the checks
upstream runs after parsing, ``CloudCoreConfig.adjust()`` (the start-time corrections that scale
with ``cloudHub.nodeLimit``) and the key list of the minimal sample config. Reading files lives in
``loader.py``.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import Field, model_validator

from common.config.base import (
    ConfigModel,
    Int32,
    KeySpec,
    UInt32,
    first_host_ip,
    host_port_problem,
    ip_problem,
    port_problem,
    raise_problems,
)

CLOUDCORE_API_VERSION = "cloudcore.config.kubeedge.io/v1alpha1"
CLOUDCORE_KIND = "CloudCore"

DEFAULT_NODE_LIMIT = 500
MIN_CONFIG_NODE_LIMIT = 1000
MIN_CONFIG_KUBE_CONFIG = "/root/.kube/config"
QPS_PER_NODE = 5
BURST_PER_NODE = 10
BUFFER = 1024
"""Default size of most edgeController and deviceController buffers."""
WORKERS = 100
"""Base worker count of the busiest edgeController queues."""

ROOT_CA_FILE = "/etc/kubeedge/ca/rootCA.crt"
ROOT_CA_KEY_FILE = "/etc/kubeedge/ca/rootCA.key"
SERVER_CERT_FILE = "/etc/kubeedge/certs/server.crt"
SERVER_KEY_FILE = "/etc/kubeedge/certs/server.key"


def patch_node_buffer(node_limit: int) -> int:
    return BUFFER + node_limit // 2


def query_node_buffer(node_limit: int) -> int:
    return BUFFER + node_limit


def create_lease_buffer(node_limit: int) -> int:
    return BUFFER + node_limit


def patch_node_workers(node_limit: int) -> int:
    return WORKERS + node_limit // 50


def query_node_workers(node_limit: int) -> int:
    return node_limit


def create_lease_workers(node_limit: int) -> int:
    return node_limit


class MonitorServer(ConfigModel):
    """`/metrics`, `/healthz`, `/readyz` (docs/metrics.md). `enable` is ours (upstream always serves);
    `enableProfiling` is accepted and ignored: there is no pprof in Python."""

    enable: bool = True
    bind_address: str = "127.0.0.1:9091"
    enable_profiling: bool = False


class CommonConfig(ConfigModel):
    tunnel_port: int = 10350
    monitor_server: MonitorServer = Field(default_factory=MonitorServer)

    @model_validator(mode="after")
    def _check(self) -> CommonConfig:
        problem = host_port_problem(self.monitor_server.bind_address)
        if problem:
            raise_problems([("monitorServer.bindAddress", problem)])
        return self


class KubeAPIConfig(ConfigModel):
    """How cloudcore reaches the Kubernetes API. ``kubeConfig`` must be absolute when set;
    whether the file exists is for the daemon to find out at start."""

    master: str = ""
    kube_config: str = ""
    content_type: str = "application/vnd.kubernetes.protobuf"
    qps: Int32 = QPS_PER_NODE * DEFAULT_NODE_LIMIT
    burst: Int32 = BURST_PER_NODE * DEFAULT_NODE_LIMIT

    @model_validator(mode="after")
    def _check(self) -> KubeAPIConfig:
        if self.kube_config and not posixpath.isabs(self.kube_config):
            raise_problems([("kubeConfig", f"expected an absolute path, got {self.kube_config!r}")])
        return self


class CloudHubUnixSocket(ConfigModel):
    enable: bool = True
    address: str = "unix:///var/lib/kubeedge/kubeedge.sock"


class CloudHubWebSocket(ConfigModel):
    enable: bool = True
    address: str = "0.0.0.0"
    port: UInt32 = 10000


class CloudHubQUIC(ConfigModel):
    enable: bool = False
    address: str = "0.0.0.0"
    port: UInt32 = 10001
    max_incoming_streams: Int32 = 10000


class CloudHubHTTPS(ConfigModel):
    enable: bool = True
    address: str = "0.0.0.0"
    port: UInt32 = 10002


class CloudHubNodeLease(ConfigModel):
    """Ours (no upstream key): several cloudcores sharing one control plane (docs/ha.md). Each edge node
    is served by the instance holding its Lease `cloudcore-node-<node>` in `namespace`. Off by default:
    one cloudcore behaves exactly as before. `identity` empty means hostname_pid_random."""

    enable: bool = False
    namespace: str = "kubeedge"
    identity: str = ""
    lease_duration_seconds: Int32 = 40
    renew_interval_seconds: Int32 = 12


class NodeAuthorization(ConfigModel):
    enable: bool = False


class AuthorizationMode(ConfigModel):
    node: NodeAuthorization | None = None


def _default_authorization_modes() -> list[AuthorizationMode]:
    return [AuthorizationMode(node=NodeAuthorization(enable=True))]


class CloudHubAuthorization(ConfigModel):
    enable: bool = False
    debug: bool = True
    modes: list[AuthorizationMode] = Field(default_factory=_default_authorization_modes)


class CloudHub(ConfigModel):
    enable: bool = True
    advertise_address: list[str] = Field(default_factory=lambda: [first_host_ip()])
    dns_names: list[str] = Field(default_factory=lambda: [""])
    node_limit: Int32 = DEFAULT_NODE_LIMIT
    keepalive_interval: Int32 = 30
    write_timeout: Int32 = 30
    tls_ca_file: str = Field(default=ROOT_CA_FILE, alias="tlsCAFile")
    tls_ca_key_file: str = Field(default=ROOT_CA_KEY_FILE, alias="tlsCAKeyFile")
    tls_cert_file: str = SERVER_CERT_FILE
    tls_private_key_file: str = SERVER_KEY_FILE
    edge_cert_signing_duration: int = 365
    """Days."""
    token_refresh_duration: int = 12
    """Hours; must be positive."""
    unix_socket: CloudHubUnixSocket = Field(default_factory=CloudHubUnixSocket, alias="unixsocket")
    websocket: CloudHubWebSocket = Field(default_factory=CloudHubWebSocket)
    quic: CloudHubQUIC = Field(default_factory=CloudHubQUIC)
    https: CloudHubHTTPS = Field(default_factory=CloudHubHTTPS)
    authorization: CloudHubAuthorization = Field(default_factory=CloudHubAuthorization)
    node_lease: CloudHubNodeLease = Field(default_factory=CloudHubNodeLease)

    @model_validator(mode="after")
    def _check(self) -> CloudHub:
        if not self.enable:
            return self
        checks = (
            ("https.port", port_problem(self.https.port)),
            ("websocket.address", ip_problem(self.websocket.address)),
            ("websocket.port", port_problem(self.websocket.port)),
            ("quic.address", ip_problem(self.quic.address)),
            ("quic.port", port_problem(self.quic.port)),
        )
        problems = [(path, problem) for path, problem in checks if problem]
        if not self.unix_socket.address.lower().startswith("unix://"):
            problems.append(
                (
                    "unixsocket.address",
                    f"expected an address starting with unix://, got {self.unix_socket.address!r}",
                )
            )
        lease = self.node_lease
        if lease.enable and not 0 < lease.renew_interval_seconds < lease.lease_duration_seconds:
            problems.append(("nodeLease.renewIntervalSeconds",
                             f"expected 0 < renewIntervalSeconds < leaseDurationSeconds, got "
                             f"{lease.renew_interval_seconds} and {lease.lease_duration_seconds}"))
        if self.token_refresh_duration <= 0:
            problems.append(
                (
                    "tokenRefreshDuration",
                    f"expected a positive number of hours, got {self.token_refresh_duration}",
                )
            )
        raise_problems(problems)
        return self


class EdgeControllerBuffer(ConfigModel):
    process_event: Int32 = BUFFER
    update_pod_status: Int32 = BUFFER
    update_node_status: Int32 = BUFFER
    query_config_map: Int32 = BUFFER
    query_secret: Int32 = BUFFER
    pod_event: Int32 = 1
    config_map_event: Int32 = 1
    secret_event: Int32 = 1
    rules_event: Int32 = 1
    rule_endpoints_event: Int32 = 1
    query_persistent_volume: Int32 = BUFFER
    query_persistent_volume_claim: Int32 = BUFFER
    query_volume_attachment: Int32 = BUFFER
    create_node: Int32 = BUFFER
    patch_node: Int32 = patch_node_buffer(DEFAULT_NODE_LIMIT)
    query_node: Int32 = query_node_buffer(DEFAULT_NODE_LIMIT)
    update_node: Int32 = BUFFER
    patch_pod: Int32 = BUFFER
    delete_pod: Int32 = BUFFER
    create_lease: Int32 = create_lease_buffer(DEFAULT_NODE_LIMIT)
    query_lease: Int32 = BUFFER
    service_account_token: Int32 = BUFFER
    create_pod: Int32 = BUFFER
    certificate_signing_request: Int32 = BUFFER


class EdgeControllerLoad(ConfigModel):
    process_event_workers: Int32 = 4
    update_pod_status_workers: Int32 = 1
    update_node_status_workers: Int32 = 1
    query_config_map_workers: Int32 = WORKERS
    query_secret_workers: Int32 = WORKERS
    query_persistent_volume_workers: Int32 = 4
    query_persistent_volume_claim_workers: Int32 = 4
    query_volume_attachment_workers: Int32 = 4
    create_node_workers: Int32 = WORKERS
    patch_node_workers: Int32 = patch_node_workers(DEFAULT_NODE_LIMIT)
    query_node_workers: Int32 = query_node_workers(DEFAULT_NODE_LIMIT)
    update_node_workers: Int32 = 4
    patch_pod_workers: Int32 = WORKERS
    delete_pod_workers: Int32 = WORKERS
    create_lease_workers: Int32 = create_lease_workers(DEFAULT_NODE_LIMIT)
    query_lease_workers: Int32 = WORKERS
    update_rule_status_workers: Int32 = Field(default=4, alias="UpdateRuleStatusWorkers")
    service_account_token_workers: Int32 = Field(default=WORKERS, alias="ServiceAccountTokenWorkers")
    create_pod_workers: Int32 = Field(default=4, alias="CreatePodWorks")
    certificate_signing_request_workers: Int32 = 4


class EdgeController(ConfigModel):
    enable: bool = True
    node_update_frequency: Int32 = 10
    """Seconds; must be positive."""
    buffer: EdgeControllerBuffer = Field(default_factory=EdgeControllerBuffer)
    load: EdgeControllerLoad = Field(default_factory=EdgeControllerLoad)

    @model_validator(mode="after")
    def _check(self) -> EdgeController:
        if self.enable and self.node_update_frequency <= 0:
            raise_problems(
                [
                    (
                        "nodeUpdateFrequency",
                        f"expected a positive number of seconds, got {self.node_update_frequency}",
                    )
                ]
            )
        return self


class DeviceControllerBuffer(ConfigModel):
    update_device_twins: Int32 = BUFFER
    update_device_status: Int32 = BUFFER
    device_event: Int32 = 1
    device_model_event: Int32 = 1


class DeviceControllerLoad(ConfigModel):
    update_device_status_workers: Int32 = 1


class DeviceController(ConfigModel):
    enable: bool = True
    buffer: DeviceControllerBuffer = Field(default_factory=DeviceControllerBuffer)
    load: DeviceControllerLoad = Field(default_factory=DeviceControllerLoad)


class TaskManagerBuffer(ConfigModel):
    task_status: Int32 = BUFFER
    task_event: Int32 = 1


class TaskManagerLoad(ConfigModel):
    task_workers: Int32 = 1


class TaskManager(ConfigModel):
    enable: bool = False
    buffer: TaskManagerBuffer = Field(default_factory=TaskManagerBuffer)
    load: TaskManagerLoad = Field(default_factory=TaskManagerLoad)


class SyncController(ConfigModel):
    enable: bool = True


class DynamicController(ConfigModel):
    enable: bool = False


class ControllerManager(ConfigModel):
    """``modules.controllerManager``: NodeGroup and EdgeApplication controllers. Not an upstream cloudcore
    key (upstream runs them in a separate controller-manager binary); kubeedge-py runs them in cloudcore."""

    enable: bool = True


class CloudStream(ConfigModel):
    """``modules.cloudStream``. Upstream also requires the three stream files to exist when the
    module is enabled; that is checked by the module at start, not here."""

    enable: bool = False
    tls_tunnel_ca_file: str = Field(default=ROOT_CA_FILE, alias="tlsTunnelCAFile")
    tls_tunnel_cert_file: str = SERVER_CERT_FILE
    tls_tunnel_private_key_file: str = SERVER_KEY_FILE
    tunnel_port: UInt32 = 10004
    tls_stream_ca_file: str = Field(default="/etc/kubeedge/ca/streamCA.crt", alias="tlsStreamCAFile")
    tls_stream_cert_file: str = "/etc/kubeedge/certs/stream.crt"
    tls_stream_private_key_file: str = "/etc/kubeedge/certs/stream.key"
    stream_port: UInt32 = 10003


class Router(ConfigModel):
    enable: bool = False
    address: str = "0.0.0.0"
    port: UInt32 = 9443
    rest_timeout: UInt32 = 60


class IptablesManager(ConfigModel):
    enable: bool = True
    mode: Literal["internal", "external"] = "internal"


class CloudModules(ConfigModel):
    cloud_hub: CloudHub = Field(default_factory=CloudHub)
    edge_controller: EdgeController = Field(default_factory=EdgeController)
    device_controller: DeviceController = Field(default_factory=DeviceController)
    task_manager: TaskManager = Field(default_factory=TaskManager)
    sync_controller: SyncController = Field(default_factory=SyncController)
    dynamic_controller: DynamicController = Field(default_factory=DynamicController)
    controller_manager: ControllerManager = Field(default_factory=ControllerManager)
    cloud_stream: CloudStream = Field(default_factory=CloudStream)
    router: Router = Field(default_factory=Router)
    iptables_manager: IptablesManager = Field(default_factory=IptablesManager)


class CloudCoreConfig(ConfigModel):
    """The whole cloudcore.yaml. ``apiVersion`` and ``kind`` are kept but never checked."""

    api_version: str = CLOUDCORE_API_VERSION
    kind: str = CLOUDCORE_KIND
    common_config: CommonConfig = Field(default_factory=CommonConfig)
    kube_api_config: KubeAPIConfig = Field(default_factory=KubeAPIConfig, alias="kubeAPIConfig")
    modules: CloudModules = Field(default_factory=CloudModules)
    feature_gates: dict[str, bool] = Field(default_factory=dict)

    def adjust(self) -> bool:
        """Apply upstream's start-time corrections for ``cloudHub.nodeLimit`` (N).

        ``kubeAPIConfig.qps``/``burst`` become exactly 5N/10N; the patchNode, queryNode and
        createLease buffers and workers are raised to their N-based minimum when set lower.
        Returns whether anything changed (upstream then rewrites its ConfigMap).
        """
        limit = self.modules.cloud_hub.node_limit
        api = self.kube_api_config
        changed = False
        if api.qps != QPS_PER_NODE * limit:
            api.qps = QPS_PER_NODE * limit
            changed = True
        if api.burst != BURST_PER_NODE * limit:
            api.burst = BURST_PER_NODE * limit
            changed = True
        buffer = self.modules.edge_controller.buffer
        load = self.modules.edge_controller.load
        minimums = (
            (buffer, "patch_node", patch_node_buffer(limit)),
            (buffer, "query_node", query_node_buffer(limit)),
            (buffer, "create_lease", create_lease_buffer(limit)),
            (load, "patch_node_workers", patch_node_workers(limit)),
            (load, "query_node_workers", query_node_workers(limit)),
            (load, "create_lease_workers", create_lease_workers(limit)),
        )
        for section, name, minimum in minimums:
            if getattr(section, name) < minimum:
                setattr(section, name, minimum)
                changed = True
        return changed


def _enabled_only() -> KeySpec:
    return {"enable": True}


CLOUDCORE_MIN_KEYS: KeySpec = {
    "apiVersion": True,
    "kind": True,
    "kubeAPIConfig": {"kubeConfig": True},
    "modules": {
        "cloudHub": dict.fromkeys(
            (
                "advertiseAddress",
                "nodeLimit",
                "tlsCAFile",
                "tlsCAKeyFile",
                "tlsCertFile",
                "tlsPrivateKeyFile",
                "unixsocket",
                "websocket",
                "quic",
                "https",
            ),
            True,
        ),
        "edgeController": _enabled_only(),
        "deviceController": _enabled_only(),
        "syncController": _enabled_only(),
        "cloudStream": _enabled_only(),
        "router": _enabled_only(),
    },
}
"""The keys of the minimal sample config (``True`` = the whole subtree)."""
