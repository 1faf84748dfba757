"""Read one pod's sandboxes and containers from the runtime, by the pod uid label, into planner terms."""

from __future__ import annotations

from edgecore.cri import CRIClient, CRIError
from edgecore.cri.types import ContainerFilter, ContainerState, PodSandboxFilter, PodSandboxState
from edgecore.edged.pods.planner import Observed, ObservedContainer, ObservedSandbox, RunState
from edgecore.edged.pods.spec import LABEL_CONTAINER_NAME, LABEL_POD_UID

_STATES = {ContainerState.CONTAINER_CREATED: RunState.CREATED, ContainerState.CONTAINER_RUNNING: RunState.RUNNING,
           ContainerState.CONTAINER_EXITED: RunState.EXITED}
_NS_PER_S = 1e9


async def observe(cri: CRIClient, uid: str) -> Observed:
    selector = {LABEL_POD_UID: uid}
    sandboxes = [await _sandbox(cri, s.id, s.state, s.metadata.attempt if s.metadata else 0)
                 for s in await cri.list_pod_sandbox(PodSandboxFilter(label_selector=selector))]
    containers: list[ObservedContainer] = []
    for listed in await cri.list_containers(ContainerFilter(label_selector=selector)):
        try:
            status = await cri.container_status(listed.id)
        except CRIError as exc:
            if exc.not_found:  # removed between the list and the status call
                continue
            raise
        name = listed.labels.get(LABEL_CONTAINER_NAME) or (listed.metadata.name if listed.metadata else "")
        containers.append(ObservedContainer(
            id=listed.id, name=name, sandbox_id=listed.pod_sandbox_id,
            attempt=status.metadata.attempt if status.metadata else 0,
            state=_STATES.get(status.state, RunState.UNKNOWN), exit_code=status.exit_code, reason=status.reason,
            started_at=status.started_at / _NS_PER_S, finished_at=status.finished_at / _NS_PER_S,
            image=status.image_ref))
    return Observed(sandboxes=tuple(sandboxes), containers=tuple(containers))


async def _sandbox(cri: CRIClient, sandbox_id: str, state: PodSandboxState, attempt: int) -> ObservedSandbox:
    ready = state == PodSandboxState.SANDBOX_READY
    ip = ""
    if ready:  # only the status carries the IP
        ip = (await cri.pod_sandbox_status(sandbox_id)).ip
    return ObservedSandbox(id=sandbox_id, ready=ready, attempt=attempt, ip=ip)
