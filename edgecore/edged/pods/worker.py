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
from edgecore.edged.pods.probes import Prober, check_probes
from edgecore.edged.pods.spec import PodSpec, PodSpecError
from edgecore.edged.pods.status import JSON, pod_status
from edgecore.edged.pods.volumes import (
    PROJECTED,
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


class PodWorker:
    def __init__(self, cri: CRIClient, spec: PodSpec, *, host_ip: str, on_status: StatusSink,
                 on_deleted: DeletedSink | None = None, options: RuntimeOptions | None = None,
                 clock: Callable[[], float] = time.time, resync: float = RESYNC,
                 pull_timeout: float = PULL_TIMEOUT, objects: ObjectGetter | None = None) -> None:
        self.cri = cri
        self.spec = spec
        self.host_ip = host_ip
        self.options = options or RuntimeOptions()
        self.clock = clock
        self.resync = resync
        self.pull_timeout = pull_timeout
        self.objects = objects  # the configMaps/secrets MetaManager stored, for volumes and env
        self.last_status: JSON | None = None
        self._on_status = on_status
        self._on_deleted = on_deleted
        self._wake = asyncio.Event()
        self._failures: dict[str, _Failure] = {}
        self._transitions: dict[str, tuple[str, str]] = {}  # condition type -> (status, lastTransitionTime)
        self._probers: dict[str, Prober] = {}  # container id -> the task probing that running instance
        self._killed: dict[str, str] = {}  # container id -> why a probe had it killed, for its terminated state

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

    async def sync_once(self) -> Plan:
        """One round: observe, plan, apply; then observe again and report the status if it changed."""
        spec = self.spec
        unhealthy = {cid: p.state.failed for cid, p in self._probers.items() if p.state.failed}
        result = plan(spec, await observe(self.cri, spec.uid), self.clock(), unhealthy)
        if result.finished:
            return result
        if result.actions:
            await self._apply(spec, result)
        observed = await observe(self.cri, spec.uid)
        await self._sync_probers(spec, observed)
        if not spec.deleting:
            await self._refresh_volumes(spec)
            await self._report(spec, observed, result)
        return result

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
        return Prober(self.cri, wanted, container.id, started_at=container.started_at, host=host, clock=self.clock,
                      on_change=self._wake.set, pod=spec.key)

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
                config = sandbox_config(spec, action.attempt, self.options)
                sandbox = (await self.cri.run_pod_sandbox(config, runtime_handler=self.options.runtime_handler),
                           config)
                log.info("pod sandbox started", pod=spec.key, sandbox=sandbox[0][:13], attempt=action.attempt)
            elif isinstance(action, StartContainer):
                sandbox = sandbox or await self._current_sandbox(spec)
                if sandbox is not None:
                    await self._start(spec, action, sandbox, result)
            else:
                await self._teardown_step(action)

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
            return
        problem = await self._ensure_image(container.image)
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

    async def _ensure_image(self, image: str) -> Waiting | None:
        if await self.cri.image_status(image) is not None:
            return None
        try:
            await self.cri.pull_image(image, rpc_timeout=self.pull_timeout)
        except CRIError as exc:
            return Waiting(reason="ErrImagePull", message=exc.details or str(exc))
        return None

    async def _create_and_start(self, spec: PodSpec, action: StartContainer,
                                sandbox: tuple[str, PodSandboxConfig]) -> Waiting | None:
        container = spec.container(action.name)
        assert container is not None
        try:
            dirs = await prepare_volumes(spec, self.options.root_dir, self.objects)
            mounts = await container_mounts(container, spec, dirs)
            envs = await resolve_env(spec, container, self.objects, pod_ip=await self._pod_ip(spec, sandbox[0]),
                                     host_ip=self.host_ip)
            config = container_config(spec, container, action.attempt, envs=envs, mounts=mounts)
            check_probes(container)
        except (VolumeError, PodSpecError, OSError) as exc:
            return Waiting(reason="CreateContainerConfigError", message=str(exc))
        try:
            container_id = await self.cri.create_container(sandbox[0], config, sandbox[1])
        except CRIError as exc:
            return Waiting(reason="CreateContainerError", message=exc.details)
        try:
            await self.cri.start_container(container_id)
        except CRIError as exc:
            # A created-but-unstartable container would be replaced at once next round: remove it here
            # and let the back-off decide when to try again.
            with contextlib.suppress(CRIError):
                await self.cri.remove_container(container_id)
            return Waiting(reason="RunContainerError", message=exc.details)
        log.info("container started", pod=spec.key, container=action.name, id=container_id[:13],
                 attempt=action.attempt)
        return None

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
