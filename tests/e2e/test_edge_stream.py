"""`kubectl logs` on an edge pod through the control plane, cloudcore's CloudStream and the edge's EdgeStream:
real control plane, cloudcore and edgecore (edged on the `containerd` fixture's runtime) as separate processes.
The API server's pods/log reaches CloudStream's stream server (the Node's endpoint annotation), which relays
the request over the node's tunnel; EdgeStream reads the container's CRI log file."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF
from common.streamframes import ENDPOINT_ANNOTATION
from tests.fixtures.edge_rig import edge_rig, wait
from tests.fixtures.paths import require_binary

pytestmark = pytest.mark.timeout(240)


def test_kubectl_logs_tail_and_follow_reach_the_edge_pod(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
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
