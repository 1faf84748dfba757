"""Edged under faults, with real processes: the control plane, cloudcore and edgecore (tests/fixtures/edge_rig.py)
running pods on a real containerd. The runtime is checked through CRI (edgecore.cri), the host directly
(cgroups, mounts, links), the cloud with kubectl.

- kill -9 of edgecore: the restarted one adopts the running containers (same IDs, no restart);
- the cloud unreachable (cloudcore SIGSTOPped): edged restarts a killed container by itself; once the cloud
  is back it sees the restart, and the node's Lease renewed again;
- a host reboot (tasks, /run, netns, links and cgroups gone; containerd's root kept), with the cloud down:
  the pods come back Running from SQLite alone. On a containerd of the test's own, as it is stopped;
- deleting the Deployment leaves no sandbox, container, cgroup, mount, pod directory or veth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from common.hostsvc import containerd as ctd
from common.hostsvc.containerd import ContainerdLayout
from edgecore.cri import CRIClient
from edgecore.cri.types import ContainerState, PodSandboxState
from edgecore.edged.pods.spec import LABEL_POD_NAME, LABEL_POD_UID
from tests.fixtures.edge_rig import EdgeRig, deployment, edge_rig, wait

pytestmark = [pytest.mark.root, pytest.mark.timeout(150)]

SLEEP = "exec sleep 3600"
T = TypeVar("T")


# -- the runtime as CRI reports it -------------------------------------------------------------------------


def cri(containerd: ContainerdLayout, call: Callable[[CRIClient], Awaitable[T]]) -> T:
    async def run() -> T:
        async with CRIClient(f"unix://{containerd.socket}") as client:
            return await call(client)

    return asyncio.run(run())


@dataclass(frozen=True)
class RuntimePod:
    uid: str
    name: str
    sandboxes: dict[str, PodSandboxState]
    containers: dict[str, tuple[ContainerState, int]]  # id -> (state, attempt)

    @property
    def running(self) -> list[str]:
        return [c for c, (state, _) in self.containers.items() if state == ContainerState.CONTAINER_RUNNING]

    @property
    def ready(self) -> bool:
        return PodSandboxState.SANDBOX_READY in self.sandboxes.values() and len(self.running) == 1


def runtime_pods(containerd: ContainerdLayout, app: str) -> dict[str, RuntimePod]:
    """The app's pods in the runtime by uid (kubelet's labels), from CRI ListPodSandbox and ListContainers."""

    async def listed(client: CRIClient) -> dict[str, RuntimePod]:
        pods: dict[str, RuntimePod] = {}
        for sandbox in await client.list_pod_sandbox():
            if sandbox.labels.get(LABEL_POD_NAME, "").startswith(f"{app}-"):
                uid = sandbox.labels[LABEL_POD_UID]
                pod = pods.setdefault(uid, RuntimePod(uid, sandbox.labels[LABEL_POD_NAME], {}, {}))
                pod.sandboxes[sandbox.id] = sandbox.state
        for container in await client.list_containers():
            pod = pods.get(container.labels.get(LABEL_POD_UID, ""))
            if pod is not None:
                attempt = container.metadata.attempt if container.metadata else 0
                pod.containers[container.id] = (container.state, attempt)
        return pods

    return cri(containerd, listed)


def task_pid(containerd: ContainerdLayout, object_id: str, sandbox: bool = False) -> int:
    """The pid of a running container's (or sandbox's) process, from the verbose CRI status."""

    async def status(client: CRIClient) -> dict[str, str]:
        if sandbox:
            return (await client.pod_sandbox_status(object_id, verbose=True)).info
        return (await client.container_status(object_id, verbose=True)).info

    return int(json.loads(cri(containerd, status)["info"])["pid"])


# -- the cloud's view ----------------------------------------------------------------------------------------


def cloud_containers(rig: EdgeRig, app: str) -> dict[str, tuple[str, int, bool]]:
    """Per pod name: (containerID, restartCount, running) of its one container, as the cloud has it."""
    found = {}
    for pod in rig.pods(app):
        statuses = pod["status"].get("containerStatuses") or []
        if statuses:
            found[pod["metadata"]["name"]] = (statuses[0].get("containerID", ""), statuses[0]["restartCount"],
                                              "running" in statuses[0]["state"])
    return found


def all_running(rig: EdgeRig, app: str, count: int) -> list[dict[str, Any]]:
    pods = rig.pods(app)
    ok = len(pods) == count and all(p["status"].get("phase") == "Running" for p in pods)
    return pods if ok else []


def lease_renewed(rig: EdgeRig) -> str:
    return rig.plane.kubectl("get", "lease", rig.node, "-n", "kube-node-lease", "-o",
                             "jsonpath={.spec.renewTime}", check=False).stdout


@contextlib.contextmanager
def frozen(rig: EdgeRig) -> Iterator[None]:
    """cloudcore SIGSTOPped: the edge's messages are not read, nothing comes down; always continued."""
    assert rig.cloud.proc is not None
    os.kill(rig.cloud.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(rig.cloud.proc.pid, signal.SIGCONT)


# -- (a) kill -9 -----------------------------------------------------------------------------------------------


def test_kill_9_of_edgecore_leaves_the_containers_running_and_unrestarted(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
    node, app = f"edge-kill-{run_id}", f"kill-{run_id}"
    with edge_rig(tmp_path, containerd, node) as rig:
        rig.plane.kubectl("apply", "-f", "-", input_text=deployment(app, node, 2, SLEEP))
        wait(lambda: all_running(rig, app, 2), "2 pods Running in the cloud")
        before = runtime_pods(containerd, app)
        running = sorted(c for pod in before.values() for c in pod.running)
        assert len(running) == 2
        assert sorted(cid.removeprefix("containerd://") for cid, _, _ in cloud_containers(rig, app).values()) \
            == running

        rig.edge.kill()
        rig.start_edge()
        rig.edge.wait_log('"stored pods loaded"', count=2)
        time.sleep(6)  # three re-sync rounds of the restarted edged

        after = runtime_pods(containerd, app)
        assert after.keys() == before.keys()
        assert sorted(c for pod in after.values() for c in pod.running) == running
        assert all(len(pod.containers) == 1 and len(pod.sandboxes) == 1 for pod in after.values())
        cloud = cloud_containers(rig, app)
        assert sorted(cid.removeprefix("containerd://") for cid, _, _ in cloud.values()) == running
        assert [(restarts, up) for _, restarts, up in cloud.values()] == [(0, True), (0, True)]
        assert "container started" not in rig.edge.log.read_text().split('"stored pods loaded"')[-1]


# -- (b) the cloud unreachable ------------------------------------------------------------------------------


def test_edged_restarts_a_killed_container_while_the_cloud_is_unreachable(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
    node, app = f"edge-part-{run_id}", f"part-{run_id}"
    with edge_rig(tmp_path, containerd, node) as rig:
        rig.plane.kubectl("apply", "-f", "-", input_text=deployment(app, node, 1, SLEEP))
        wait(lambda: all_running(rig, app, 1), "pod Running in the cloud")
        renewed = wait(lambda: lease_renewed(rig), "the node's Lease in the cloud", timeout=20)
        (pod,) = runtime_pods(containerd, app).values()
        (first,) = pod.running

        with frozen(rig):
            rig.edge.wait_log('"disconnected from cloudcore"', timeout=30)
            os.kill(task_pid(containerd, first), signal.SIGKILL)
            # restartPolicy Always: the first restart comes 10 s after the exit (the planner's back-off)
            again = wait(lambda: [c for c in runtime_pods(containerd, app)[pod.uid].running if c != first],
                         "container restarted offline", timeout=40)
            assert runtime_pods(containerd, app)[pod.uid].containers[again[0]][1] == 1
            assert rig.edge.log_count('"connected to cloudcore"') == 1  # all of it happened offline

        rig.edge.wait_log('"connected to cloudcore"', count=2, timeout=60)
        (cloud,) = wait(lambda: [c for c in cloud_containers(rig, app).values() if c[1] >= 1 and c[2]],
                        "the restart seen by the cloud", timeout=60)
        assert cloud[0] == f"containerd://{again[0]}"
        wait(lambda: lease_renewed(rig) > renewed, "the Lease renewed after the heal", timeout=40)


# -- (c) a host reboot ----------------------------------------------------------------------------------------


@pytest.fixture
def own_containerd(state_dir: Path, run_id: str) -> Iterator[ContainerdLayout]:
    """A containerd for this test alone: it is stopped and its state wiped, which the session's must not be."""
    layout = ContainerdLayout.from_base(state_dir / "reboot", f"{run_id}rb")
    try:
        ctd.start(layout)
        ctd.ensure_local_images(layout, state_dir / "images")
        yield layout
    finally:
        ctd.teardown(layout)  # by its pidfile: the daemon that runs then is the one started after the reboot


def cgroup_dirs(pid: int) -> list[Path]:
    """The process's cgroup directory in every v1 hierarchy (cgroupfs: the same path in each)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    path = next(line.split(":", 2)[2] for line in lines if line.split(":")[1] == "pids")
    return [d / path.lstrip("/") for d in Path("/sys/fs/cgroup").iterdir() if (d / path.lstrip("/")).is_dir()]


def netns_files_of(pids: list[int]) -> list[Path]:
    """The bind-mounted netns files (/run/netns) of these processes' network namespaces."""
    inodes = {os.stat(f"/proc/{pid}/ns/net").st_ino for pid in pids}
    netns = Path("/run/netns")
    return [f for f in netns.iterdir() if f.stat().st_ino in inodes] if netns.is_dir() else []


def simulate_reboot(layout: ContainerdLayout) -> None:
    """What a reboot takes: every task's processes, containerd and its shims, /run (the state dir: socket, runc
    and shim state, IPAM), the pods' network namespaces with their veths, the bridge, the cgroups. What it
    keeps: containerd's root (images, snapshots, CRI's records of sandboxes and containers)."""
    tasks = ctd.run_ctr(layout, "tasks", "ls", "-q").split()
    pids = [int(line.split()[1]) for line in ctd.run_ctr(layout, "tasks", "ls").splitlines()[1:]]
    assert len(pids) == len(tasks) > 0
    cgroups = [d for pid in pids for d in cgroup_dirs(pid)]
    netns = netns_files_of(pids)
    for pid in pids:  # each is its pid namespace's init: the kernel kills the rest of the namespace
        os.kill(pid, signal.SIGKILL)
    ctd.stop_from_pidfile(layout.pidfile)
    for pid in ctd.shim_pids(layout):
        os.kill(pid, signal.SIGKILL)
    for point in [*ctd.mounts_under([layout.state]), *map(str, netns)]:
        subprocess.run(["umount", "-l", point], check=True, timeout=10)
    for file in netns:
        file.unlink()
    for directory in sorted(cgroups, key=lambda d: len(d.parts), reverse=True):  # the runtime may remove some itself
        wait(lambda d=directory: _cgroup_empty(d), f"{directory} empty", timeout=10)
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()
    shutil.rmtree(layout.state)
    subprocess.run(["ip", "link", "del", layout.bridge], check=True, timeout=10)


def _cgroup_empty(directory: Path) -> bool:
    try:
        return not (directory / "cgroup.procs").read_text().strip()
    except FileNotFoundError:  # already removed
        return True


def test_after_a_host_reboot_the_pods_come_back_from_sqlite_without_the_cloud(
        tmp_path: Path, own_containerd: ContainerdLayout, run_id: str) -> None:
    node, app = f"edge-boot-{run_id}", f"boot-{run_id}"
    with edge_rig(tmp_path, own_containerd, node) as rig:
        rig.plane.kubectl("apply", "-f", "-", input_text=deployment(app, node, 2))
        wait(lambda: all_running(rig, app, 2), "2 pods Running in the cloud")
        before = runtime_pods(own_containerd, app)

        rig.cloud.stop()
        rig.edge.stop()
        simulate_reboot(own_containerd)
        ctd.start(own_containerd)
        rig.start_edge(connected=False)

        def back() -> dict[str, RuntimePod]:
            pods = runtime_pods(own_containerd, app)
            return pods if pods and all(pod.ready for pod in pods.values()) else {}

        after = wait(back, "both pods Running again, from SQLite alone", timeout=60)
        assert after.keys() == before.keys()
        for pod in after.values():
            (container,) = pod.running
            assert container not in before[pod.uid].containers and pod.containers[container][1] == 1
            ready = next(s for s, state in pod.sandboxes.items() if state == PodSandboxState.SANDBOX_READY)
            assert ready not in before[pod.uid].sandboxes
            ip = cri(own_containerd, lambda client, s=ready: client.pod_sandbox_status(s)).ip
            with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as response:
                assert response.read().strip() == b"hello-edge"
        assert rig.edge.log_count('"connected to cloudcore"') == 1  # the second edgecore never reached the cloud

        rig.start_cloud()
        wait(lambda: [c for c in cloud_containers(rig, app).values() if c[1] == 1 and c[2]] if
             len(cloud_containers(rig, app)) == 2 else [], "the cloud sees both pods restarted", timeout=60)


# -- (d) nothing left after a delete --------------------------------------------------------------------------


def veth_of(pid: int) -> str:
    """The host end of the pod's veth: the link whose index is eth0's peer inside the pod's netns."""
    # `ip` asks the kernel in the pod's netns (sysfs would still show the host's): "2: eth0@if17: ..."
    shown = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "link", "show", "eth0"],
                           capture_output=True, text=True, check=True, timeout=10).stdout
    peer = shown.split(":")[1].strip().partition("@if")[2]
    return next((d.name for d in Path("/sys/class/net").iterdir() if (d / "ifindex").read_text().strip() == peer),
                "")


def mounts_mentioning(needles: list[str]) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if any(needle in line for needle in needles)]


def test_deleting_the_deployment_leaves_nothing_of_its_pods(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
    node, app = f"edge-del-{run_id}", f"del-{run_id}"
    with edge_rig(tmp_path, containerd, node) as rig:
        rig.plane.kubectl("apply", "-f", "-", input_text=deployment(app, node, 2,
                                                                   volumes=[{"name": "scratch", "emptyDir": {}}]))
        wait(lambda: all_running(rig, app, 2), "2 pods Running in the cloud")
        pods = runtime_pods(containerd, app)
        ids = [i for pod in pods.values() for i in (*pod.sandboxes, *pod.containers)]
        sandbox_pids = [task_pid(containerd, s, sandbox=True) for pod in pods.values() for s in pod.sandboxes]
        container_pids = [task_pid(containerd, c) for pod in pods.values() for c in pod.running]
        cgroups = [d for pid in sandbox_pids + container_pids for d in cgroup_dirs(pid)]
        veths = [veth_of(pid) for pid in sandbox_pids]
        pod_dirs = [rig.kubelet_root / "pods" / uid for uid in pods]
        assert len(ids) == 4 and cgroups and all(d.is_dir() for d in pod_dirs)
        assert [Path(f"/sys/class/net/{v}/master").resolve().name for v in veths] == [containerd.bridge] * 2
        assert mounts_mentioning(ids)  # the rootfs and shm mounts, which must go too

        rig.plane.kubectl("delete", "deployment", app)
        wait(lambda: not rig.pods(app), "the pods gone from the cloud after the edge confirmed", timeout=60)
        assert runtime_pods(containerd, app) == {}
        assert [d for d in cgroups if d.exists()] == []
        assert mounts_mentioning([*ids, *map(str, pod_dirs)]) == []
        assert [d for d in pod_dirs if d.exists()] == []
        assert [v for v in veths if Path(f"/sys/class/net/{v}").exists()] == []
