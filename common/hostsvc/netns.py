"""Pairs of network namespaces joined by a veth: a "cloud" side and an "edge" side.

This module owns the netns recipe of runtime.md: two namespaces, one veth pair, a /30 between them,
loopback up. Names come from a short tag so that parallel test workers never collide, and the /30
exists only inside the two namespaces: it never adds host routes or addresses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.hostsvc.process import HostServiceError, run_cmd

_TAG = re.compile(r"[a-z0-9]{1,11}")
_NETNS_DIR = Path("/run/netns")
_POOL = ipaddress.IPv4Network("10.123.0.0/16")


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside namespace `ns` (ip execs, so the PID is the program's)."""
    return ["ip", "netns", "exec", ns, *argv]


def link_exists(name: str) -> bool:
    """True when network interface `name` exists in the host namespace."""
    return run_cmd(["ip", "link", "show", "dev", name], timeout=5, check=False).returncode == 0


def netns_exists(ns: str) -> bool:
    return (_NETNS_DIR / ns).exists()


def _subnet_for(tag: str) -> ipaddress.IPv4Network:
    index = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "big") % (_POOL.num_addresses // 4)
    return ipaddress.IPv4Network((int(_POOL.network_address) + 4 * index, 30))


@dataclass(frozen=True)
class NetnsPair:
    """Namespaces `ke-<tag>-c` / `ke-<tag>-e`, veth `kv<tag>c` / `kv<tag>e`, a /30 between them."""

    tag: str
    subnet: ipaddress.IPv4Network

    @classmethod
    def from_tag(cls, tag: str, subnet: str | None = None) -> NetnsPair:
        """`tag`: 1-11 chars of [a-z0-9] (veth names are capped at 15); subnet defaults from the tag."""
        if not _TAG.fullmatch(tag):
            raise ValueError(f"netns tag {tag!r} must be 1-11 chars of [a-z0-9]")
        net = ipaddress.IPv4Network(subnet) if subnet else _subnet_for(tag)
        if net.prefixlen != 30:
            raise ValueError(f"netns subnet {net} must be a /30")
        return cls(tag=tag, subnet=net)

    @property
    def cloud_ns(self) -> str:
        return f"ke-{self.tag}-c"

    @property
    def edge_ns(self) -> str:
        return f"ke-{self.tag}-e"

    @property
    def cloud_veth(self) -> str:
        return f"kv{self.tag}c"

    @property
    def edge_veth(self) -> str:
        return f"kv{self.tag}e"

    @property
    def cloud_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def edge_ip(self) -> str:
        return str(self.subnet.network_address + 2)

    def exists(self) -> bool:
        """True while either namespace exists."""
        return netns_exists(self.cloud_ns) or netns_exists(self.edge_ns)

    def create(self) -> None:
        """Create both namespaces and the veth; on any failure undo what was made and raise."""
        if self.exists():
            raise HostServiceError(f"netns {self.cloud_ns} or {self.edge_ns} already exists")
        plen = self.subnet.prefixlen
        steps = [
            ["ip", "netns", "add", self.cloud_ns],
            ["ip", "netns", "add", self.edge_ns],
            ["ip", "link", "add", self.cloud_veth, "type", "veth", "peer", "name", self.edge_veth],
            ["ip", "link", "set", self.cloud_veth, "netns", self.cloud_ns],
            ["ip", "link", "set", self.edge_veth, "netns", self.edge_ns],
            ["ip", "-n", self.cloud_ns, "addr", "add", f"{self.cloud_ip}/{plen}", "dev", self.cloud_veth],
            ["ip", "-n", self.edge_ns, "addr", "add", f"{self.edge_ip}/{plen}", "dev", self.edge_veth],
            ["ip", "-n", self.cloud_ns, "link", "set", "lo", "up"],
            ["ip", "-n", self.edge_ns, "link", "set", "lo", "up"],
            ["ip", "-n", self.cloud_ns, "link", "set", self.cloud_veth, "up"],
            ["ip", "-n", self.edge_ns, "link", "set", self.edge_veth, "up"],
        ]
        try:
            for argv in steps:
                run_cmd(argv, timeout=10)
        except HostServiceError:
            self.delete()
            raise

    def delete(self) -> None:
        """Delete both namespaces (which removes the veth); idempotent.

        Processes still running inside a namespace keep it alive until they exit: stop them first.
        """
        for ns in (self.edge_ns, self.cloud_ns):
            if netns_exists(ns):
                run_cmd(["ip", "netns", "del", ns], timeout=10)
        # A veth left in the host namespace by a create() that failed half-way.
        if link_exists(self.cloud_veth):
            run_cmd(["ip", "link", "del", self.cloud_veth], timeout=10)
