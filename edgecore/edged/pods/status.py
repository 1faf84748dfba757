"""v1.PodStatus from what the runtime reports, plus the waiting reasons the worker and planner know.

The phase follows kubelet's rules: an init container not yet completed keeps the pod Pending (a failed
one under restartPolicy Never makes it Failed); a container waiting for its first run keeps the pod
Pending; one waiting to be restarted counts as stopped; with every container stopped, the restart policy
and the exit codes decide between Running, Succeeded and Failed. A running container is started and ready
unless its probes (`health`, by container id) say otherwise; a completed init container is ready.
qosClass is computed as Kubernetes does (GetPodQOS) from the requests and limits of all containers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from edgecore.edged.pods.planner import Observed, ObservedContainer, RunState, Waiting, app_created, succeeded
from edgecore.edged.pods.probes import Health
from edgecore.edged.pods.resources import parse_quantity
from edgecore.edged.pods.spec import ContainerSpec, PodSpec, PodSpecError

JSON = dict[str, Any]


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status(spec: PodSpec, observed: Observed, waiting: Mapping[str, Waiting], host_ip: str, now: float, *,
               health: Mapping[str, Health] | None = None, messages: Mapping[str, str] | None = None) -> JSON:
    """`health`: the probes' verdict per running container id; `messages`: a termination message per
    container id (why edged killed it)."""
    sandbox = observed.ready_sandbox
    context = _Context(observed, waiting, health or {}, messages or {},
                       "PodInitializing" if spec.init_containers else "ContainerCreating")
    inits = [_init_status(c, context, sandbox.id if sandbox else "") for c in spec.init_containers]
    statuses = [_container_status(c, context) for c in spec.containers]
    initialized = sandbox is not None and app_created(spec, observed, sandbox.id)
    incomplete = [] if initialized else [s["name"] for s in inits if not s["ready"]]
    unready = [s["name"] for s in statuses if not s["ready"]]
    ready = sandbox is not None and not incomplete and not unready
    unready_message = f"containers with unready status: [{' '.join(unready)}]"
    at = rfc3339(now)
    status: JSON = {
        "phase": _phase(spec, inits, statuses),
        "conditions": [
            _condition("PodScheduled", True, at),
            _condition("Initialized", not incomplete, at, "ContainersNotInitialized",
                       f"containers with incomplete status: [{' '.join(incomplete)}]"),
            _condition("ContainersReady", ready, at, "ContainersNotReady", unready_message),
            _condition("Ready", ready, at, "ContainersNotReady", unready_message),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "containerStatuses": statuses,
        "qosClass": qos_class(spec),
    }
    if inits:
        status["initContainerStatuses"] = inits
    ip = host_ip if spec.host_network else (sandbox.ip if sandbox else "")
    if ip:
        status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
    started = [c.started_at for c in observed.containers if c.started_at]
    if started:
        status["startTime"] = rfc3339(min(started))
    return status


def _condition(kind: str, value: bool, at: str, reason: str = "", message: str = "") -> JSON:
    # lastTransitionTime "now" is an approximation: the edgecontroller keeps the cloud's copy if unchanged.
    condition: JSON = {"type": kind, "status": "True" if value else "False", "lastTransitionTime": at}
    if not value and reason:
        condition |= {"reason": reason, "message": message}
    return condition


def _init_pending_or_failed(inits: list[JSON]) -> tuple[int, int]:
    """kubelet's count of init containers still to complete, and of those that failed."""
    pending = failed = 0
    for status in inits:
        state, last = status["state"], status["lastState"]
        if "terminated" in state:
            failed += state["terminated"]["exitCode"] != 0
        elif "waiting" in state and "terminated" in last:
            failed += last["terminated"]["exitCode"] != 0
        else:
            pending += 1
    return pending, failed


def _phase(spec: PodSpec, inits: list[JSON], statuses: list[JSON]) -> str:
    pending, failed = _init_pending_or_failed(inits)
    if failed and spec.restart_policy == "Never":
        return "Failed"
    if pending and not any(s.get("containerID") for s in statuses):
        return "Pending"
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


@dataclass(frozen=True, slots=True)
class _Context:
    observed: Observed
    waiting: Mapping[str, Waiting]
    health: Mapping[str, Health]
    messages: Mapping[str, str]
    default_waiting: str  # kubelet: PodInitializing for pods with init containers, else ContainerCreating


def _init_status(spec: ContainerSpec, context: _Context, sandbox_id: str) -> JSON:
    status = _container_status(spec, context)
    mine = context.observed.latest(spec.name)
    # Completed in the current sandbox: ready, and (not probed) not started, as kubelet reports it.
    status["ready"] = succeeded(mine, sandbox_id)
    status["started"] = "running" in status["state"]
    return status


def _container_status(spec: ContainerSpec, context: _Context) -> JSON:
    mine = sorted((c for c in context.observed.containers if c.name == spec.name), key=lambda c: c.attempt)
    latest = mine[-1] if mine else None
    waiting = context.waiting.get(spec.name)
    status: JSON = {"name": spec.name, "image": spec.image, "imageID": "", "ready": False, "started": False,
                    "restartCount": latest.attempt if latest else 0, "state": {}, "lastState": {}}
    if latest is not None:
        status["containerID"] = f"containerd://{latest.id}"
        status["imageID"] = latest.image
    previous = [c for c in mine if c.state == RunState.EXITED and c is not latest]
    if previous:
        status["lastState"] = {"terminated": _terminated(previous[-1], context)}
    if latest is not None and latest.state == RunState.RUNNING:
        status["state"] = {"running": {"startedAt": rfc3339(latest.started_at)}}
        health = context.health.get(latest.id, Health(started=True, ready=True))
        status["started"], status["ready"] = health.started, health.ready
    elif latest is not None and latest.state == RunState.EXITED and waiting is None:
        status["state"] = {"terminated": _terminated(latest, context)}
    else:
        if latest is not None and latest.state == RunState.EXITED:
            status["lastState"] = {"terminated": _terminated(latest, context)}
        reason = waiting or Waiting(reason=context.default_waiting)
        status["state"] = {"waiting": {"reason": reason.reason, **({"message": reason.message} if reason.message
                                                                   else {})}}
    return status


def _terminated(container: ObservedContainer, context: _Context) -> JSON:
    # The runtime's reason passes through (containerd: OOMKilled when the OOM killer ended it).
    terminated: JSON = {
        "exitCode": container.exit_code,
        "reason": container.reason or ("Completed" if container.exit_code == 0 else "Error"),
        "startedAt": rfc3339(container.started_at), "finishedAt": rfc3339(container.finished_at),
        "containerID": f"containerd://{container.id}"}
    message = context.messages.get(container.id)
    if message:
        terminated["message"] = message
    return terminated


# ---- QoS class -----------------------------------------------------------------------------------------

_QOS_RESOURCES: Final = ("cpu", "memory")


def _quantities(section: object) -> dict[str, Decimal]:
    """The positive cpu/memory quantities of a requests/limits map; unparsable ones count as absent (the
    container then fails to start with CreateContainerConfigError, which says why)."""
    found: dict[str, Decimal] = {}
    for name in _QOS_RESOURCES:
        if isinstance(section, dict) and name in section:
            try:
                value = parse_quantity(section[name])
            except PodSpecError:
                continue
            if value > 0:
                found[name] = value
    return found


def _add(total: dict[str, Decimal], more: dict[str, Decimal]) -> None:
    for name, value in more.items():
        total[name] = total.get(name, Decimal(0)) + value


def qos_class(spec: PodSpec) -> str:
    """Kubernetes' GetPodQOS over app and init containers; a missing request defaults to the limit, as
    the API server's defaulting would have set it."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    containers: Iterable[ContainerSpec] = (*spec.containers, *spec.init_containers)
    for container in containers:
        own_limits = _quantities(container.resources.get("limits"))
        _add(requests, own_limits | _quantities(container.resources.get("requests")))
        _add(limits, own_limits)
        guaranteed = guaranteed and own_limits.keys() >= set(_QOS_RESOURCES)
    if not requests and not limits:
        return "BestEffort"
    return "Guaranteed" if guaranteed and requests == limits else "Burstable"
