"""What the host says about itself for the Node object: capacity, system info, addresses (reads /proc, /etc).

Pure functions over an injectable root directory, so tests read a fake /proc instead of this machine's.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any, Final

from common.version import KUBELET_VERSION

_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def _read(root: Path, path: str, default: str = "") -> str:
    try:
        return (root / path.lstrip("/")).read_text(encoding="utf-8").strip()
    except OSError:
        return default


def memory_bytes(root: Path = Path("/")) -> int:
    """MemTotal from /proc/meminfo, in bytes (0 when unreadable)."""
    for line in _read(root, "/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def os_image(root: Path = Path("/")) -> str:
    for line in _read(root, "/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def capacity(max_pods: int, root: Path = Path("/")) -> dict[str, str]:
    """The resources edged offers: every CPU, all memory, max pods (kubelet reserves nothing by default)."""
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{memory_bytes(root) // 1024}Ki", "pods": str(max_pods)}


@functools.lru_cache(maxsize=4)
def node_info(root: Path = Path("/")) -> dict[str, str]:
    """The Node's systemInfo; read once per root (it cannot change while edgecore runs), not on every
    status report. Callers must not modify the returned dict."""
    machine = platform.machine()
    return {
        "machineID": _read(root, "/etc/machine-id"),
        "systemUUID": _read(root, "/sys/class/dmi/id/product_uuid"),
        "bootID": _read(root, "/proc/sys/kernel/random/boot_id"),
        "kernelVersion": platform.release(),
        "osImage": os_image(root),
        "containerRuntimeVersion": "remote://",
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": _ARCH.get(machine, machine),
    }


def addresses(node_ip: str, hostname: str) -> list[dict[str, Any]]:
    return [{"type": "InternalIP", "address": node_ip}, {"type": "Hostname", "address": hostname}]
