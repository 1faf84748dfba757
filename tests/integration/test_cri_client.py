"""edgecore.cri.CRIClient against the real containerd + runc of the `containerd` fixture (local images only).

Every test labels what it creates with its own unique value and a fixture removes every sandbox with
that label afterwards, pass or fail (RemovePodSandbox also removes the sandbox's containers). Every
wait is bounded: the client's deadlines, plus `asyncio.timeout` around the calls that must not hang.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF, PAUSE_REF
from edgecore.cri import CRIClient, CRIError
from edgecore.cri.types import (
    ContainerConfig,
    ContainerFilter,
    ContainerMetadata,
    ContainerState,
    ImageSpec,
    LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext,
    NamespaceMode,
    NamespaceOption,
    PodSandboxConfig,
    PodSandboxFilter,
    PodSandboxMetadata,
    PodSandboxState,
)

pytestmark = pytest.mark.root

TEST_LABEL = "kubeedge-py.test/cri"
MISSING_REF = "docker.io/local/not-imported:0.0"
BOUND = 30.0  # no single step of these tests may take longer


@dataclass
class Pods:
    """Builds configs for one test; everything it names carries the test's label."""

    cri: CRIClient
    label: str
    log_dir: Path

    @property
    def labels(self) -> dict[str, str]:
        return {TEST_LABEL: self.label}

    def sandbox(self, name: str, *, host_network: bool) -> PodSandboxConfig:
        network = NamespaceMode.NODE if host_network else NamespaceMode.POD
        return PodSandboxConfig(
            metadata=PodSandboxMetadata(name=f"{name}-{self.label}", uid=uuid.uuid4().hex, namespace="ke-test"),
            # runtime.md: with network NODE containerd 1.6 shares the host's UTS namespace, and runc refuses
            # to set a hostname there, so a host-network sandbox must have none (kubelet does the same).
            hostname="" if host_network else name,
            log_directory=str(self.log_dir / name),
            labels=self.labels,
            linux=LinuxPodSandboxConfig(security_context=LinuxSandboxSecurityContext(
                namespace_options=NamespaceOption(network=network, pid=NamespaceMode.CONTAINER))),
        )

    def container(self, name: str, command: list[str], image: str = BUSYBOX_REF) -> ContainerConfig:
        return ContainerConfig(
            metadata=ContainerMetadata(name=name), image=ImageSpec(image=image), command=command,
            labels=self.labels, log_path=f"{name}/0.log",
        )

    async def run(self, name: str, command: list[str], *, host_network: bool) -> tuple[str, str, PodSandboxConfig]:
        """A started sandbox with one started container: (sandbox id, container id, sandbox config)."""
        config = self.sandbox(name, host_network=host_network)
        sandbox_id = await self.cri.run_pod_sandbox(config)
        container_id = await self.cri.create_container(sandbox_id, self.container(name, command), config)
        await self.cri.start_container(container_id)
        return sandbox_id, container_id, config

    async def leftovers(self) -> tuple[list[str], list[str]]:
        sandboxes = await self.cri.list_pod_sandbox(PodSandboxFilter(label_selector=self.labels))
        containers = await self.cri.list_containers(ContainerFilter(label_selector=self.labels))
        return [s.id for s in sandboxes], [c.id for c in containers]


@pytest.fixture
async def cri(containerd: ContainerdLayout) -> AsyncIterator[CRIClient]:
    async with CRIClient(f"unix://{containerd.socket}") as client:
        yield client


@pytest.fixture
async def pods(cri: CRIClient, run_id: str, tmp_path: Path) -> AsyncIterator[Pods]:
    kit = Pods(cri=cri, label=f"{run_id}-{uuid.uuid4().hex[:6]}", log_dir=tmp_path / "pods")
    try:
        yield kit
    finally:
        # Whatever the test left, pass or fail: stop and remove every sandbox carrying its label.
        sandbox_ids, _ = await kit.leftovers()
        for sandbox_id in sandbox_ids:
            await cri.stop_pod_sandbox(sandbox_id)
            await cri.remove_pod_sandbox(sandbox_id)
        assert await kit.leftovers() == ([], []), "sandboxes or containers survived the clean-up"


async def test_version_and_status(cri: CRIClient) -> None:
    version = await cri.version()
    assert version.runtime_name == "containerd"
    assert version.runtime_api_version == "v1"
    assert version.runtime_version
    status = await cri.status()
    assert status.ready("RuntimeReady")
    # The fixture writes its bridge conflist before containerd starts, so the pod network is ready.
    assert status.ready("NetworkReady"), status.conditions


@pytest.mark.parametrize("host_network", [True, False], ids=["host-network", "pod-network"])
async def test_pod_lifecycle(
    pods: Pods, cri: CRIClient, containerd: ContainerdLayout, host_network: bool
) -> None:
    """Sandbox -> busybox `sleep 3600` RUNNING -> ExecSync -> stop/remove both -> nothing left."""
    async with asyncio.timeout(BOUND):
        sandbox_id, container_id, _ = await pods.run("life", ["sleep", "3600"], host_network=host_network)

    sandbox = await cri.pod_sandbox_status(sandbox_id)
    assert sandbox.state == PodSandboxState.SANDBOX_READY
    assert sandbox.labels[TEST_LABEL] == pods.label
    if host_network:
        assert sandbox.ip == ""
    else:
        assert ipaddress.ip_address(sandbox.ip) in ipaddress.ip_network(containerd.subnet)
    listed = await cri.list_pod_sandbox(PodSandboxFilter(label_selector=pods.labels))
    assert [s.id for s in listed] == [sandbox_id]

    containers = await cri.list_containers(ContainerFilter(pod_sandbox_id=sandbox_id))
    assert [(c.id, c.state) for c in containers] == [(container_id, ContainerState.CONTAINER_RUNNING)]
    assert containers[0].metadata is not None and containers[0].metadata.name == "life"
    running = await cri.list_containers(ContainerFilter(state=ContainerState.CONTAINER_RUNNING,
                                                        label_selector=pods.labels))
    assert [c.id for c in running] == [container_id]
    status = await cri.container_status(container_id, verbose=True)
    assert status.state == ContainerState.CONTAINER_RUNNING
    assert status.started_at > 0 and status.finished_at == 0
    assert status.image is not None and status.image.image == BUSYBOX_REF
    assert json.loads(status.info["info"])["pid"] > 0

    async with asyncio.timeout(BOUND):
        echoed = await cri.exec_sync(container_id, ["echo", "ok"])
    assert (echoed.stdout, echoed.stderr, echoed.exit_code) == (b"ok\n", b"", 0)
    failed = await cri.exec_sync(container_id, ["sh", "-c", "echo oops >&2; exit 3"])
    assert (failed.stderr, failed.exit_code) == (b"oops\n", 3)
    hostname = (await cri.exec_sync(container_id, ["hostname"])).stdout.decode().strip()
    # Host network shares the node's UTS namespace too (that is why the sandbox has no hostname of its own).
    assert hostname == (socket.gethostname() if host_network else "life")

    stats = await cri.container_stats(container_id)
    assert stats.attributes is not None and stats.attributes.id == container_id
    assert stats.memory is not None and (stats.memory.working_set_bytes or 0) > 0

    async with asyncio.timeout(BOUND):
        await cri.stop_container(container_id, grace_period=5)
    stopped = await cri.container_status(container_id)
    assert stopped.state == ContainerState.CONTAINER_EXITED
    assert stopped.finished_at >= stopped.started_at > 0
    # SIGTERM ends `sleep` (128 + 15): it is not PID 1, the container shares the pod's PID namespace.
    assert (stopped.exit_code, stopped.reason) == (143, "Error"), stopped
    await cri.remove_container(container_id)
    with pytest.raises(CRIError) as gone:
        await cri.container_status(container_id)
    assert gone.value.not_found

    await cri.stop_pod_sandbox(sandbox_id)
    assert (await cri.pod_sandbox_status(sandbox_id)).state == PodSandboxState.SANDBOX_NOTREADY
    await cri.remove_pod_sandbox(sandbox_id)
    assert await pods.leftovers() == ([], [])


async def test_pod_network_pod_answers_the_host(pods: Pods, cri: CRIClient) -> None:
    """A pod on the bridge network is reachable from the host at its pod IP; its output lands in the log."""
    script = "echo serving; echo pod-says-hi > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"
    async with asyncio.timeout(BOUND):
        sandbox_id, container_id, config = await pods.run("web", ["sh", "-c", script], host_network=False)
    ip = (await cri.pod_sandbox_status(sandbox_id)).ip

    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection(ip, 8080)
        try:
            writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()

    body = b""
    async with asyncio.timeout(BOUND):
        while b"pod-says-hi" not in body:
            try:
                body = await fetch()
            except OSError:  # httpd not listening yet
                await asyncio.sleep(0.05)
    status = await cri.container_status(container_id)
    assert status.log_path == str(Path(config.log_directory) / "web" / "0.log")
    # CRI log format: "<RFC3339Nano time> stdout F <line>" (runtime.md).
    lines = (await asyncio.to_thread(Path(status.log_path).read_text)).splitlines()
    assert any(line.split(" ", 3)[1:] == ["stdout", "F", "serving"] for line in lines), lines


async def test_host_network_sandbox_with_a_hostname_fails_clearly(pods: Pods, cri: CRIClient) -> None:
    """runtime.md, failure 1: why host-network sandboxes get no hostname. The error says so, and no hang."""
    config = dataclasses.replace(pods.sandbox("named", host_network=True), hostname="named")
    async with asyncio.timeout(BOUND):
        with pytest.raises(CRIError) as failed:
            await cri.run_pod_sandbox(config)
    assert "hostname" in failed.value.details


async def test_local_images_are_listed_and_have_a_status(cri: CRIClient) -> None:
    busybox = await cri.image_status(BUSYBOX_REF)
    assert busybox is not None
    assert BUSYBOX_REF in busybox.repo_tags and busybox.size > 0 and busybox.id.startswith("sha256:")
    verbose = await cri.image_status(BUSYBOX_REF, verbose=True)
    assert verbose is not None and verbose.info
    listed = {tag for image in await cri.list_images() for tag in image.repo_tags}
    assert {BUSYBOX_REF, PAUSE_REF} <= listed


async def test_a_missing_image_gives_a_clear_error_not_a_hang(pods: Pods, cri: CRIClient) -> None:
    assert await cri.image_status(MISSING_REF) is None
    async with asyncio.timeout(BOUND):
        config = pods.sandbox("noimage", host_network=True)
        sandbox_id = await cri.run_pod_sandbox(config)
        with pytest.raises(CRIError) as create:
            await cri.create_container(sandbox_id, pods.container("app", ["true"], image=MISSING_REF), config)
    assert create.value.method == "CreateContainer"
    assert MISSING_REF in create.value.details or "not-imported" in create.value.details, create.value
    assert await cri.list_containers(ContainerFilter(pod_sandbox_id=sandbox_id)) == []

    # No registry is reachable from these machines; the pull fails fast or at the latest at its deadline.
    async with asyncio.timeout(BOUND):
        with pytest.raises(CRIError) as pull:
            await cri.pull_image(MISSING_REF, rpc_timeout=15)
    assert pull.value.method == "PullImage"
    assert "not-imported" in pull.value.details or pull.value.deadline_exceeded, pull.value


async def test_exec_sync_is_bounded_by_its_timeout(pods: Pods, cri: CRIClient) -> None:
    async with asyncio.timeout(BOUND):
        _, container_id, _ = await pods.run("slow", ["sleep", "3600"], host_network=True)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(CRIError) as slow:
            await cri.exec_sync(container_id, ["sleep", "20"], timeout=1)
    assert loop.time() - started < 10
    assert slow.value.method == "ExecSync"


async def test_errors_carry_the_grpc_code(cri: CRIClient, state_dir: Path) -> None:
    with pytest.raises(CRIError) as sandbox:
        await cri.pod_sandbox_status("0" * 64)
    assert sandbox.value.not_found, sandbox.value
    with pytest.raises(CRIError) as container:
        await cri.container_status("0" * 64)
    assert container.value.not_found and container.value.method == "ContainerStatus"
    # Nobody listens: UNAVAILABLE at once, not a wait for the deadline.
    async with CRIClient(f"unix://{state_dir}/no-such.sock", timeout=20) as absent:
        async with asyncio.timeout(5):
            with pytest.raises(CRIError) as down:
                await absent.version()
    assert down.value.unavailable, down.value
