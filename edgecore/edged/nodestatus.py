"""The Node as edged reports it: the registration object and each status (pure: host facts and a clock in).

Conditions follow the kubelet's: Ready True (reason `EdgeReady`, as upstream edged says it), and the
three pressure conditions False; `lastHeartbeatTime` is the report's time, `lastTransitionTime` stays
at the edge's start (nothing here ever transitions). The cloud rewrites a heartbeat older than its
nodeUpdateFrequency to its own now, so a status that waited in the outbox through a disconnect does not
make the node look stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from common.constants import LABEL_AGENT_NODE, LABEL_EDGE_NODE
from edgecore.edged import hostinfo

_PRESSURES: Final = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class NodeFacts:
    name: str
    node_ip: str
    labels: dict[str, str]
    taints: list[dict[str, Any]]
    max_pods: int
    kubelet_port: int
    started: datetime
    root: Path = Path("/")


def node_object(facts: NodeFacts, now: datetime) -> dict[str, Any]:
    """The v1.Node edged registers (upstream's labels included, so the cloud knows it for an edge node)."""
    labels = {"kubernetes.io/hostname": facts.name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": hostinfo.node_info(facts.root)["architecture"],
              LABEL_EDGE_NODE: "", LABEL_AGENT_NODE: "", **facts.labels}
    spec: dict[str, Any] = {"taints": facts.taints} if facts.taints else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": facts.name, "labels": labels},
            "spec": spec, "status": node_status(facts, now)}


def node_status(facts: NodeFacts, now: datetime) -> dict[str, Any]:
    resources = hostinfo.capacity(facts.max_pods, facts.root)
    since, beat = rfc3339(facts.started), rfc3339(now)
    conditions = [{"type": "Ready", "status": "True", "reason": "EdgeReady", "message": "edge is posting ready status",
                   "lastHeartbeatTime": beat, "lastTransitionTime": since}]
    conditions += [{"type": kind, "status": "False", "reason": reason, "message": message,
                    "lastHeartbeatTime": beat, "lastTransitionTime": since} for kind, reason, message in _PRESSURES]
    return {
        "capacity": resources,
        "allocatable": dict(resources),
        "conditions": conditions,
        "addresses": hostinfo.addresses(facts.node_ip, facts.name),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.kubelet_port}},
        "nodeInfo": dict(hostinfo.node_info(facts.root)),
    }


def status_request(facts: NodeFacts, now: datetime) -> dict[str, Any]:
    """Upstream's NodeStatusRequest (Go field names, no JSON tags); UID empty: the cloud's Node decides."""
    return {"UID": "", "Status": node_status(facts, now), "ExtendResources": {}}
