"""The edgecore.yaml model (``apiVersion: edgecore.config.kubeedge.io/v1alpha2``, ``kind: EdgeCore``).

This module owns every section of the edge daemon's config file with upstream v1.20 keys and
defaults, the checks upstream runs after parsing (edged node name and cgroup driver, edgeHub
protocol choice and rate limits, eventBus MQTT mode), and the key list of ``--minconfig``.
Reading files lives in ``loader.py``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PrivateAttr, model_validator

from common.config.base import (
    ConfigModel,
    Duration,
    Int32,
    KeySpec,
    UInt8,
    UInt32,
    default_hostname,
    dns_subdomain_problem,
    host_port_problem,
    local_ip,
    raise_problems,
)

EDGECORE_API_VERSION = "edgecore.config.kubeedge.io/v1alpha2"
EDGECORE_KIND = "EdgeCore"

ROOT_CA_FILE = "/etc/kubeedge/ca/rootCA.crt"
SERVER_CERT_FILE = "/etc/kubeedge/certs/server.crt"
SERVER_KEY_FILE = "/etc/kubeedge/certs/server.key"
CONTAINERD_ENDPOINT = "unix:///run/containerd/containerd.sock"
CGROUP_DRIVERS = ("cgroupfs", "systemd")
MQTT_MODE_INTERNAL, MQTT_MODE_BOTH, MQTT_MODE_EXTERNAL = 0, 1, 2


class Database(ConfigModel):
    driver_name: str = "sqlite3"
    alias_name: str = "default"
    data_source: str = "/var/lib/kubeedge/edgecore.db"


class EdgeHubWebSocket(ConfigModel):
    enable: bool = True
    handshake_timeout: Int32 = 30
    read_deadline: Int32 = 15
    server: str = Field(default_factory=lambda: f"{local_ip()}:10000")
    write_deadline: Int32 = 15


class EdgeHubQUIC(ConfigModel):
    enable: bool = False
    handshake_timeout: Int32 = 30
    read_deadline: Int32 = 15
    server: str = Field(default_factory=lambda: f"{local_ip()}:10001")
    write_deadline: Int32 = 15


class EdgeHub(ConfigModel):
    enable: bool = True
    heartbeat: Int32 = 15
    message_qps: Int32 = Field(default=30, alias="messageQPS")
    message_burst: Int32 = 60
    project_id: str = Field(default="e632aba927ea4ac2b575ec1603d56f10", alias="projectID")
    tls_ca_file: str = ROOT_CA_FILE
    tls_cert_file: str = SERVER_CERT_FILE
    tls_private_key_file: str = SERVER_KEY_FILE
    token: str = ""
    http_server: str = Field(default_factory=lambda: f"https://{local_ip()}:10002")
    rotate_certificates: bool = True
    websocket: EdgeHubWebSocket = Field(default_factory=EdgeHubWebSocket)
    quic: EdgeHubQUIC = Field(default_factory=EdgeHubQUIC)

    @model_validator(mode="after")
    def _check(self) -> EdgeHub:
        if not self.enable:
            return self
        problems: list[tuple[str, str]] = []
        if self.websocket.enable == self.quic.enable:
            state = "true" if self.websocket.enable else "false"
            problems.append(
                (
                    "websocket.enable",
                    "exactly one of websocket.enable and quic.enable must be true when edgeHub is "
                    f"enabled, both are {state}",
                )
            )
        for key, value in (("messageQPS", self.message_qps), ("messageBurst", self.message_burst)):
            if value < 0:
                problems.append((key, f"must not be negative, got {value}"))
        raise_problems(problems)
        return self


class Taint(ConfigModel):
    key: str = ""
    value: str | None = None
    effect: str = ""
    time_added: str | None = None


class LoggingFormatOptions(ConfigModel):
    split_stream: bool | None = None
    info_buffer_size: str | int = "0"


class LoggingOptions(ConfigModel):
    json_: LoggingFormatOptions = Field(default_factory=LoggingFormatOptions, alias="json")
    text: LoggingFormatOptions = Field(default_factory=LoggingFormatOptions)


class VModuleItem(ConfigModel):
    file_pattern: str = ""
    verbosity: UInt32 = 0


class LoggingConfiguration(ConfigModel):
    """Kubernetes component-base ``LoggingConfiguration`` with its recommended defaults."""

    format: str = "text"
    flush_frequency: Duration = Duration("5s")
    verbosity: UInt32 = 0
    vmodule: list[VModuleItem] | None = None
    options: LoggingOptions = Field(default_factory=LoggingOptions)


class MemorySwap(ConfigModel):
    swap_behavior: str | None = None


class ShutdownGracePeriodByPodPriority(ConfigModel):
    priority: Int32 = 0
    shutdown_grace_period_seconds: int = 0


class MemoryReservation(ConfigModel):
    numa_node: Int32 = 0
    limits: dict[str, str] = Field(default_factory=dict)


def _default_eviction_hard() -> dict[str, str]:
    return {
        "memory.available": "100Mi",
        "nodefs.available": "10%",
        "nodefs.inodesFree": "5%",
        "imagefs.available": "15%",
        "imagefs.inodesFree": "5%",
    }


class TailoredKubeletConfig(ConfigModel):
    """``modules.edged.tailoredKubeletConfig``: the kubelet settings edged honours.

    Keys without an upstream default are optional and left out of dumps when unset.
    """

    container_runtime_endpoint: str = CONTAINERD_ENDPOINT
    image_service_endpoint: str = CONTAINERD_ENDPOINT
    cgroup_driver: str = "cgroupfs"
    cgroups_per_qos: bool = Field(default=True, alias="cgroupsPerQOS")
    register_node: bool = True
    register_with_taints: list[Taint] | None = None
    static_pod_path: str = "/etc/kubeedge/manifests"
    pod_logs_dir: str = "/var/log/pods"
    address: str = "127.0.0.1"
    read_only_port: Int32 = 10350
    cluster_domain: str = "cluster.local"
    cluster_dns: list[str] | None = Field(default=None, alias="clusterDNS")
    sync_frequency: Duration = Duration("1m0s")
    file_check_frequency: Duration = Duration("20s")
    node_status_update_frequency: Duration = Duration("10s")
    node_status_report_frequency: Duration = Duration("5m0s")
    node_lease_duration_seconds: Int32 = 40
    max_pods: Int32 = 110
    registry_pull_qps: Int32 = Field(default=5, alias="registryPullQPS")
    registry_burst: Int32 = 10
    event_record_qps: Int32 = Field(default=50, alias="eventRecordQPS")
    event_burst: Int32 = 100
    image_gc_high_threshold_percent: Int32 = Field(default=85, alias="imageGCHighThresholdPercent")
    image_gc_low_threshold_percent: Int32 = Field(default=80, alias="imageGCLowThresholdPercent")
    image_minimum_gc_age: Duration = Field(default=Duration("2m0s"), alias="imageMinimumGCAge")
    image_maximum_gc_age: Duration | None = Field(default=None, alias="imageMaximumGCAge")
    eviction_hard: dict[str, str] = Field(default_factory=_default_eviction_hard)
    eviction_soft: dict[str, str] | None = None
    eviction_soft_grace_period: dict[str, str] | None = None
    eviction_pressure_transition_period: Duration = Duration("5m0s")
    eviction_max_pod_grace_period: Int32 | None = None
    eviction_minimum_reclaim: dict[str, str] | None = None
    oom_score_adj: Int32 = -999
    pod_pids_limit: int = -1
    resolv_conf: str = "/etc/resolv.conf"
    cpu_cfs_quota: bool = Field(default=True, alias="cpuCFSQuota")
    cpu_cfs_quota_period: Duration = Field(default=Duration("100ms"), alias="cpuCFSQuotaPeriod")
    cpu_manager_policy: str = "none"
    cpu_manager_policy_options: dict[str, str] | None = None
    cpu_manager_reconcile_period: Duration = Duration("10s")
    memory_manager_policy: str = "None"
    topology_manager_policy: str = "none"
    topology_manager_scope: str = "container"
    topology_manager_policy_options: dict[str, str] | None = None
    runtime_request_timeout: Duration = Duration("2m0s")
    hairpin_mode: str = "promiscuous-bridge"
    node_status_max_images: Int32 = 0
    max_open_files: int = 1000000
    content_type: str = "application/json"
    serialize_image_pulls: bool = True
    max_parallel_image_pulls: Int32 | None = None
    enable_controller_attach_detach: bool = True
    make_iptables_util_chains: bool = Field(default=True, alias="makeIPTablesUtilChains")
    iptables_masquerade_bit: Int32 = 14
    iptables_drop_bit: Int32 = 15
    fail_swap_on: bool = False
    container_log_max_size: str = "10Mi"
    container_log_max_files: Int32 = 5
    container_log_max_workers: Int32 = 1
    container_log_monitor_interval: Duration = Duration("10s")
    config_map_and_secret_change_detection_strategy: str = "Get"
    enforce_node_allocatable: list[str] = Field(default_factory=lambda: ["pods"])
    volume_plugin_dir: str = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/"
    volume_stats_agg_period: Duration = Duration("1m0s")
    enable_debugging_handlers: bool = True
    enable_system_log_handler: bool = True
    enable_profiling_handler: bool = True
    enable_debug_flags_handler: bool = True
    seccomp_default: bool = False
    memory_throttling_factor: float = 0.9
    local_storage_capacity_isolation: bool = True
    streaming_connection_idle_timeout: Duration = Duration("4h0m0s")
    logging: LoggingConfiguration = Field(default_factory=LoggingConfiguration)
    kubelet_cgroups: str | None = None
    system_cgroups: str | None = None
    cgroup_root: str | None = None
    qos_reserved: dict[str, str] | None = None
    pod_cidr: str | None = Field(default=None, alias="podCIDR")
    pods_per_core: Int32 | None = None
    protect_kernel_defaults: bool | None = None
    feature_gates: dict[str, bool] | None = None
    memory_swap: MemorySwap | None = None
    system_reserved: dict[str, str] | None = None
    kube_reserved: dict[str, str] | None = None
    reserved_system_cpus: str | None = Field(default=None, alias="reservedSystemCPUs")
    show_hidden_metrics_for_version: str | None = None
    system_reserved_cgroup: str | None = None
    kube_reserved_cgroup: str | None = None
    allowed_unsafe_sysctls: list[str] | None = None
    kernel_memcg_notification: bool | None = None
    enable_system_log_query: bool | None = None
    shutdown_grace_period: Duration | None = None
    shutdown_grace_period_critical_pods: Duration | None = None
    shutdown_grace_period_by_pod_priority: list[ShutdownGracePeriodByPodPriority] | None = None
    reserved_memory: list[MemoryReservation] | None = None


class Edged(ConfigModel):
    """``modules.edged``, with upstream's inlined ``TailoredKubeletFlag`` keys."""

    enable: bool = True
    report_event: bool = False
    hostname_override: str = Field(default_factory=default_hostname)
    node_ip: str = Field(default="", alias="nodeIP")
    custom_interface_name: str = ""
    register_node_namespace: str = "default"
    pod_sandbox_image: str = "kubeedge/pause:3.6"
    runtime_cgroups: str = ""
    root_directory: str = "/var/lib/kubelet"
    node_labels: dict[str, str] = Field(default_factory=dict)
    register_schedulable: bool = True
    max_container_count: Int32 = -1
    max_per_pod_container_count: Int32 = 1
    minimum_gc_age: Duration = Field(default=Duration("0s"), alias="minimumGCAge")
    windows_service: bool = False
    windows_priority_class: str = ""
    experimental_mounter_path: str = ""
    experimental_node_allocatable_ignore_eviction_threshold: bool = False
    keep_terminated_pod_volumes: bool = False
    seccomp_default: bool = False
    tailored_kubelet_config: TailoredKubeletConfig = Field(default_factory=TailoredKubeletConfig)

    @model_validator(mode="after")
    def _check(self) -> Edged:
        if not self.enable:
            return self
        problems: list[tuple[str, str]] = []
        name_problem = dns_subdomain_problem(self.hostname_override)
        if name_problem:
            problems.append(("hostnameOverride", name_problem))
        driver = self.tailored_kubelet_config.cgroup_driver
        if driver not in CGROUP_DRIVERS:
            problems.append(
                ("tailoredKubeletConfig.cgroupDriver", f"expected 'cgroupfs' or 'systemd', got {driver!r}")
            )
        raise_problems(problems)
        return self


class EventBusTLS(ConfigModel):
    enable: bool = False
    tls_mqtt_ca_file: str = Field(default=ROOT_CA_FILE, alias="tlsMqttCAFile")
    tls_mqtt_cert_file: str = SERVER_CERT_FILE
    tls_mqtt_private_key_file: str = SERVER_KEY_FILE


class EventBus(ConfigModel):
    enable: bool = True
    mqtt_mode: int = MQTT_MODE_EXTERNAL
    mqtt_server_external: str = "tcp://127.0.0.1:1883"
    mqtt_server_internal: str = "tcp://127.0.0.1:1884"
    mqtt_qos: UInt8 = Field(default=0, alias="mqttQOS")
    mqtt_retain: bool = False
    mqtt_session_queue_size: Int32 = 100
    mqtt_sub_client_id: str = Field(default="", alias="mqttSubClientID")
    mqtt_pub_client_id: str = Field(default="", alias="mqttPubClientID")
    mqtt_username: str = ""
    mqtt_password: str = ""
    event_bus_tls: EventBusTLS = Field(default_factory=EventBusTLS, alias="eventBusTLS")

    @model_validator(mode="after")
    def _check(self) -> EventBus:
        if self.enable and not MQTT_MODE_INTERNAL <= self.mqtt_mode <= MQTT_MODE_EXTERNAL:
            raise_problems(
                [("mqttMode", f"expected 0 (internal), 1 (both) or 2 (external), got {self.mqtt_mode}")]
            )
        return self


class MetaServer(ConfigModel):
    enable: bool = False
    server: str = "127.0.0.1:10550"
    tls_ca_file: str = ROOT_CA_FILE
    tls_cert_file: str = SERVER_CERT_FILE
    tls_private_key_file: str = SERVER_KEY_FILE
    service_account_issuers: list[str] = Field(
        default_factory=lambda: ["https://kubernetes.default.svc.cluster.local"]
    )
    api_audiences: list[str] | None = None
    service_account_key_files: list[str] | None = None
    dummy_server: str = "169.254.30.10:10550"


class MetaManager(ConfigModel):
    enable: bool = True
    context_send_group: str = "hub"
    context_send_module: str = "websocket"
    remote_query_timeout: Int32 = 60
    meta_server: MetaServer = Field(default_factory=MetaServer)


class DeviceTwin(ConfigModel):
    enable: bool = True
    dmi_sock_path: str = "/etc/kubeedge/dmi.sock"


class EdgeStream(ConfigModel):
    enable: bool = False
    tls_tunnel_ca_file: str = Field(default=ROOT_CA_FILE, alias="tlsTunnelCAFile")
    tls_tunnel_cert_file: str = SERVER_CERT_FILE
    tls_tunnel_private_key_file: str = SERVER_KEY_FILE
    handshake_timeout: Int32 = 30
    read_deadline: Int32 = 15
    server: str = "127.0.0.1:10004"
    write_deadline: Int32 = 15


class ServiceBus(ConfigModel):
    enable: bool = False
    server: str = "127.0.0.1"
    port: int = 9060
    timeout: int = 60


class DBTest(ConfigModel):
    enable: bool = False


DEFAULT_EDGE_MONITOR_ADDRESS = "127.0.0.1:10551"
"""Not upstream (edgecore has no monitor server there); next to MetaServer's 10550, clear of cloudcore's
9091 and of the tunnel ports cloudcore negotiates from 10351 up on a shared host (docs/metrics.md)."""


class EdgeMonitorServer(ConfigModel):
    """edgecore's `/metrics`, `/healthz`, `/readyz`: the same keys as cloudcore's `commonConfig.monitorServer`."""

    enable: bool = True
    bind_address: str = DEFAULT_EDGE_MONITOR_ADDRESS


class EdgeCommonConfig(ConfigModel):
    """Ours, mirroring cloudcore.yaml's `commonConfig`; an upstream edgecore ignores the key."""

    monitor_server: EdgeMonitorServer = Field(default_factory=EdgeMonitorServer)

    @model_validator(mode="after")
    def _check(self) -> EdgeCommonConfig:
        problem = host_port_problem(self.monitor_server.bind_address)
        if problem:
            raise_problems([("monitorServer.bindAddress", problem)])
        return self


class EdgeModules(ConfigModel):
    edged: Edged = Field(default_factory=Edged)
    edge_hub: EdgeHub = Field(default_factory=EdgeHub)
    event_bus: EventBus = Field(default_factory=EventBus)
    meta_manager: MetaManager = Field(default_factory=MetaManager)
    device_twin: DeviceTwin = Field(default_factory=DeviceTwin)
    edge_stream: EdgeStream = Field(default_factory=EdgeStream)
    service_bus: ServiceBus = Field(default_factory=ServiceBus)
    db_test: DBTest = Field(default_factory=DBTest)


class EdgeCoreConfig(ConfigModel):
    """The whole edgecore.yaml. ``apiVersion`` and ``kind`` are kept but never checked."""

    api_version: str = EDGECORE_API_VERSION
    kind: str = EDGECORE_KIND
    common_config: EdgeCommonConfig = Field(default_factory=EdgeCommonConfig)
    database: Database = Field(default_factory=Database)
    modules: EdgeModules = Field(default_factory=EdgeModules)
    feature_gates: dict[str, bool] = Field(default_factory=dict)
    # The file this config was loaded from (not a key): EdgeHub clears the join token in it after bootstrap.
    _source_path: Path | None = PrivateAttr(default=None)

    @property
    def source_path(self) -> Path | None:
        return self._source_path


EDGECORE_MIN_KEYS: KeySpec = {
    "apiVersion": True,
    "kind": True,
    "database": {"dataSource": True},
    "modules": {
        "deviceTwin": {"dmiSockPath": True},
        "edged": dict.fromkeys(
            (
                "enable",
                "hostnameOverride",
                "nodeIP",
                "registerNodeNamespace",
                "podSandboxImage",
                "runtimeCgroups",
                "rootDirectory",
                "nodeLabels",
                "registerSchedulable",
                "maxContainerCount",
                "maxPerPodContainerCount",
                "minimumGCAge",
                "windowsService",
                "windowsPriorityClass",
                "experimentalMounterPath",
                "experimentalNodeAllocatableIgnoreEvictionThreshold",
                "keepTerminatedPodVolumes",
                "seccompDefault",
                "tailoredKubeletConfig",
            ),
            True,
        ),
        "edgeHub": dict.fromkeys(
            (
                "heartbeat",
                "tlsCaFile",
                "tlsCertFile",
                "tlsPrivateKeyFile",
                "token",
                "httpServer",
                "websocket",
            ),
            True,
        ),
        "eventBus": dict.fromkeys(
            (
                "mqttMode",
                "mqttServerExternal",
                "mqttServerInternal",
                "mqttQOS",
                "mqttRetain",
                "mqttSessionQueueSize",
                "mqttSubClientID",
                "mqttPubClientID",
                "mqttUsername",
                "mqttPassword",
            ),
            True,
        ),
    },
}
"""The keys upstream's ``--minconfig`` prints (``True`` = the whole subtree)."""
