"""One asyncio task per pod: observe the runtime, plan, apply the plan through CRI, report the status.

It runs until the pod is deleted and nothing of it is left in the runtime. A spec update, a delete or a
probe's verdict wakes it at once; otherwise it re-syncs every `resync` seconds (that is also how exits
are noticed: no event stream yet) or when a back-off ends. A CRI error ends one round, not the worker:
it is logged, and the next round starts from a fresh observation, so a half-applied plan is never trusted.

Image policy: a locally present image is used; a missing one is pulled once, within `pull_timeout`
(these nodes have no registry, so that fails fast), and the container then waits with ErrImagePull,
later ImagePullBackOff, with the same back-off as crashes. The same back-off guards a container the
runtime refuses to create or start, so a broken spec never turns into a busy loop.

Probes: the worker owns one prober task (pods.probes) per running container instance that has probes,
started when it observes the instance running and cancelled when the instance stops or the pod goes
(or the worker ends). A failed liveness/startup probe makes the planner stop that instance; its
terminated state then carries why. A probe that can never run keeps its container from starting
(CreateContainerConfigError, with the reason).

Admission: a pod the manager rejected (`rejection`, e.g. a host port another pod holds) never gets a
sandbox; the worker reports it Failed with kubelet's reason and "Pod was rejected: ..." message, and
only waits for its deletion.

Events: what kubelet records about a pod goes to the node's EventRecorder (never blocking): Pulling,
Pulled, Failed (image pull, and "Error: <reason>" for a container that cannot be created or started),
BackOff (pulling an image, restarting a crashed container), Created, Started, Killing, Unhealthy (each
failed probe check), FailedMount (a volume that cannot be set up), FailedCreatePodSandBox, and the
admission rejection's reason. Repeats become one event with a count (the recorder's correlator).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from common.log import get_logger
from edgecore.cri import CRIClient, CRIError
from edgecore.cri.types import PodSandboxConfig
from edgecore.edged.events import NORMAL, WARNING, EventRecorder, EventType
from edgecore.edged.pods.configs import RuntimeOptions, container_config, sandbox_config
from edgecore.edged.pods.observe import observe
from edgecore.edged.pods.planner import (
    Action,
    KillSandbox,
    Observed,
    ObservedContainer,
    Plan,
    RemoveContainer,
    RunSandbox,
    RunState,
    StartContainer,
    StopContainer,
    Waiting,
    backoff_delay,
    plan,
)
from edgecore.edged.pods.probes import Kind, Prober, check_probes
from edgecore.edged.pods.spec import REJECTED_PREFIX, PodSpec, PodSpecError, Rejection
from edgecore.edged.pods.status import JSON, pod_status, qos_class
from edgecore.edged.pods.volumes import (
    PROJECTED,
    MountError,
    ObjectGetter,
    VolumeError,
    container_mounts,
    pod_dir,
    prepare_volumes,
    remove_pod_dir,
    resolve_env,
)

log = get_logger("edged")

RESYNC: Final = 2.0
PULL_TIMEOUT: Final = 30.0
StatusSink = Callable[[PodSpec, JSON], Awaitable[None]]
DeletedSink = Callable[[PodSpec], Awaitable[None]]


@dataclass(slots=True)
class _Failure:
    """Repeated failures to start one container (image pull, create, start), for their back-off."""

    count: int
    retry_at: float
    waiting: Waiting
    announced: bool = False  # its back-off event was recorded


class PodWorker:
    def __init__(self, cri: CRIClient, spec: PodSpec, *, host_ip: str, on_status: StatusSink,
                 on_deleted: DeletedSink | None = None, options: RuntimeOptions | None = None,
                 clock: Callable[[], float] = time.time, resync: float = RESYNC,
                 pull_timeout: float = PULL_TIMEOUT, objects: ObjectGetter | None = None,
                 events: EventRecorder | None = None, rejection: Rejection | None = None) -> None:
        self.cri = cri
        self.spec = spec
        self.host_ip = host_ip
        self.options = options or RuntimeOptions()
        self.clock = clock
        self.resync = resync
        self.pull_timeout = pull_timeout
        self.objects = objects  # the configMaps/secrets MetaManager stored, for volumes and env
        self.events = events
        self.rejection = rejection or spec.rejected  # admission refused it: it never runs
        self.last_status: JSON | None = None
        self._on_status = on_status
        self._on_deleted = on_deleted
        self._wake = asyncio.Event()
        self._failures: dict[str, _Failure] = {}
        self._transitions: dict[str, tuple[str, str]] = {}  # condition type -> (status, lastTransitionTime)
        self._probers: dict[str, Prober] = {}  # container id -> the task probing that running instance
        self._killed: dict[str, str] = {}  # container id -> why a probe had it killed, for its terminated state
        self._names: dict[str, str] = {}  # container id -> its spec name, as last observed (for events)
        self._crash_announced: set[str] = set()  # exited container ids whose restart back-off event went up

    def update(self, spec: PodSpec) -> None:
        """A new desired state (a delete is `spec.deleting`); a deleting pod never comes back to life."""
        self.spec = spec if not self.spec.deleting else self.spec
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    result = await self.sync_once()
                except CRIError as exc:
                    log.warning("pod sync failed; retrying", pod=self.spec.key, err=exc)
                    result = Plan()
                if result.finished:
                    await asyncio.to_thread(remove_pod_dir, self.options.root_dir, self.spec.uid)
                    if self._on_deleted is not None:
                        await self._on_deleted(self.spec)
                    return
                await self._sleep(result.wake_at)
        finally:
            await self._stop_probers(set(self._probers))

    async def _sleep(self, wake_at: float | None) -> None:
        delay = self.resync if wake_at is None else max(0.0, min(self.resync, wake_at - self.clock()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()

    @property
    def active(self) -> bool:
        """Admitted, not being deleted and not finished: its host ports are taken."""
        phase = self.last_status.get("phase") if self.last_status else None
        return self.rejection is None and not self.spec.deleting and phase not in ("Succeeded", "Failed")

    def _event(self, spec: PodSpec, event_type: EventType, reason: str, message: str, container: str = "") -> None:
        if self.events is not None:
            self.events.pod(spec, event_type, reason, message, container)

    async def sync_once(self) -> Plan:
        """One round: observe, plan, apply; then observe again and report the status if it changed."""
        spec = self.spec
        if self.rejection is not None and not spec.deleting:
            return await self._sync_rejected(spec, self.rejection)
        unhealthy = {cid: p.state.failed for cid, p in self._probers.items() if p.state.failed}
        before = await observe(self.cri, spec.uid)
        self._names = {c.id: c.name for c in before.containers}
        result = plan(spec, before, self.clock(), unhealthy)
        if result.finished:
            return result
        self._announce_crash_backoff(spec, before, result)
        if result.actions:
            await self._apply(spec, result)
        observed = await observe(self.cri, spec.uid)
        await self._sync_probers(spec, observed)
        if not spec.deleting:
            await self._refresh_volumes(spec)
            await self._report(spec, observed, result)
        return result

    async def _sync_rejected(self, spec: PodSpec, rejection: Rejection) -> Plan:
        """Nothing of a rejected pod may run (kubelet kills what it finds); report it Failed, once."""
        observed = await observe(self.cri, spec.uid)
        self._names = {c.id: c.name for c in observed.containers}
        teardown = plan(None, observed, self.clock())
        if teardown.actions:
            await self._apply(spec, teardown)
        status: JSON = {"phase": "Failed", "reason": rejection.reason,
                        "message": f"{REJECTED_PREFIX}{rejection.message}", "hostIP": self.host_ip,
                        "hostIPs": [{"ip": self.host_ip}] if self.host_ip else [], "qosClass": qos_class(spec)}
        if status != self.last_status:
            if self.last_status is None and spec.rejected is None:  # newly rejected, not reloaded after a restart
                log.info("pod rejected at admission", pod=spec.key, reason=rejection.reason,
                         detail=rejection.message)
                self._event(spec, WARNING, rejection.reason, rejection.message)
            self.last_status = status
            await self._on_status(spec, status)
        return Plan()

    def _announce_crash_backoff(self, spec: PodSpec, observed: Observed, result: Plan) -> None:
        """kubelet's BackOff event, once per exited instance waiting out its restart back-off."""
        for name, waiting in result.waiting.items():
            latest = observed.latest(name)
            if waiting.reason != "CrashLoopBackOff" or latest is None or latest.id in self._crash_announced:
                continue
            self._crash_announced.add(latest.id)
            self._event(spec, WARNING, "BackOff",
                        f"Back-off restarting failed container {name} in pod {spec.name}_{spec.namespace}"
                        f"({spec.uid})", name)
        self._crash_announced &= {c.id for c in observed.containers}

    # ---- probes -----------------------------------------------------------------------------------

    async def _sync_probers(self, spec: PodSpec, observed: Observed) -> None:
        """One prober per running, probed app container instance; none at all for a deleting pod."""
        wanted = {c.id: c for c in observed.containers if not spec.deleting and self._probed(spec, c)}
        await self._stop_probers(set(self._probers) - wanted.keys())
        for container_id, container in wanted.items():
            if container_id not in self._probers:
                self._probers[container_id] = self._prober(spec, container, observed)
        present = {c.id for c in observed.containers}
        self._killed = {cid: why for cid, why in self._killed.items() if cid in present}

    @staticmethod
    def _probed(spec: PodSpec, container: ObservedContainer) -> bool:
        wanted = spec.container(container.name)
        return (container.state == RunState.RUNNING and wanted is not None and wanted.probed
                and not spec.is_init(container.name))

    def _prober(self, spec: PodSpec, container: ObservedContainer, observed: Observed) -> Prober:
        wanted = spec.container(container.name)
        assert wanted is not None
        sandbox = observed.ready_sandbox
        host = self.host_ip if spec.host_network else (sandbox.ip if sandbox else "")

        def unhealthy(kind: Kind, message: str) -> None:
            self._event(spec, WARNING, "Unhealthy", f"{str(kind).capitalize()} probe failed: {message}", wanted.name)

        return Prober(self.cri, wanted, container.id, started_at=container.started_at, host=host, clock=self.clock,
                      on_change=self._wake.set, pod=spec.key, on_failure=unhealthy)

    async def _stop_probers(self, container_ids: set[str]) -> None:
        tasks = []
        for container_id in container_ids:
            prober = self._probers.pop(container_id)
            if prober.state.failed:
                self._killed[container_id] = prober.state.failed
            tasks.append(prober.cancel())
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _refresh_volumes(self, spec: PodSpec) -> None:
        """Rewrite configMap/secret/downwardAPI volumes whose content changed (running containers see it)."""
        if not any(v.kind in PROJECTED for v in spec.volumes):
            return
        if not await asyncio.to_thread(pod_dir(self.options.root_dir, spec.uid).is_dir):
            return
        try:
            await prepare_volumes(spec, self.options.root_dir, self.objects, only_projected=True)
        except (VolumeError, OSError) as exc:
            log.v(2).info("pod volumes not refreshed", pod=spec.key, err=exc)

    # ---- applying ---------------------------------------------------------------------------------

    async def _apply(self, spec: PodSpec, result: Plan) -> None:
        sandbox: tuple[str, PodSandboxConfig] | None = None
        for action in result.actions:
            if isinstance(action, RunSandbox):
                sandbox = await self._run_sandbox(spec, action)
            elif isinstance(action, StartContainer):
                sandbox = sandbox or await self._current_sandbox(spec)
                if sandbox is not None:
                    await self._start(spec, action, sandbox, result)
            else:
                if isinstance(action, StopContainer):
                    self._announce_kill(spec, action.container_id)
                await self._teardown_step(action)

    async def _run_sandbox(self, spec: PodSpec, action: RunSandbox) -> tuple[str, PodSandboxConfig]:
        if action.attempt > 0:
            self._event(spec, NORMAL, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
        config = sandbox_config(spec, action.attempt, self.options)
        try:
            sandbox_id = await self.cri.run_pod_sandbox(config, runtime_handler=self.options.runtime_handler)
        except CRIError as exc:
            self._event(spec, WARNING, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc.details or exc}")
            raise
        log.info("pod sandbox started", pod=spec.key, sandbox=sandbox_id[:13], attempt=action.attempt)
        return sandbox_id, config

    def _announce_kill(self, spec: PodSpec, container_id: str) -> None:
        name = self._names.get(container_id)
        if name is None:
            return
        prober = self._probers.get(container_id)
        kind = prober.state.failed_kind if prober is not None else None
        message = (f"Container {name} failed {kind} probe, will be restarted" if kind is not None
                   else f"Stopping container {name}")
        self._event(spec, NORMAL, "Killing", message, name)

    async def _current_sandbox(self, spec: PodSpec) -> tuple[str, PodSandboxConfig] | None:
        ready = (await observe(self.cri, spec.uid)).ready_sandbox
        return (ready.id, sandbox_config(spec, ready.attempt, self.options)) if ready else None

    async def _teardown_step(self, action: Action) -> None:
        # NOT_FOUND means it is already gone, which is what the step wanted.
        try:
            if isinstance(action, StopContainer):
                await self.cri.stop_container(action.container_id, action.grace_seconds)
            elif isinstance(action, RemoveContainer):
                await self.cri.remove_container(action.container_id)
            elif isinstance(action, KillSandbox):
                with contextlib.suppress(CRIError):  # containerd 1.6: NOT_FOUND once removed
                    await self.cri.stop_pod_sandbox(action.sandbox_id)
                await self.cri.remove_pod_sandbox(action.sandbox_id)
        except CRIError as exc:
            if not exc.not_found:
                raise

    async def _start(self, spec: PodSpec, action: StartContainer, sandbox: tuple[str, PodSandboxConfig],
                     result: Plan) -> None:
        container = spec.container(action.name)
        failure = self._failures.get(action.name)
        if container is None:
            return
        if failure is not None and self.clock() < failure.retry_at:
            result.waiting[action.name] = _backoff_reason(failure.waiting)
            result.wake_no_later_than(failure.retry_at)
            self._announce_pull_backoff(spec, action.name, container.image, failure)
            return
        problem = await self._ensure_image(spec, action.name, container.image)
        if problem is None:
            problem = await self._create_and_start(spec, action, sandbox)
        if problem is None:
            self._failures.pop(action.name, None)
            return
        count = failure.count + 1 if failure else 1
        retry_at = self.clock() + backoff_delay(count)
        self._failures[action.name] = _Failure(count, retry_at, problem)
        result.waiting[action.name] = problem
        result.wake_no_later_than(retry_at)
        log.warning("container not started", pod=spec.key, container=action.name, reason=problem.reason,
                    detail=problem.message[:200])

    def _announce_pull_backoff(self, spec: PodSpec, name: str, image: str, failure: _Failure) -> None:
        if failure.announced or failure.waiting.reason != "ErrImagePull":
            return
        failure.announced = True
        self._event(spec, NORMAL, "BackOff", f'Back-off pulling image "{image}"', name)
        self._event(spec, WARNING, "Failed", "Error: ImagePullBackOff", name)

    async def _ensure_image(self, spec: PodSpec, name: str, image: str) -> Waiting | None:
        if await self.cri.image_status(image) is not None:
            self._event(spec, NORMAL, "Pulled", f'Container image "{image}" already present on machine', name)
            return None
        self._event(spec, NORMAL, "Pulling", f'Pulling image "{image}"', name)
        began = time.monotonic()
        try:
            await self.cri.pull_image(image, rpc_timeout=self.pull_timeout)
        except CRIError as exc:
            detail = exc.details or str(exc)
            self._event(spec, WARNING, "Failed", f'Failed to pull image "{image}": {detail}', name)
            self._event(spec, WARNING, "Failed", "Error: ErrImagePull", name)
            return Waiting(reason="ErrImagePull", message=detail)
        self._event(spec, NORMAL, "Pulled",
                    f'Successfully pulled image "{image}" in {time.monotonic() - began:.3f}s', name)
        return None

    async def _create_and_start(self, spec: PodSpec, action: StartContainer,
                                sandbox: tuple[str, PodSandboxConfig]) -> Waiting | None:
        container = spec.container(action.name)
        assert container is not None
        try:
            dirs = await prepare_volumes(spec, self.options.root_dir, self.objects)
        except MountError as exc:
            self._event(spec, WARNING, "FailedMount", f'MountVolume.SetUp failed for volume "{exc.volume}" : {exc}')
            return Waiting(reason="CreateContainerConfigError", message=str(exc))
        try:
            mounts = await container_mounts(container, spec, dirs)
            envs = await resolve_env(spec, container, self.objects, pod_ip=await self._pod_ip(spec, sandbox[0]),
                                     host_ip=self.host_ip)
            config = container_config(spec, container, action.attempt, envs=envs, mounts=mounts)
            check_probes(container)
        except (VolumeError, PodSpecError, OSError) as exc:
            return self._failed(spec, action.name, Waiting(reason="CreateContainerConfigError", message=str(exc)))
        try:
            container_id = await self.cri.create_container(sandbox[0], config, sandbox[1])
        except CRIError as exc:
            return self._failed(spec, action.name, Waiting(reason="CreateContainerError", message=exc.details))
        self._event(spec, NORMAL, "Created", f"Created container {action.name}", action.name)
        try:
            await self.cri.start_container(container_id)
        except CRIError as exc:
            # A created-but-unstartable container would be replaced at once next round: remove it here
            # and let the back-off decide when to try again.
            with contextlib.suppress(CRIError):
                await self.cri.remove_container(container_id)
            return self._failed(spec, action.name, Waiting(reason="RunContainerError", message=exc.details))
        self._event(spec, NORMAL, "Started", f"Started container {action.name}", action.name)
        log.info("container started", pod=spec.key, container=action.name, id=container_id[:13],
                 attempt=action.attempt)
        return None

    def _failed(self, spec: PodSpec, name: str, waiting: Waiting) -> Waiting:
        """kubelet's Failed event for a container that could not be created or started: the error itself."""
        self._event(spec, WARNING, "Failed", f"Error: {waiting.message or waiting.reason}", name)
        return waiting

    async def _pod_ip(self, spec: PodSpec, sandbox_id: str) -> str:
        wanted = any(v.source and "status.podIP" in str(v.source) for c in spec.containers for v in c.env_vars)
        if not wanted:
            return ""
        if spec.host_network:
            return self.host_ip
        status = await self.cri.pod_sandbox_status(sandbox_id)
        return status.network.ip if status.network else ""

    # ---- reporting --------------------------------------------------------------------------------

    async def _report(self, spec: PodSpec, observed: Observed, result: Plan) -> None:
        waiting = dict(result.waiting)
        for name, failure in self._failures.items():
            waiting.setdefault(name, _backoff_reason(failure.waiting) if self.clock() < failure.retry_at
                               else failure.waiting)
        health = {cid: prober.state.health for cid, prober in self._probers.items()}
        status = pod_status(spec, observed, waiting, self.host_ip, self.clock(), health=health, messages=self._killed)
        self._keep_transition_times(status)
        if status != self.last_status:
            self.last_status = status
            await self._on_status(spec, status)

    def _keep_transition_times(self, status: JSON) -> None:
        # A condition's lastTransitionTime changes only when its status does.
        for condition in status["conditions"]:
            previous = self._transitions.get(condition["type"])
            if previous is not None and previous[0] == condition["status"]:
                condition["lastTransitionTime"] = previous[1]
            self._transitions[condition["type"]] = (condition["status"], condition["lastTransitionTime"])
        started = self.last_status.get("startTime") if self.last_status else None
        if started:
            status["startTime"] = started


def _backoff_reason(waiting: Waiting) -> Waiting:
    if waiting.reason == "ErrImagePull":
        return Waiting(reason="ImagePullBackOff", message=waiting.message)
    return waiting
