"""v1.PodStatus from what the runtime reports, plus the waiting reasons the worker and planner know.

The phase follows kubelet's rules: a container waiting for its first run keeps the pod Pending; one
waiting to be restarted counts as stopped; with every container stopped, the restart policy and the
exit codes decide between Running, Succeeded and Failed. Without probes, a running container is ready.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edgecore.edged.pods.planner import Observed, ObservedContainer, RunState, Waiting
from edgecore.edged.pods.spec import ContainerSpec, PodSpec

JSON = dict[str, Any]


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status(spec: PodSpec, observed: Observed, waiting: dict[str, Waiting], host_ip: str, now: float) -> JSON:
    sandbox = observed.ready_sandbox
    statuses = [_container_status(c, observed, waiting.get(c.name)) for c in spec.containers]
    ready = sandbox is not None and all(s["ready"] for s in statuses)
    scheduled_at = rfc3339(now)
    status: JSON = {
        "phase": _phase(spec, statuses),
        "conditions": [
            _condition("PodScheduled", True, scheduled_at),
            _condition("Initialized", True, scheduled_at),
            _condition("ContainersReady", ready, scheduled_at),
            _condition("Ready", ready, scheduled_at),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    }
    ip = host_ip if spec.host_network else (sandbox.ip if sandbox else "")
    if ip:
        status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
    started = [c.started_at for c in observed.containers if c.started_at]
    if started:
        status["startTime"] = rfc3339(min(started))
    return status


def _condition(kind: str, value: bool, at: str) -> JSON:
    # lastTransitionTime "now" is an approximation: the edgecontroller keeps the cloud's copy if unchanged.
    return {"type": kind, "status": "True" if value else "False", "lastTransitionTime": at}


def _phase(spec: PodSpec, statuses: list[JSON]) -> str:
    running = stopped = succeeded = waiting = 0
    for status in statuses:
        state = status["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += state["terminated"]["exitCode"] == 0
        elif "terminated" in status.get("lastState", {}):
            stopped += 1  # waiting to be restarted
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if spec.restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Failed" if spec.restart_policy == "Never" else "Running"


def _container_status(spec: ContainerSpec, observed: Observed, waiting: Waiting | None) -> JSON:
    mine = sorted((c for c in observed.containers if c.name == spec.name), key=lambda c: c.attempt)
    latest = mine[-1] if mine else None
    status: JSON = {"name": spec.name, "image": spec.image, "imageID": "", "ready": False, "started": False,
                    "restartCount": latest.attempt if latest else 0, "state": {}, "lastState": {}}
    if latest is not None:
        status["containerID"] = f"containerd://{latest.id}"
        status["imageID"] = latest.image
    previous = [c for c in mine if c.state == RunState.EXITED and c is not latest]
    if previous:
        status["lastState"] = {"terminated": _terminated(previous[-1])}
    if latest is not None and latest.state == RunState.RUNNING:
        status["state"] = {"running": {"startedAt": rfc3339(latest.started_at)}}
        status["ready"] = status["started"] = True
    elif latest is not None and latest.state == RunState.EXITED and waiting is None:
        status["state"] = {"terminated": _terminated(latest)}
    else:
        if latest is not None and latest.state == RunState.EXITED:
            status["lastState"] = {"terminated": _terminated(latest)}
        reason = waiting or Waiting(reason="ContainerCreating")
        status["state"] = {"waiting": {"reason": reason.reason, **({"message": reason.message} if reason.message
                                                                   else {})}}
    return status


def _terminated(container: ObservedContainer) -> JSON:
    return {"exitCode": container.exit_code, "reason": container.reason or ("Completed" if container.exit_code == 0
                                                                            else "Error"),
            "startedAt": rfc3339(container.started_at), "finishedAt": rfc3339(container.finished_at),
            "containerID": f"containerd://{container.id}"}
