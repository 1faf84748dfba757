"""Sans-I/O: what to do to bring one pod's runtime state to its spec. No CRI, no asyncio, no clock reads.

The worker observes the runtime (sandboxes and containers carrying the pod's uid label), calls `plan`
with the wall-clock time, applies the actions in order and observes again. Decisions made here:

- a pod being deleted (or gone from the spec): stop every running container with the grace period,
  then remove its sandboxes; it is finished when nothing is left;
- no ready sandbox: remove the stale ones and run a new one, then (re)create its first init container, or
  every container if it has none, unless the pod has completed for good (all containers exited and the
  restart policy keeps them down, or an init container failed under restartPolicy Never);
- init containers run one at a time, in order, each to exit code 0 in the current sandbox, before any app
  container starts; a failed one is restarted (with the back-off) unless restartPolicy is Never. Like
  kubelet, an app container already created in the sandbox means initialization happened, so init
  containers are never re-run for a sandbox that ran the app;
- per spec container, its latest instance (highest attempt) decides: none -> start attempt 0; created
  but never started (an edgecore crash between Create and Start) -> replace it; running but `unhealthy`
  (a liveness or startup probe failed) -> stop it; exited -> restart per restartPolicy after the
  back-off; older exited instances are removed (the latest one stays, for its exit code and logs);
- containers whose name is no longer in the spec are stopped and removed.

Back-off: the n-th restart (attempt n) waits min(10 s * 2^(n-1), 5 min) after the previous instance
finished. Deriving it from the attempt number and the runtime's finished_at, rather than keeping a timer,
makes it survive an edgecore restart and keeps this module free of state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from edgecore.edged.pods.spec import PodSpec

BACKOFF_INITIAL: Final = 10.0
BACKOFF_MAX: Final = 300.0


class RunState(Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True, slots=True)
class ObservedContainer:
    id: str
    name: str
    sandbox_id: str
    attempt: int = 0
    state: RunState = RunState.UNKNOWN
    exit_code: int = 0
    reason: str = ""
    started_at: float = 0.0  # wall-clock seconds; 0 = not yet
    finished_at: float = 0.0
    image: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ObservedSandbox:
    id: str
    ready: bool
    attempt: int = 0
    ip: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Observed:
    sandboxes: tuple[ObservedSandbox, ...] = ()
    containers: tuple[ObservedContainer, ...] = ()

    @property
    def ready_sandbox(self) -> ObservedSandbox | None:
        ready = [s for s in self.sandboxes if s.ready]
        return max(ready, key=lambda s: s.attempt) if ready else None

    def latest(self, name: str) -> ObservedContainer | None:
        mine = [c for c in self.containers if c.name == name]
        return max(mine, key=lambda c: (c.attempt, c.started_at)) if mine else None

    @property
    def empty(self) -> bool:
        return not self.sandboxes and not self.containers


# ---- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KillSandbox:
    """Stop and remove a sandbox (CRI removes its containers too)."""

    sandbox_id: str


@dataclass(frozen=True, slots=True)
class RunSandbox:
    attempt: int


@dataclass(frozen=True, slots=True)
class StartContainer:
    """Create and start the spec container `name` in the ready (or just-run) sandbox."""

    name: str
    attempt: int


@dataclass(frozen=True, slots=True)
class StopContainer:
    container_id: str
    grace_seconds: int


@dataclass(frozen=True, slots=True)
class RemoveContainer:
    container_id: str


Action = KillSandbox | RunSandbox | StartContainer | StopContainer | RemoveContainer


@dataclass(frozen=True, kw_only=True, slots=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(kw_only=True, slots=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    waiting: dict[str, Waiting] = field(default_factory=dict)  # container name -> why it is not running
    wake_at: float | None = None  # earliest time a back-off ends: plan again then
    finished: bool = False  # the pod is deleted and nothing of it is left in the runtime

    def wake_no_later_than(self, when: float) -> None:
        self.wake_at = when if self.wake_at is None else min(self.wake_at, when)


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before starting instance `attempt` of a container (attempt 0 starts at once)."""
    if attempt <= 0:
        return 0.0
    return min(BACKOFF_INITIAL * float(2 ** min(attempt - 1, 16)), BACKOFF_MAX)


def should_restart(spec: PodSpec, exit_code: int, *, init: bool = False) -> bool:
    """Whether a container that exited with `exit_code` runs again (an init container only until it succeeds)."""
    if init:
        return spec.restart_policy != "Never" and exit_code != 0
    if spec.restart_policy == "Always":
        return True
    return spec.restart_policy == "OnFailure" and exit_code != 0


def plan(spec: PodSpec | None, observed: Observed, now: float, unhealthy: Mapping[str, str] | None = None) -> Plan:
    """The next actions for one pod. `spec` None or `spec.deleting`: tear it down. `unhealthy`: the ids of
    running containers a liveness or startup probe failed (and why)."""
    if spec is None or spec.deleting:
        return _teardown(observed, spec.grace_seconds if spec else 0)
    sandbox = observed.ready_sandbox
    if sandbox is None:
        return _new_sandbox(spec, observed)
    result = Plan()
    result.actions += [KillSandbox(s.id) for s in observed.sandboxes if s.id != sandbox.id]
    if _initialized(spec, observed, sandbox.id, now, result):
        for container in spec.containers:
            _plan_container(spec, container.name, observed, sandbox.id, now, result, unhealthy or {})
    for extra in observed.containers:
        if spec.container(extra.name) is None:
            result.actions += _stop_and_remove(extra, spec.grace_seconds)
    return result


def _teardown(observed: Observed, grace: int) -> Plan:
    if observed.empty:
        return Plan(finished=True)
    result = Plan()
    for container in observed.containers:
        if container.state in (RunState.RUNNING, RunState.UNKNOWN):
            result.actions.append(StopContainer(container.id, grace))
    result.actions += [KillSandbox(s.id) for s in observed.sandboxes]
    # Containers whose sandbox is already gone (not expected from CRI, but harmless) go one by one.
    sandbox_ids = {s.id for s in observed.sandboxes}
    result.actions += [RemoveContainer(c.id) for c in observed.containers if c.sandbox_id not in sandbox_ids]
    return result


def succeeded(container: ObservedContainer | None, sandbox_id: str) -> bool:
    """An init container's instance completed successfully in that sandbox."""
    return (container is not None and container.sandbox_id == sandbox_id and container.state == RunState.EXITED
            and container.exit_code == 0)


def app_created(spec: PodSpec, observed: Observed, sandbox_id: str) -> bool:
    """An app container exists in the sandbox: initialization happened there, whatever the runtime still
    holds of the init containers."""
    return any(c.sandbox_id == sandbox_id and not spec.is_init(c.name) for c in observed.containers)


def _initialized(spec: PodSpec, observed: Observed, sandbox_id: str, now: float, result: Plan) -> bool:
    """Plan the first init container not yet done in the sandbox; True when all are."""
    if app_created(spec, observed, sandbox_id):
        return True
    for init in spec.init_containers:
        _plan_container(spec, init.name, observed, sandbox_id, now, result, {})
        if not succeeded(observed.latest(init.name), sandbox_id):
            return False
    return True


def _init_failed(spec: PodSpec, observed: Observed) -> bool:
    """An init container failed and restartPolicy Never keeps it (and so the pod) down."""
    latest = [observed.latest(c.name) for c in spec.init_containers]
    return spec.restart_policy == "Never" and any(
        c is not None and c.state == RunState.EXITED and c.exit_code != 0 for c in latest)


def _completed(spec: PodSpec, observed: Observed) -> bool:
    """Every spec container ran and exited, and the restart policy keeps each of them down."""
    if _init_failed(spec, observed):
        return True
    latest = [observed.latest(c.name) for c in spec.containers]
    return all(c is not None and c.state == RunState.EXITED and not should_restart(spec, c.exit_code)
               for c in latest)


def _new_sandbox(spec: PodSpec, observed: Observed) -> Plan:
    if observed.sandboxes and _completed(spec, observed):
        return Plan()  # a finished pod keeps its (stopped) sandbox and exit codes until deleted
    result = Plan()
    result.actions += [KillSandbox(s.id) for s in observed.sandboxes]
    attempt = max((s.attempt + 1 for s in observed.sandboxes), default=0)
    result.actions.append(RunSandbox(attempt))
    # Init containers first: the others start in later rounds, once each init container has succeeded.
    for container in spec.init_containers[:1] or spec.containers:
        # A container lost with its sandbox counts as restarted (kubelet's restartCount does too).
        previous = observed.latest(container.name)
        result.actions.append(StartContainer(container.name, previous.attempt + 1 if previous else 0))
    return result


def _plan_container(spec: PodSpec, name: str, observed: Observed, sandbox_id: str, now: float, result: Plan,
                    unhealthy: Mapping[str, str]) -> None:
    mine = [c for c in observed.containers if c.name == name]
    latest = observed.latest(name)
    result.actions += [RemoveContainer(c.id) for c in mine if c is not latest and c.state != RunState.RUNNING]
    if latest is None:
        result.actions.append(StartContainer(name, 0))
    elif latest.sandbox_id != sandbox_id:
        result.actions += [*_stop_and_remove(latest, spec.grace_seconds), StartContainer(name, latest.attempt + 1)]
    elif latest.state == RunState.CREATED:
        result.actions += [RemoveContainer(latest.id), StartContainer(name, latest.attempt)]
    elif latest.state == RunState.RUNNING and latest.id in unhealthy:
        result.actions.append(StopContainer(latest.id, spec.grace_seconds))
    elif latest.state == RunState.EXITED and should_restart(spec, latest.exit_code, init=spec.is_init(name)):
        ready_at = latest.finished_at + backoff_delay(latest.attempt + 1)
        if now >= ready_at:
            result.actions.append(StartContainer(name, latest.attempt + 1))
        else:
            result.waiting[name] = Waiting(
                reason="CrashLoopBackOff",
                message=f"back-off {backoff_delay(latest.attempt + 1):.0f}s restarting failed container {name}")
            result.wake_no_later_than(ready_at)


def _stop_and_remove(container: ObservedContainer, grace: int) -> list[Action]:
    actions: list[Action] = []
    if container.state in (RunState.RUNNING, RunState.UNKNOWN):
        actions.append(StopContainer(container.id, grace))
    actions.append(RemoveContainer(container.id))
    return actions
