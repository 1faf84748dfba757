"""The node's pod workers, one per pod uid, all owned by the TaskGroup the manager is given.

A worker's unexpected failure (a bug, not a CRI error: those the worker retries itself) is logged and
ends only that pod's worker, so edged keeps serving the other pods; the next update for that pod starts
a fresh worker, which adopts whatever the runtime still runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from common.log import get_logger
from edgecore.cri import CRIClient
from edgecore.edged.pods.configs import RuntimeOptions
from edgecore.edged.pods.spec import PodSpec
from edgecore.edged.pods.volumes import ObjectGetter
from edgecore.edged.pods.worker import RESYNC, DeletedSink, PodWorker, StatusSink

log = get_logger("edged")


class PodManager:
    def __init__(self, tasks: asyncio.TaskGroup, cri: CRIClient, *, host_ip: str, on_status: StatusSink,
                 on_deleted: DeletedSink, options: RuntimeOptions | None = None, resync: float = RESYNC,
                 objects: ObjectGetter | None = None) -> None:
        self.cri = cri
        self.host_ip = host_ip
        self.options = options or RuntimeOptions()
        self.resync = resync
        self.objects = objects
        self.workers: dict[str, PodWorker] = {}
        self._tasks = tasks
        self._on_status = on_status
        self._on_deleted = on_deleted

    def load(self, specs: Iterable[PodSpec]) -> None:
        for spec in specs:
            self.apply(spec)

    def apply(self, spec: PodSpec) -> None:
        """Start a worker for a new pod, or hand a known one its new spec (deleting ones included)."""
        worker = self.workers.get(spec.uid)
        if worker is not None:
            worker.update(spec)
            return
        worker = PodWorker(self.cri, spec, host_ip=self.host_ip, on_status=self._on_status,
                           on_deleted=self._on_deleted, options=self.options, resync=self.resync, objects=self.objects)
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
