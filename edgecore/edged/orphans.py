"""Orphan clean-up, as kubelet's housekeeping does it: sandboxes and containers carrying kubelet's pod-uid
label whose pod edged does not know are stopped and removed, and so are pod directories under the kubelet
root (`<root>/pods/<uid>`) without a known pod. Orphans are left by a pod deleted while edgecore was down
(the cloud's delete reached SQLite, never a worker) or by a crash in the middle of a teardown.

One sweep runs right after the stored pods are loaded, then one every `SWEEP_INTERVAL`. The known uids are
read after the runtime and the pod directories are listed: a pod's worker is registered before it creates
anything, so whatever the lists show of a pod known by then is never taken for an orphan. A sweep that
cannot list the runtime removes nothing (pod directories included: without the runtime's view they cannot
be judged).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Final

from common.log import get_logger
from edgecore.cri import CRIClient, CRIError
from edgecore.edged.pods.spec import LABEL_NODE_NAME, LABEL_POD_UID
from edgecore.edged.pods.volumes import pod_dir

log = get_logger("edged")

SWEEP_INTERVAL: Final = 60.0
KnownUids = Callable[[], Collection[str]]


async def sweep(cri: CRIClient, known: KnownUids, root: Path, node: str = "") -> set[str]:
    """Remove everything of pods not in `known()`; the uids of the pods removed. With `node`, sandboxes and
    containers labelled for another node are left alone (edgecores sharing one runtime)."""
    try:
        containers = [c for c in await cri.list_containers() if _ours(c.labels, node)]
        sandboxes = [s for s in await cri.list_pod_sandbox() if _ours(s.labels, node)]
    except CRIError as exc:
        log.warning("runtime not listed; orphan clean-up skipped", err=exc)
        return set()
    dirs = await asyncio.to_thread(_pod_dirs, root)
    alive = set(known())
    removed: set[str] = set()
    for container in containers:
        uid = container.labels.get(LABEL_POD_UID)
        if uid and uid not in alive and await _removed(cri.remove_container(container.id), container.id):
            removed.add(uid)
    for sandbox in sandboxes:
        uid = sandbox.labels.get(LABEL_POD_UID)
        if uid and uid not in alive and await _removed(_remove_sandbox(cri, sandbox.id), sandbox.id):
            removed.add(uid)
    for uid in dirs - alive:
        await asyncio.to_thread(shutil.rmtree, pod_dir(root, uid), ignore_errors=True)
        removed.add(uid)
    if removed:
        log.info("orphaned pods removed", uids=",".join(sorted(removed)))
    return removed


async def sweep_forever(cri: CRIClient, known: KnownUids, root: Path, node: str = "",
                        interval: float = SWEEP_INTERVAL) -> None:
    while True:
        await sweep(cri, known, root, node)
        await asyncio.sleep(interval)


def _ours(labels: Mapping[str, str], node: str) -> bool:
    """Not another node's: unlabelled objects (made before the label existed) count as ours."""
    owner = labels.get(LABEL_NODE_NAME)
    return not node or owner is None or owner == node


async def _remove_sandbox(cri: CRIClient, sandbox_id: str) -> None:
    try:  # containerd 1.6 answers NOT_FOUND once a sandbox is removed
        await cri.stop_pod_sandbox(sandbox_id)
    except CRIError as exc:
        if not exc.not_found:
            raise
    await cri.remove_pod_sandbox(sandbox_id)  # its containers go with it


async def _removed(step: Awaitable[None], object_id: str) -> bool:
    """Await one removal; False if it failed (NOT_FOUND: someone else removed it, which is as good)."""
    try:
        await step
    except CRIError as exc:
        if exc.not_found:
            return True
        log.warning("orphan not removed; the next sweep retries", id=object_id[:13], err=exc)
        return False
    return True


def _pod_dirs(root: Path) -> set[str]:
    """The uids that have a directory under <root>/pods."""
    try:
        return {entry.name for entry in pod_dir(root, "").iterdir() if entry.is_dir()}
    except FileNotFoundError:
        return set()
