"""CRI configs for a pod's sandbox and containers, as kubelet builds them (the parts Edged supports)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecore.cri.types import (
    ContainerConfig,
    ContainerMetadata,
    ImageSpec,
    KeyValue,
    LinuxContainerConfig,
    LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext,
    Mount,
    NamespaceMode,
    NamespaceOption,
    PodSandboxConfig,
    PodSandboxMetadata,
    PortMapping,
    Protocol,
)
from edgecore.edged.pods.resources import linux_resources, sandbox_privileged, security_context
from edgecore.edged.pods.spec import LABEL_CONTAINER_NAME, ContainerSpec, PodSpec

_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeOptions:
    """Node-wide settings for what Edged asks the runtime to run."""

    log_root: Path = Path("/var/log/pods")
    root_dir: Path = Path("/var/lib/kubelet")  # tailoredKubeletConfig.rootDirectory: pods/<uid>/volumes
    runtime_handler: str = ""


def _namespaces(spec: PodSpec) -> NamespaceOption:
    # pid CONTAINER: kubelet's default (no shareProcessNamespace); ipc shared within the pod.
    network = NamespaceMode.NODE if spec.host_network else NamespaceMode.POD
    return NamespaceOption(network=network, pid=NamespaceMode.CONTAINER, ipc=NamespaceMode.POD)


def sandbox_config(spec: PodSpec, attempt: int, options: RuntimeOptions) -> PodSandboxConfig:
    ports = [PortMapping(container_port=p.container_port, host_port=p.host_port, host_ip=p.host_ip,
                         protocol=_PROTOCOLS.get(p.protocol, Protocol.TCP))
             for c in spec.containers for p in c.ports if p.host_port and not spec.host_network]
    return PodSandboxConfig(
        metadata=PodSandboxMetadata(name=spec.name, uid=spec.uid, namespace=spec.namespace, attempt=attempt),
        # runtime.md: a host-network sandbox shares the node's UTS namespace, where runc refuses a hostname.
        hostname="" if spec.host_network else spec.name,
        log_directory=str(options.log_root / f"{spec.namespace}_{spec.name}_{spec.uid}"),
        port_mappings=ports,
        # The pod's own labels too (kubelet does), so tools selecting by app label find the sandbox.
        labels={**spec.labels, **spec.pod_labels()},
        linux=LinuxPodSandboxConfig(security_context=LinuxSandboxSecurityContext(
            namespace_options=_namespaces(spec), privileged=sandbox_privileged(spec))),
    )


def container_config(spec: PodSpec, container: ContainerSpec, attempt: int, *,
                     envs: list[tuple[str, str]] | None = None, mounts: list[Mount] | None = None) -> ContainerConfig:
    """`envs`: the resolved env (pods.volumes.resolve_env), else the literal entries; `mounts`: the volumes'."""
    return ContainerConfig(
        metadata=ContainerMetadata(name=container.name, attempt=attempt),
        image=ImageSpec(image=container.image),
        command=list(container.command), args=list(container.args), working_dir=container.working_dir,
        envs=[KeyValue(key=k, value=v) for k, v in (container.env if envs is None else envs)],
        mounts=list(mounts or []),
        labels={**spec.pod_labels(), LABEL_CONTAINER_NAME: container.name},
        log_path=f"{container.name}/{attempt}.log",
        linux=LinuxContainerConfig(resources=linux_resources(container),
                                   security_context=security_context(spec, container, _namespaces(spec))),
    )
