"""Edged's pod workers against the real containerd + runc of the `containerd` fixture (local images only).

Every pod a test makes carries the test's own label; the sandbox gets the pod's labels, so a fixture
removes everything the test left (RemovePodSandbox takes the containers with it), pass or fail. Every
wait is bounded by `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.bus import ModuleBus
from common.config.edgecore import Edged as EdgedConfig
from common.constants import EdgeModule, Group, Op
from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF
from common.message import Message
from common.modules import ModuleContext
from edgecore.cri import CRIClient
from edgecore.cri.types import ContainerFilter, ContainerState, PodSandboxFilter, PodSandboxState
from edgecore.edged.module import EdgedModule
from edgecore.edged.pods.configs import RuntimeOptions
from edgecore.edged.pods.spec import LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_UID, PodSpec, parse_pod
from edgecore.edged.pods.status import JSON
from edgecore.edged.pods.worker import PodWorker
from edgecore.metamanager.store import MetaChange, MetaStore

pytestmark = pytest.mark.root

TEST_LABEL = "kubeedge-py.test/edged"
NODE = "edge-test"
HOST_IP = "192.0.2.2"
BOUND = 30.0


@dataclass
class Kit:
    cri: CRIClient
    label: str
    options: RuntimeOptions
    statuses: list[JSON] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def pod(self, name: str, command: list[str], *, host_network: bool = False, policy: str = "Always",
            image: str = BUSYBOX_REF) -> dict[str, Any]:
        return {
            "metadata": {"uid": str(uuid.uuid4()), "name": f"{name}-{self.label}", "namespace": "ke-test",
                         "labels": {TEST_LABEL: self.label}},
            "spec": {"nodeName": NODE, "hostNetwork": host_network, "restartPolicy": policy,
                     "terminationGracePeriodSeconds": 2,
                     "containers": [{"name": "app", "image": image, "command": command,
                                     "env": [{"name": "GREETING", "value": "hi"}], "workingDir": "/tmp"}]},
        }

    def worker(self, spec: PodSpec, cri: CRIClient | None = None) -> PodWorker:
        async def on_status(_: PodSpec, status: JSON) -> None:
            self.statuses.append(status)

        async def on_deleted(deleted: PodSpec) -> None:
            self.deleted.append(deleted.uid)

        return PodWorker(cri or self.cri, spec, host_ip=HOST_IP, on_status=on_status, on_deleted=on_deleted,
                         options=self.options, resync=0.5, pull_timeout=10)

    async def until(self, check: Callable[[JSON], bool]) -> JSON:
        async with asyncio.timeout(BOUND):
            while True:
                found = next((s for s in reversed(self.statuses) if check(s)), None)
                if found is not None:
                    return found
                await asyncio.sleep(0.05)

    async def leftovers(self) -> tuple[list[str], list[str]]:
        sandboxes = await self.cri.list_pod_sandbox(PodSandboxFilter(label_selector={TEST_LABEL: self.label}))
        containers = [c.id for s in sandboxes
                      for c in await self.cri.list_containers(ContainerFilter(pod_sandbox_id=s.id))]
        return [s.id for s in sandboxes], containers


def running(status: JSON) -> bool:
    return bool(status["phase"] == "Running" and status["containerStatuses"][0]["ready"])


@pytest.fixture
async def cri(containerd: ContainerdLayout) -> AsyncIterator[CRIClient]:
    async with CRIClient(f"unix://{containerd.socket}") as client:
        yield client


@pytest.fixture
async def kit(cri: CRIClient, run_id: str, tmp_path: Path) -> AsyncIterator[Kit]:
    # The test's own kubelet root: an Edged started here sweeps unknown pod dirs under it, never /var/lib/kubelet.
    made = Kit(cri=cri, label=f"{run_id}-{uuid.uuid4().hex[:6]}",
               options=RuntimeOptions(log_root=tmp_path / "pods", root_dir=tmp_path / "kubelet"))
    try:
        yield made
    finally:
        sandbox_ids, _ = await made.leftovers()
        for sandbox_id in sandbox_ids:
            with contextlib.suppress(Exception):
                await cri.stop_pod_sandbox(sandbox_id)
            await cri.remove_pod_sandbox(sandbox_id)
        assert await made.leftovers() == ([], []), "sandboxes or containers survived the clean-up"


@contextlib.asynccontextmanager
async def running_task(coro: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, BOUND)


@pytest.mark.parametrize("host_network", [False, True], ids=["pod-network", "host-network"])
async def test_pod_runs_reports_running_and_deletes_clean(
    kit: Kit, cri: CRIClient, containerd: ContainerdLayout, host_network: bool
) -> None:
    spec = parse_pod(kit.pod("run", ["sh", "-c", "echo $GREETING from $(pwd); exec sleep 3600"],
                             host_network=host_network))
    worker = kit.worker(spec)
    async with running_task(worker.run()) as task:
        status = await kit.until(running)
        ip = ipaddress.ip_address(status["podIP"])
        if host_network:
            assert str(ip) == HOST_IP
        else:
            assert ip in ipaddress.ip_network(containerd.subnet)
        assert status["hostIP"] == HOST_IP
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
        app = status["containerStatuses"][0]
        assert app["restartCount"] == 0 and "running" in app["state"]

        (sandbox,) = await cri.list_pod_sandbox(PodSandboxFilter(label_selector={LABEL_POD_UID: spec.uid}))
        assert sandbox.state == PodSandboxState.SANDBOX_READY
        assert sandbox.labels[LABEL_POD_NAME] == spec.name and sandbox.labels[TEST_LABEL] == kit.label
        (container,) = await cri.list_containers(ContainerFilter(label_selector={LABEL_POD_UID: spec.uid}))
        assert container.state == ContainerState.CONTAINER_RUNNING
        assert container.labels[LABEL_CONTAINER_NAME] == "app"
        assert app["containerID"] == f"containerd://{container.id}"
        echoed = await cri.exec_sync(container.id, ["sh", "-c", "echo $GREETING; pwd"])
        assert echoed.stdout == b"hi\n/tmp\n"

        worker.update(dataclasses.replace(spec, deleting=True))
        async with asyncio.timeout(BOUND):
            await task
    assert kit.deleted == [spec.uid]
    assert await kit.leftovers() == ([], [])


async def test_missing_image_waits_with_err_image_pull_not_a_hang(kit: Kit) -> None:
    spec = parse_pod(kit.pod("noimage", ["true"], host_network=True, image="docker.io/local/not-imported:0.0"))
    async with running_task(kit.worker(spec).run()):
        status = await kit.until(lambda s: "waiting" in s["containerStatuses"][0]["state"]
                                 and s["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull")
    assert status["phase"] == "Pending"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"


async def test_never_restarted_pod_ends_failed_with_its_exit_code(kit: Kit) -> None:
    spec = parse_pod(kit.pod("fail", ["sh", "-c", "exit 3"], host_network=True, policy="Never"))
    async with running_task(kit.worker(spec).run()):
        status = await kit.until(lambda s: s["phase"] == "Failed")
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert status["containerStatuses"][0]["restartCount"] == 0


async def test_a_second_edged_adopts_running_pods_from_sqlite(
    kit: Kit, containerd: ContainerdLayout, tmp_path: Path
) -> None:
    """edgecore restarted: a new Edged loads the pod from SQLite and finds its container running, unrestarted."""
    pod = kit.pod("adopt", ["sleep", "3600"])
    store = await MetaStore.open(tmp_path / "edge.db")
    try:
        key = f"ke-test/pod/{pod['metadata']['name']}"
        await store.apply([MetaChange(key, "pod", orjson.dumps(pod).decode(), 1)])
        first = await _edged_until_running(containerd, store, kit.options)
        second = await _edged_until_running(containerd, store, kit.options)
    finally:
        await store.close()
    one, two = first["containerStatuses"][0], second["containerStatuses"][0]
    assert one["containerID"] == two["containerID"]
    assert (one["restartCount"], two["restartCount"]) == (0, 0)
    assert two["state"]["running"]["startedAt"] == one["state"]["running"]["startedAt"]
    _, containers = await kit.leftovers()
    assert [f"containerd://{c}" for c in containers] == [one["containerID"]]


async def _edged_until_running(containerd: ContainerdLayout, store: MetaStore, options: RuntimeOptions) -> JSON:
    """Run one Edged (own bus, own CRI client) until it reports the stored pod Running; then stop it."""
    bus = ModuleBus()
    meta = bus.register(EdgeModule.METAMANAGER, Group.META)
    config = EdgedConfig.model_validate({"hostnameOverride": NODE, "nodeIP": HOST_IP})
    async with CRIClient(f"unix://{containerd.socket}") as cri:
        edged = EdgedModule(config, cri=cri, store=store, options=options)
        ctx = ModuleContext(bus, bus.register(EdgeModule.EDGED, Group.EDGED))
        async with running_task(edged.run(ctx)), asyncio.timeout(BOUND):
            while True:
                message: Message = await meta.get()
                if (message.operation == Op.UPDATE and "/podstatus/" in message.resource
                        and running(message.content["Status"])):
                    return dict(message.content["Status"])
