"""`kubectl logs` and `kubectl exec` on an edge pod through the control plane, cloudcore's CloudStream and
the edge's EdgeStream: real control plane, cloudcore and edgecore (edged on the `containerd` fixture's runtime)
as separate processes.
The API server's pods/log reaches CloudStream's stream server (the Node's endpoint annotation), which relays
the request over the node's tunnel; EdgeStream reads the container's CRI log file."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import select
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF
from common.streamframes import ENDPOINT_ANNOTATION
from edgecore.cri import CRIClient
from edgecore.edged.pods.configs import RuntimeOptions, container_config, sandbox_config
from edgecore.edged.pods.spec import parse_pod
from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.edge_rig import edge_rig, wait
from tests.fixtures.paths import require_binary

pytestmark = pytest.mark.timeout(240)


async def start_foreign_twin(containerd: ContainerdLayout, tmp_path: Path, name: str) -> str:
    """A pod `default/<name>` with a container `talk` that logged and exited, as another edgecore's edged
    labels its pods (node `someone-else`), started straight through CRI; its sandbox id."""
    spec = parse_pod({"metadata": {"uid": str(uuid.uuid4()), "name": name, "namespace": "default"},
                      "spec": {"nodeName": "someone-else", "hostNetwork": True, "containers": [
                          {"name": "talk", "image": BUSYBOX_REF, "command": ["sh", "-c", "echo not-mine"]}]}})
    options = RuntimeOptions(log_root=tmp_path / "foreign-logs", root_dir=tmp_path / "foreign-kubelet")
    async with CRIClient(f"unix://{containerd.socket}") as cri:
        config = sandbox_config(spec, 0, options)
        sandbox = await cri.run_pod_sandbox(config)
        for attempt in (0, 1):  # two attempts: a "previous" one exists too
            container = await cri.create_container(sandbox, container_config(spec, spec.containers[0], attempt),
                                                   config)
            await cri.start_container(container)
        return sandbox


async def remove_sandbox(containerd: ContainerdLayout, sandbox: str) -> None:
    async with CRIClient(f"unix://{containerd.socket}") as cri:
        await cri.stop_pod_sandbox(sandbox)
        await cri.remove_pod_sandbox(sandbox)


def test_kubectl_logs_tail_and_follow_reach_the_edge_pod(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str, request: pytest.FixtureRequest) -> None:
    node, name = f"edge-stream-{run_id}", f"talker-{run_id}"
    with edge_rig(tmp_path, containerd, node, stream=True) as rig:
        plane = rig.plane
        wait(lambda: ENDPOINT_ANNOTATION in plane.kubectl("get", "node", node, "-o", "json").stdout,
             "node's stream endpoint annotation")
        plane.kubectl("apply", "-f", "-", input_text=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "talk", "image": BUSYBOX_REF,
                "command": ["sh", "-c", "echo first; echo second; sleep 25; "
                                        "while true; do echo tick; sleep 1; done"]}]}}))
        wait(lambda: plane.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}",
                                   check=False).stdout == "Running", "pod Running in the cloud")

        # Another node's pod of the same name and container on this runtime (edgecores may share one): not ours.
        foreign = asyncio.run(start_foreign_twin(containerd, tmp_path, name))
        request.addfinalizer(lambda: asyncio.run(remove_sandbox(containerd, foreign)))
        logs = wait(lambda: plane.kubectl("logs", name, check=False).stdout, "kubectl logs output", timeout=20)
        assert logs == "first\nsecond\n"
        assert plane.kubectl("logs", name, "--tail=1").stdout == "second\n"
        assert plane.kubectl("logs", name, "--tail=0").stdout == ""
        bad = plane.kubectl("logs", name, "-c", "talk", "--previous", check=False)
        assert bad.returncode != 0 and "previous terminated container" in bad.stderr

        follower = subprocess.Popen([require_binary("kubectl"), "--kubeconfig", str(plane.kubeconfig), "logs", "-f",
                                     name], stdout=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in follower.stdout or ():
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        try:
            seen = [lines.get(timeout=10), lines.get(timeout=10)]
            assert seen == ["first\n", "second\n"]
            started = time.monotonic()
            assert lines.get(timeout=45) == "tick\n"  # written after the follow began
            assert time.monotonic() - started > 1
        finally:
            follower.terminate()
            follower.wait(timeout=10)


def test_kubectl_exec_runs_in_the_edge_pod(tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
    """kubectl's WebSocket exec relayed API server -> CloudStream -> tunnel -> EdgeStream -> containerd."""
    node, name = f"edge-exec-{run_id}", f"shell-{run_id}"
    with edge_rig(tmp_path, containerd, node, stream=True) as rig:
        plane = rig.plane
        wait(lambda: ENDPOINT_ANNOTATION in plane.kubectl("get", "node", node, "-o", "json").stdout,
             "node's stream endpoint annotation")
        plane.kubectl("apply", "-f", "-", input_text=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "sh", "image": BUSYBOX_REF, "command": ["sleep", "3600"]}]}}))
        wait(lambda: plane.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}",
                                   check=False).stdout == "Running", "pod Running in the cloud")

        assert plane.kubectl("exec", name, "--", "sh", "-c", "echo ok").stdout == "ok\n"
        failed = plane.kubectl("exec", name, "--", "sh", "-c", "echo oops >&2; exit 3", check=False)
        assert (failed.returncode, failed.stdout) == (3, "") and "oops" in failed.stderr
        assert plane.kubectl("exec", "-i", name, "--", "head", "-n1", input_text="hello\nmore\n").stdout == "hello\n"
        wrong = plane.kubectl("exec", name, "-c", "nope", "--", "true", check=False)
        assert wrong.returncode != 0 and f"container nope is not valid for pod {name}" in wrong.stderr
        assert "hi-3" in _exec_with_terminal(plane, name, b"echo hi-$((1+2)); exit\n")


def _exec_with_terminal(plane: ControlPlaneProcess, pod: str, keys: bytes) -> str:
    """`kubectl exec -it <pod> -- sh` on a pseudo-terminal, typing `keys`; everything the terminal showed."""
    controller, terminal = os.openpty()
    argv = [require_binary("kubectl"), "--kubeconfig", str(plane.kubeconfig), "exec", "-it", pod, "--", "sh"]
    shell = subprocess.Popen(plane._in_netns(argv), stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    try:
        os.write(controller, keys)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the terminal closed: kubectl has left
                    break
                shown += chunk
            elif shell.poll() is not None:
                break
        assert shell.wait(timeout=10) == 0, shown
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait(timeout=10)
        os.close(controller)
    return shown.decode(errors="replace")
