"""Node admission of a new pod, as kubelet's NodePorts predicate does it (sans-I/O).

A pod whose host ports (protocol, hostIP, port) collide with those of a pod already admitted on this node
is rejected: kubelet's reason `NodePorts`, its message, phase Failed, and no sandbox is ever created for
it. The pod admitted first keeps its ports; the manager admits the pods it loads at start in creation
order, so the same pod wins after an edgecore restart. A host-network pod's container ports are host
ports (the API server defaults hostPort to containerPort for them). hostIP "" or 0.0.0.0 collides with
every address, as in kubelet's HostPortInfo.

Never does I/O, never looks at the runtime: what is running is the pod workers' business.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from edgecore.edged.pods.spec import PodSpec, Rejection

NODE_PORTS: Final = "NodePorts"
NODE_PORTS_MESSAGE: Final = f"Predicate {NODE_PORTS} failed: node(s) didn't have free ports for the requested pod ports"
_ANY_IP: Final = "0.0.0.0"


class HostPort(NamedTuple):
    protocol: str
    ip: str
    port: int

    def collides(self, other: HostPort) -> bool:
        if (self.protocol, self.port) != (other.protocol, other.port):
            return False
        return _ANY_IP in (self.ip, other.ip) or self.ip == other.ip

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}/{self.protocol}"


def host_ports(spec: PodSpec) -> list[HostPort]:
    """The host ports the pod's app and init containers ask for."""
    found = []
    for container in (*spec.init_containers, *spec.containers):
        for port in container.ports:
            number = port.host_port or (port.container_port if spec.host_network else 0)
            if number > 0:
                found.append(HostPort(port.protocol or "TCP", port.host_ip or _ANY_IP, number))
    return found


def conflicts(spec: PodSpec, admitted: Iterable[PodSpec]) -> list[HostPort]:
    """The pod's host ports already taken by one of the `admitted` pods."""
    wanted = host_ports(spec)
    if not wanted:
        return []
    taken = [port for other in admitted if other.uid != spec.uid for port in host_ports(other)]
    return [port for port in wanted if any(port.collides(used) for used in taken)]


def admit(spec: PodSpec, admitted: Iterable[PodSpec]) -> Rejection | None:
    """None when the pod may run next to the `admitted` ones; else why not."""
    if conflicts(spec, admitted):
        return Rejection(reason=NODE_PORTS, message=NODE_PORTS_MESSAGE)
    return None
