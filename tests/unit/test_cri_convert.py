"""edgecore.cri.convert: CRI dataclasses <-> protobuf messages, through the wire bytes and back."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import pytest

from edgecore.cri import types as cri
from edgecore.cri.convert import CRIConvertError, from_proto, message_class, plan, to_proto

T = TypeVar("T")


def wire_round_trip(obj: T) -> T:
    """obj -> message -> bytes -> message -> the same dataclass type."""
    data = to_proto(obj).SerializeToString()
    return from_proto(message_class(type(obj)).FromString(data), type(obj))


def sandbox_config() -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="web-0", uid="9f1c", namespace="default", attempt=2),
        hostname="web-0",
        log_directory="/var/log/pods/default_web-0_9f1c",
        dns_config=cri.DNSConfig(servers=["10.96.0.10"], searches=["default.svc.cluster.local"], options=["ndots:5"]),
        port_mappings=[cri.PortMapping(container_port=80, host_port=8080, host_ip="0.0.0.0"),
                       cri.PortMapping(container_port=53, protocol=cri.Protocol.UDP)],
        labels={"io.kubernetes.pod.name": "web-0"},
        annotations={"kubernetes.io/config.source": "api"},
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent="/kubepods/pod9f1c",
            security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=cri.NamespaceOption(network=cri.NamespaceMode.NODE, pid=cri.NamespaceMode.CONTAINER),
                run_as_user=0, supplemental_groups=[10, 20], privileged=True),
            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        ),
    )


def container_config() -> cri.ContainerConfig:
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="app", attempt=1),
        image=cri.ImageSpec(image="docker.io/local/busybox:1.0"),
        command=["sh", "-c"], args=["exec sleep 3600"], working_dir="/tmp",
        envs=[cri.KeyValue(key="A", value="1"), cri.KeyValue(key="EMPTY")],
        mounts=[cri.Mount(container_path="/data", host_path="/srv/data", readonly=True,
                          propagation=cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER)],
        labels={"io.kubernetes.container.name": "app"}, log_path="app/1.log", tty=True,
        linux=cri.LinuxContainerConfig(
            resources=cri.LinuxContainerResources(cpu_period=100000, cpu_quota=50000, cpu_shares=512,
                                                  memory_limit_in_bytes=64 << 20, oom_score_adj=1000),
            security_context=cri.LinuxContainerSecurityContext(
                capabilities=cri.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["ALL"]),
                run_as_user=1000, run_as_group=0, readonly_rootfs=True, no_new_privs=True),
        ),
    )


@pytest.mark.parametrize("make", [sandbox_config, container_config])
def test_configs_survive_the_wire(make: Any) -> None:
    original = make()
    assert wire_round_trip(original) == original


def test_every_cri_type_matches_its_message() -> None:
    for cls in cri.CRI_TYPES:
        steps = plan(cls)
        declared = {f.name for f in dataclasses.fields(cls) if f.metadata.get(cri.PROTO, True)}
        assert {s.name for s in steps} == declared, cls


def test_a_wrapper_tells_zero_from_unset() -> None:
    root = to_proto(cri.LinuxSandboxSecurityContext(run_as_user=0))
    assert root.HasField("run_as_user") and root.run_as_user.value == 0
    assert not root.HasField("run_as_group")
    assert from_proto(root, cri.LinuxSandboxSecurityContext).run_as_user == 0
    unset = to_proto(cri.LinuxSandboxSecurityContext())
    assert not unset.HasField("run_as_user") and unset.SerializeToString() == b""
    assert from_proto(unset, cri.LinuxSandboxSecurityContext).run_as_user is None


def test_a_state_filter_tells_created_from_any() -> None:
    created = to_proto(cri.ContainerFilter(state=cri.ContainerState.CONTAINER_CREATED))
    assert created.HasField("state") and created.state.state == 0
    assert not to_proto(cri.ContainerFilter()).HasField("state")
    sandboxes = to_proto(cri.PodSandboxFilter(state=cri.PodSandboxState.SANDBOX_READY, label_selector={"a": "b"}))
    assert sandboxes.HasField("state") and dict(sandboxes.label_selector) == {"a": "b"}


def test_nested_messages_with_only_defaults_are_still_sent() -> None:
    message = to_proto(cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="", uid="", namespace=""),
                                            linux=cri.LinuxPodSandboxConfig()))
    assert message.HasField("metadata") and message.HasField("linux")
    assert not message.HasField("dns_config")


def test_filling_a_field_of_a_parent_marks_it_present() -> None:
    """The client fills request fields in place (request.config); an all-default value is still sent."""
    holder = message_class(cri.PodSandboxConfig)()
    to_proto(cri.PodSandboxMetadata(name="", uid="", namespace=""), holder.metadata)
    assert holder.HasField("metadata")


def test_states_a_newer_runtime_invents_are_safe() -> None:
    assert cri.ContainerState(7) is cri.ContainerState.CONTAINER_UNKNOWN
    assert cri.PodSandboxState(5) is cri.PodSandboxState.SANDBOX_NOTREADY
    message = message_class(cri.Container)(id="c1", state=7)
    assert from_proto(message, cri.Container).state is cri.ContainerState.CONTAINER_UNKNOWN


def test_replies_decode_with_defaults_and_extras() -> None:
    status = message_class(cri.ContainerStatus)(id="c1", state=2, exit_code=137, reason="OOMKilled",
                                                finished_at=5, started_at=3)
    decoded = from_proto(status, cri.ContainerStatus, info={"info": "{}"})
    assert decoded == cri.ContainerStatus(id="c1", state=cri.ContainerState.CONTAINER_EXITED, exit_code=137,
                                          reason="OOMKilled", started_at=3, finished_at=5, info={"info": "{}"})
    assert decoded.metadata is None and decoded.image is None and decoded.mounts == []
    # The extra field never reaches the wire.
    assert "info" not in {f.name for f in to_proto(decoded).DESCRIPTOR.fields}


def test_exec_output_stays_bytes() -> None:
    reply = message_class(cri.ExecSyncResult)(stdout=b"\xff\x00ok", stderr=b"", exit_code=3)
    assert from_proto(reply, cri.ExecSyncResult) == cri.ExecSyncResult(stdout=b"\xff\x00ok", exit_code=3)


def test_stats_wrappers_decode_to_ints_or_none() -> None:
    stats = message_class(cri.ContainerStats)()
    stats.memory.working_set_bytes.value = 4096
    stats.memory.timestamp = 1
    decoded = from_proto(stats, cri.ContainerStats)
    assert decoded.memory == cri.MemoryUsage(timestamp=1, working_set_bytes=4096)
    assert decoded.cpu is None


def test_runtime_status_helpers() -> None:
    status = cri.RuntimeStatus(conditions=[cri.RuntimeCondition(type="RuntimeReady", status=True),
                                           cri.RuntimeCondition(type="NetworkReady", reason="NoCNI")])
    assert status.ready("RuntimeReady") and not status.ready("NetworkReady") and not status.ready("Other")
    assert status.condition("NetworkReady") == cri.RuntimeCondition(type="NetworkReady", reason="NoCNI")
    assert cri.PodSandboxStatus(id="s").ip == ""
    assert cri.PodSandboxStatus(id="s", network=cri.PodSandboxNetworkStatus(ip="10.1.0.2")).ip == "10.1.0.2"


@dataclass(frozen=True, kw_only=True)
class UnknownField:
    cri_message: ClassVar[str] = "KeyValue"
    key: str
    colour: str = ""


@dataclass(frozen=True, kw_only=True)
class WrongShape:
    cri_message: ClassVar[str] = "KeyValue"
    key: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class WrongNested:
    cri_message: ClassVar[str] = "PodSandboxConfig"
    metadata: cri.ContainerMetadata


@dataclass(frozen=True, kw_only=True)
class NotAWrapper:
    cri_message: ClassVar[str] = "PodSandboxConfig"
    hostname: str | None = None


@dataclass(frozen=True, kw_only=True)
class WrongScalar:
    cri_message: ClassVar[str] = "PodSandboxMetadata"
    attempt: str = ""


@dataclass(frozen=True, kw_only=True)
class WrongWrappedValue:
    cri_message: ClassVar[str] = "ContainerFilter"
    state: int | None = None


@dataclass(frozen=True, kw_only=True)
class EnumOnAnInt:
    cri_message: ClassVar[str] = "ExecSyncResponse"
    exit_code: cri.ContainerState = cri.ContainerState.CONTAINER_CREATED


@pytest.mark.parametrize(("cls", "says"), [
    (UnknownField, "not a field of runtime.v1.KeyValue"),
    (WrongScalar, "does not fit the proto field"),
    (WrongWrappedValue, "does not fit the value of runtime.v1.ContainerStateValue"),
    (EnumOnAnInt, "does not fit the proto field"),
    (WrongShape, "not repeated"),
    (WrongNested, "holds ContainerMetadata"),
    (NotAWrapper, "not a one-field wrapper"),
])
def test_a_dataclass_that_drifts_from_the_proto_fails_loudly(cls: type, says: str) -> None:
    with pytest.raises(CRIConvertError, match=says):
        plan(cls)
