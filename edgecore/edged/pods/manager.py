"""The node's pod workers, one per pod uid, all owned by the TaskGroup the manager is given.

A worker's unexpected failure (a bug, not a CRI error: those the worker retries itself) is logged and
ends only that pod's worker, so edged keeps serving the other pods; the next update for that pod starts
a fresh worker, which adopts whatever the runtime still runs.

A pod new to the node goes through admission first (pods.admission): one whose host ports another active
pod holds is rejected, and its worker only reports that (it never creates a sandbox). The pods loaded at
start are admitted in creation order, so the pod that won a port keeps it across edgecore restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from common.log import get_logger
from edgecore.cri import CRIClient
from edgecore.edged.events import EventRecorder
from edgecore.edged.pods.admission import admit
from edgecore.edged.pods.configs import RuntimeOptions
from edgecore.edged.pods.spec import PodSpec
from edgecore.edged.pods.volumes import ObjectGetter
from edgecore.edged.pods.worker import RESYNC, DeletedSink, PodWorker, StatusSink

log = get_logger("edged")


class PodManager:
    def __init__(self, tasks: asyncio.TaskGroup, cri: CRIClient, *, host_ip: str, on_status: StatusSink,
                 on_deleted: DeletedSink, options: RuntimeOptions | None = None, resync: float = RESYNC,
                 objects: ObjectGetter | None = None, events: EventRecorder | None = None) -> None:
        self.cri = cri
        self.host_ip = host_ip
        self.options = options or RuntimeOptions()
        self.resync = resync
        self.objects = objects
        self.events = events
        self.workers: dict[str, PodWorker] = {}
        self._tasks = tasks
        self._on_status = on_status
        self._on_deleted = on_deleted

    def load(self, specs: Iterable[PodSpec]) -> None:
        """The stored pods at start, oldest first (kubelet admits in creation order too)."""
        for spec in sorted(specs, key=lambda s: (s.created, s.namespace, s.name)):
            self.apply(spec)

    def apply(self, spec: PodSpec) -> None:
        """Start a worker for a new pod, or hand a known one its new spec (deleting ones included)."""
        worker = self.workers.get(spec.uid)
        if worker is not None:
            worker.update(spec)
            return
        rejection = None
        if spec.rejected is None and not spec.deleting:
            rejection = admit(spec, (w.spec for w in self.workers.values() if w.active))
        worker = PodWorker(self.cri, spec, host_ip=self.host_ip, on_status=self._on_status,
                           on_deleted=self._on_deleted, options=self.options, resync=self.resync, objects=self.objects,
                           events=self.events, rejection=rejection)
        self.workers[spec.uid] = worker
        self._tasks.create_task(self._run(worker), name=f"edged:pod:{spec.key}")

    def find(self, namespace: str, name: str) -> PodWorker | None:
        return next((w for w in self.workers.values() if (w.spec.namespace, w.spec.name) == (namespace, name)),
                    None)

    async def _run(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        except Exception:
            log.exception("pod worker failed", pod=worker.spec.key, uid=worker.spec.uid)
        finally:
            if self.workers.get(worker.spec.uid) is worker:
                del self.workers[worker.spec.uid]
