"""Plain, typed mirrors of the CRI messages Edged sends and reads (edgecore/cri/proto/api.proto).

Each dataclass names its message in `cri_message`, and its fields carry the proto field names, so
`edgecore.cri.convert` can map both ways without per-type code. How a field's type maps:

- `str`, `int`, `bool`, `bytes`: the scalar; an `IntEnum`: the proto enum;
- a dataclass: a nested message (always sent); `Dataclass | None`: a nested message, None = unset;
- `int | None` or `Enum | None`: one of CRI's one-field wrapper messages (Int64Value, UInt64Value,
  PodSandboxStateValue, ContainerStateValue), None = unset. That is how CRI tells `run_as_user` 0 (root)
  from "not specified", and "any state" from CONTAINER_CREATED in filters;
- `list[...]`: a repeated field; `dict[str, str]`: a map.

Fields that are not in the message (such as the verbose `info` of a status) are marked with
`metadata={PROTO: False}`; the client fills them from the response.

These types are why the rest of edged never touches protobuf: they type-check, compare by value, and
can be built in unit tests without the compiled proto.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Final

PROTO: Final = "cri_proto"
_EXTRA: Final = {PROTO: False}


class NamespaceMode(IntEnum):
    POD = 0
    CONTAINER = 1
    NODE = 2
    TARGET = 3


class Protocol(IntEnum):
    TCP = 0
    UDP = 1
    SCTP = 2


class MountPropagation(IntEnum):
    PROPAGATION_PRIVATE = 0
    PROPAGATION_HOST_TO_CONTAINER = 1
    PROPAGATION_BIDIRECTIONAL = 2


class PodSandboxState(IntEnum):
    SANDBOX_READY = 0
    SANDBOX_NOTREADY = 1

    @classmethod
    def _missing_(cls, value: object) -> PodSandboxState:
        # proto3 enums are open: a state a newer runtime invents is not one we may call ready.
        return cls.SANDBOX_NOTREADY


class ContainerState(IntEnum):
    CONTAINER_CREATED = 0
    CONTAINER_RUNNING = 1
    CONTAINER_EXITED = 2
    CONTAINER_UNKNOWN = 3

    @classmethod
    def _missing_(cls, value: object) -> ContainerState:
        return cls.CONTAINER_UNKNOWN


# ---- shared ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyValue:
    cri_message: ClassVar[str] = "KeyValue"
    key: str
    value: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class NamespaceOption:
    """Which namespaces are the pod's, the node's, or another container's (target_id)."""

    cri_message: ClassVar[str] = "NamespaceOption"
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.POD
    ipc: NamespaceMode = NamespaceMode.POD
    target_id: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageSpec:
    cri_message: ClassVar[str] = "ImageSpec"
    image: str
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Mount:
    cri_message: ClassVar[str] = "Mount"
    container_path: str
    host_path: str
    readonly: bool = False
    propagation: MountPropagation = MountPropagation.PROPAGATION_PRIVATE


@dataclass(frozen=True, kw_only=True, slots=True)
class DNSConfig:
    cri_message: ClassVar[str] = "DNSConfig"
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class PortMapping:
    cri_message: ClassVar[str] = "PortMapping"
    container_port: int
    host_port: int = 0
    protocol: Protocol = Protocol.TCP
    host_ip: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class LinuxContainerResources:
    """cgroup settings; 0 / "" means "not specified" for every field (proto3 defaults)."""

    cri_message: ClassVar[str] = "LinuxContainerResources"
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Capability:
    cri_message: ClassVar[str] = "Capability"
    add_capabilities: list[str] = field(default_factory=list)
    drop_capabilities: list[str] = field(default_factory=list)


# ---- runtime -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeVersion:
    cri_message: ClassVar[str] = "VersionResponse"
    version: str = ""
    runtime_name: str = ""
    runtime_version: str = ""
    runtime_api_version: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeCondition:
    cri_message: ClassVar[str] = "RuntimeCondition"
    type: str
    status: bool = False
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeStatus:
    cri_message: ClassVar[str] = "RuntimeStatus"
    conditions: list[RuntimeCondition] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict, metadata=_EXTRA)

    def condition(self, type_: str) -> RuntimeCondition | None:
        """The condition of that type (RuntimeReady, NetworkReady), None if the runtime did not report it."""
        return next((c for c in self.conditions if c.type == type_), None)

    def ready(self, type_: str) -> bool:
        found = self.condition(type_)
        return found is not None and found.status


# ---- pod sandboxes -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class PodSandboxMetadata:
    cri_message: ClassVar[str] = "PodSandboxMetadata"
    name: str
    uid: str
    namespace: str
    attempt: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class LinuxSandboxSecurityContext:
    cri_message: ClassVar[str] = "LinuxSandboxSecurityContext"
    namespace_options: NamespaceOption | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    readonly_rootfs: bool = False
    supplemental_groups: list[int] = field(default_factory=list)
    privileged: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class LinuxPodSandboxConfig:
    cri_message: ClassVar[str] = "LinuxPodSandboxConfig"
    cgroup_parent: str = ""
    security_context: LinuxSandboxSecurityContext | None = None
    sysctls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class PodSandboxConfig:
    """What RunPodSandbox needs. `hostname` must be "" when the network namespace is NODE (runtime.md)."""

    cri_message: ClassVar[str] = "PodSandboxConfig"
    metadata: PodSandboxMetadata
    hostname: str = ""
    log_directory: str = ""
    dns_config: DNSConfig | None = None
    port_mappings: list[PortMapping] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    linux: LinuxPodSandboxConfig | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PodSandboxNetworkStatus:
    cri_message: ClassVar[str] = "PodSandboxNetworkStatus"
    ip: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class PodSandboxStatus:
    cri_message: ClassVar[str] = "PodSandboxStatus"
    id: str
    metadata: PodSandboxMetadata | None = None
    state: PodSandboxState = PodSandboxState.SANDBOX_READY
    created_at: int = 0
    network: PodSandboxNetworkStatus | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runtime_handler: str = ""
    info: dict[str, str] = field(default_factory=dict, metadata=_EXTRA)

    @property
    def ip(self) -> str:
        """The pod IP, "" for host-network pods (the runtime reports none for them)."""
        return self.network.ip if self.network is not None else ""


@dataclass(frozen=True, kw_only=True, slots=True)
class PodSandboxFilter:
    """All set fields must match (AND); `label_selector` matches labels exactly."""

    cri_message: ClassVar[str] = "PodSandboxFilter"
    id: str = ""
    state: PodSandboxState | None = None
    label_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class PodSandbox:
    cri_message: ClassVar[str] = "PodSandbox"
    id: str
    metadata: PodSandboxMetadata | None = None
    state: PodSandboxState = PodSandboxState.SANDBOX_READY
    created_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runtime_handler: str = ""


# ---- containers --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerMetadata:
    cri_message: ClassVar[str] = "ContainerMetadata"
    name: str
    attempt: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class LinuxContainerSecurityContext:
    cri_message: ClassVar[str] = "LinuxContainerSecurityContext"
    capabilities: Capability | None = None
    privileged: bool = False
    namespace_options: NamespaceOption | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    readonly_rootfs: bool = False
    supplemental_groups: list[int] = field(default_factory=list)
    no_new_privs: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class LinuxContainerConfig:
    cri_message: ClassVar[str] = "LinuxContainerConfig"
    resources: LinuxContainerResources | None = None
    security_context: LinuxContainerSecurityContext | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerConfig:
    """What CreateContainer needs. `log_path` is relative to the sandbox's `log_directory`."""

    cri_message: ClassVar[str] = "ContainerConfig"
    metadata: ContainerMetadata
    image: ImageSpec
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    working_dir: str = ""
    envs: list[KeyValue] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_path: str = ""
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    linux: LinuxContainerConfig | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerFilter:
    """All set fields must match (AND); `label_selector` matches labels exactly."""

    cri_message: ClassVar[str] = "ContainerFilter"
    id: str = ""
    state: ContainerState | None = None
    pod_sandbox_id: str = ""
    label_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Container:
    cri_message: ClassVar[str] = "Container"
    id: str
    pod_sandbox_id: str = ""
    metadata: ContainerMetadata | None = None
    image: ImageSpec | None = None
    image_ref: str = ""
    state: ContainerState = ContainerState.CONTAINER_UNKNOWN
    created_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    image_id: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerStatus:
    """Times are nanoseconds since the epoch, 0 when not reached; `exit_code` counts once finished_at != 0."""

    cri_message: ClassVar[str] = "ContainerStatus"
    id: str
    metadata: ContainerMetadata | None = None
    state: ContainerState = ContainerState.CONTAINER_UNKNOWN
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    image: ImageSpec | None = None
    image_ref: str = ""
    reason: str = ""
    message: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    log_path: str = ""
    image_id: str = ""
    info: dict[str, str] = field(default_factory=dict, metadata=_EXTRA)


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecSyncResult:
    cri_message: ClassVar[str] = "ExecSyncResponse"
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0


# ---- stats -------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerAttributes:
    cri_message: ClassVar[str] = "ContainerAttributes"
    id: str
    metadata: ContainerMetadata | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class CpuUsage:
    cri_message: ClassVar[str] = "CpuUsage"
    timestamp: int = 0
    usage_core_nano_seconds: int | None = None
    usage_nano_cores: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MemoryUsage:
    cri_message: ClassVar[str] = "MemoryUsage"
    timestamp: int = 0
    working_set_bytes: int | None = None
    available_bytes: int | None = None
    usage_bytes: int | None = None
    rss_bytes: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class FilesystemIdentifier:
    cri_message: ClassVar[str] = "FilesystemIdentifier"
    mountpoint: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class FilesystemUsage:
    cri_message: ClassVar[str] = "FilesystemUsage"
    timestamp: int = 0
    fs_id: FilesystemIdentifier | None = None
    used_bytes: int | None = None
    inodes_used: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerStats:
    cri_message: ClassVar[str] = "ContainerStats"
    attributes: ContainerAttributes | None = None
    cpu: CpuUsage | None = None
    memory: MemoryUsage | None = None
    writable_layer: FilesystemUsage | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerStatsFilter:
    cri_message: ClassVar[str] = "ContainerStatsFilter"
    id: str = ""
    pod_sandbox_id: str = ""
    label_selector: dict[str, str] = field(default_factory=dict)


# ---- images ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Image:
    cri_message: ClassVar[str] = "Image"
    id: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    uid: int | None = None
    username: str = ""
    spec: ImageSpec | None = None
    pinned: bool = False
    info: dict[str, str] = field(default_factory=dict, metadata=_EXTRA)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthConfig:
    cri_message: ClassVar[str] = "AuthConfig"
    username: str = ""
    password: str = ""
    auth: str = ""
    server_address: str = ""
    identity_token: str = ""
    registry_token: str = ""


# Every type above, for the converter's checks and the unit tests.
CRI_TYPES: Final[tuple[type, ...]] = (
    KeyValue, NamespaceOption, ImageSpec, Mount, DNSConfig, PortMapping, LinuxContainerResources, Capability,
    RuntimeVersion, RuntimeCondition, RuntimeStatus, PodSandboxMetadata, LinuxSandboxSecurityContext,
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxNetworkStatus, PodSandboxStatus, PodSandboxFilter,
    PodSandbox, ContainerMetadata, LinuxContainerSecurityContext, LinuxContainerConfig, ContainerConfig,
    ContainerFilter, Container, ContainerStatus, ExecSyncResult, ContainerAttributes, CpuUsage, MemoryUsage,
    FilesystemIdentifier, FilesystemUsage, ContainerStats, ContainerStatsFilter, Image, AuthConfig,
)
