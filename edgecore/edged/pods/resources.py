"""Pure mapping of a container's resources and securityContext to CRI, as kubelet does on cgroup v1.

- cpu.shares = requests.cpu in millicores * 1024 / 1000, at least 2 (kubelet's MinShares); with no cpu
  request the limit counts as the request (the API server's defaulting), with neither it is 2;
- cpu.cfs_period_us = 100000 and cpu.cfs_quota_us = limits.cpu in millicores * period / 1000 (at least
  1000, kubelet's MinQuotaPeriod), only with a cpu limit;
- memory.limit_in_bytes = limits.memory (memory requests have no cgroup v1 knob);
- securityContext: the container's runAsUser/runAsGroup override the pod's; privileged and
  readOnlyRootFilesystem are the container's. containerd refuses a privileged container in an
  unprivileged sandbox, so the sandbox is privileged when any container is.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from edgecore.cri.types import LinuxContainerResources, LinuxContainerSecurityContext, NamespaceOption
from edgecore.edged.pods.spec import ContainerSpec, PodSpec, PodSpecError

CPU_PERIOD: Final = 100_000
MIN_SHARES: Final = 2
MIN_QUOTA: Final = 1_000
_SUFFIXES: Final = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY: Final = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]{0,2})$")


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity ("500m", "0.5", "64Mi", "1G", "1e3") as an exact Decimal; PodSpecError if not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PodSpecError(f"quantity {value!r} is not a number")
    match = _QUANTITY.match(str(value).strip())
    if match is None or match.group(2) not in _SUFFIXES:
        raise PodSpecError(f"quantity {value!r} is not a Kubernetes quantity")
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation as exc:
        raise PodSpecError(f"quantity {value!r} is not a Kubernetes quantity") from exc


def _millicores(value: object) -> int:
    return int((parse_quantity(value) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def _section(resources: dict[str, Any], name: str) -> dict[str, Any]:
    section = resources.get(name)
    return section if isinstance(section, dict) else {}


def linux_resources(container: ContainerSpec) -> LinuxContainerResources:
    limits, requests = _section(container.resources, "limits"), _section(container.resources, "requests")
    cpu_limit = _millicores(limits["cpu"]) if "cpu" in limits else 0
    cpu_request = _millicores(requests["cpu"]) if "cpu" in requests else cpu_limit
    shares = max(MIN_SHARES, cpu_request * 1024 // 1000)
    quota = max(MIN_QUOTA, cpu_limit * CPU_PERIOD // 1000) if cpu_limit else 0
    memory = int(parse_quantity(limits["memory"])) if "memory" in limits else 0
    return LinuxContainerResources(cpu_shares=shares, cpu_period=CPU_PERIOD if quota else 0, cpu_quota=quota,
                                   memory_limit_in_bytes=memory)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def security_context(pod: PodSpec, container: ContainerSpec, namespaces: NamespaceOption
                     ) -> LinuxContainerSecurityContext:
    own, shared = container.security, pod.security
    user = _int_or_none(own.get("runAsUser"))
    group = _int_or_none(own.get("runAsGroup"))
    return LinuxContainerSecurityContext(
        namespace_options=namespaces,
        run_as_user=user if user is not None else _int_or_none(shared.get("runAsUser")),
        run_as_group=group if group is not None else _int_or_none(shared.get("runAsGroup")),
        privileged=bool(own.get("privileged")),
        readonly_rootfs=bool(own.get("readOnlyRootFilesystem")),
    )


def sandbox_privileged(pod: PodSpec) -> bool:
    return any(bool(c.security.get("privileged")) for c in pod.containers)
