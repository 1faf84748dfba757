"""Edged's orphan clean-up against the real containerd of the `containerd` fixture: what the runtime and the
kubelet root hold of pods edged does not know goes, what belongs to a known pod stays untouched.

Every pod a test makes carries the test's own label, so the fixture removes whatever a test left.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.bus import Mailbox, ModuleBus
from common.config.edgecore import Edged as EdgedConfig
from common.constants import EdgeModule, Group, Op
from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF
from common.message import Message
from common.modules import ModuleContext
from edgecore.cri import CRIClient
from edgecore.cri.types import ContainerFilter, ContainerState, PodSandboxFilter
from edgecore.edged import orphans
from edgecore.edged.module import EdgedModule
from edgecore.edged.pods.configs import RuntimeOptions, container_config, sandbox_config
from edgecore.edged.pods.spec import LABEL_NODE_NAME, LABEL_POD_UID, PodSpec, parse_pod
from edgecore.edged.pods.volumes import pod_dir
from edgecore.metamanager.store import MetaChange, MetaStore

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

TEST_LABEL = "kubeedge-py.test/orphans"
NODE = "edge-orphans"
BOUND = 30.0


def pod(label: str, name: str) -> dict[str, Any]:
    return {"metadata": {"uid": str(uuid.uuid4()), "name": f"{name}-{label}", "namespace": "ke-test",
                         "labels": {TEST_LABEL: label}},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": BUSYBOX_REF, "command": ["sleep", "3600"]}]}}


async def run_by_hand(cri: CRIClient, spec: PodSpec, options: RuntimeOptions) -> str:
    """A pod started straight through CRI, labelled as edged labels its pods; its container's id."""
    config = sandbox_config(spec, 0, options)
    sandbox = await cri.run_pod_sandbox(config)
    container = await cri.create_container(sandbox, container_config(spec, spec.containers[0], 0), config)
    await cri.start_container(container)
    return container


async def of_uid(cri: CRIClient, uid: str) -> tuple[list[str], list[str]]:
    sandboxes = await cri.list_pod_sandbox(PodSandboxFilter(label_selector={LABEL_POD_UID: uid}))
    containers = await cri.list_containers(ContainerFilter(label_selector={LABEL_POD_UID: uid}))
    return [s.id for s in sandboxes], [c.id for c in containers]


@pytest.fixture
async def cri(containerd: ContainerdLayout, run_id: str) -> AsyncIterator[CRIClient]:
    async with CRIClient(f"unix://{containerd.socket}") as client:
        try:
            yield client
        finally:
            for sandbox in await client.list_pod_sandbox(PodSandboxFilter(label_selector={TEST_LABEL: run_id})):
                with contextlib.suppress(Exception):
                    await client.stop_pod_sandbox(sandbox.id)
                await client.remove_pod_sandbox(sandbox.id)


@pytest.fixture
def options(tmp_path: Path) -> RuntimeOptions:
    return RuntimeOptions(log_root=tmp_path / "logs", root_dir=tmp_path / "kubelet")


async def test_a_sweep_removes_unknown_pods_and_their_dirs_and_keeps_known_ones(
        cri: CRIClient, options: RuntimeOptions, run_id: str) -> None:
    orphan, known = parse_pod(pod(run_id, "orphan")), parse_pod(pod(run_id, "known"))
    await run_by_hand(cri, orphan, options)
    kept = await run_by_hand(cri, known, options)
    stray = str(uuid.uuid4())  # a pod directory with nothing in the runtime
    for uid in (orphan.uid, known.uid, stray):
        (pod_dir(options.root_dir, uid) / "volumes").mkdir(parents=True)

    removed = await orphans.sweep(cri, lambda: {known.uid}, options.root_dir, NODE)

    # other tests' leftovers in this session's containerd may go too: only ours are checked
    assert {orphan.uid, stray} <= removed and known.uid not in removed
    assert await of_uid(cri, orphan.uid) == ([], [])
    (container,) = await cri.list_containers(ContainerFilter(label_selector={LABEL_POD_UID: known.uid}))
    assert (container.id, container.state) == (kept, ContainerState.CONTAINER_RUNNING)
    assert sorted(p.name for p in pod_dir(options.root_dir, "").iterdir()) == [known.uid]
    assert known.uid not in await orphans.sweep(cri, lambda: {known.uid}, options.root_dir, NODE)


async def test_a_sweep_leaves_another_nodes_pods_alone(cri: CRIClient, options: RuntimeOptions, run_id: str) -> None:
    """Two edgecores on one runtime: each sweeps only sandboxes and containers labelled with its node."""
    other = pod(run_id, "other")
    other["spec"]["nodeName"] = f"{NODE}-b"
    theirs, ours = parse_pod(other), parse_pod(pod(run_id, "ours"))
    kept = await run_by_hand(cri, theirs, options)
    await run_by_hand(cri, ours, options)

    removed = await orphans.sweep(cri, set, options.root_dir, NODE)

    assert ours.uid in removed and theirs.uid not in removed
    assert await of_uid(cri, ours.uid) == ([], [])
    (container,) = await cri.list_containers(ContainerFilter(label_selector={LABEL_POD_UID: theirs.uid}))
    assert (container.id, container.labels[LABEL_NODE_NAME]) == (kept, f"{NODE}-b")


async def test_edged_removes_orphans_at_start_and_adopts_its_stored_pods(
        cri: CRIClient, containerd: ContainerdLayout, options: RuntimeOptions, run_id: str, tmp_path: Path) -> None:
    """edgecore was down while the cloud deleted a pod: its containers run on, unknown to the restarted edged."""
    stored, deleted = pod(run_id, "stored"), parse_pod(pod(run_id, "deleted"))
    kept = await run_by_hand(cri, parse_pod(stored), options)
    await run_by_hand(cri, deleted, options)
    store = await MetaStore.open(tmp_path / "edge.db")
    bus = ModuleBus()
    meta = bus.register(EdgeModule.METAMANAGER, Group.META)
    edged = EdgedModule(EdgedConfig.model_validate({"hostnameOverride": NODE, "nodeIP": "127.0.0.1"}),
                        cri=cri, store=store, options=options)
    task: asyncio.Task[None] | None = None
    try:
        await store.apply([MetaChange(f"ke-test/pod/{stored['metadata']['name']}", "pod",
                                      orjson.dumps(stored).decode(), 1)])
        task = asyncio.create_task(edged.run(ModuleContext(bus, bus.register(EdgeModule.EDGED, Group.EDGED))))
        async with asyncio.timeout(BOUND):
            status = await _first_pod_status(meta)
            await _gone(cri, deleted.uid)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, BOUND)
        await store.close()
    (container,) = status["containerStatuses"]
    assert container["containerID"] == f"containerd://{kept}" and container["restartCount"] == 0
    _, containers = await of_uid(cri, stored["metadata"]["uid"])
    assert containers == [kept]


async def _first_pod_status(meta: Mailbox) -> dict[str, Any]:
    while True:
        message: Message = await meta.get()
        if message.operation == Op.UPDATE and "/podstatus/" in message.resource:
            return dict(message.content["Status"])


async def _gone(cri: CRIClient, uid: str) -> None:
    while True:
        if await of_uid(cri, uid) == ([], []):
            return
        await asyncio.sleep(0.1)
