"""A Deployment applied with kubectl runs on the edge node's containerd: real control plane, cloudcore,
edgecore (edged with the `containerd` fixture's runtime) as separate processes. The pod is Running in
the cloud with its pod-network IP and answers HTTP there; scaling to 0 removes it everywhere (the cloud's
object after the edge confirmed, and every sandbox and container in containerd)."""

from __future__ import annotations

import ipaddress
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from common.hostsvc.containerd import ContainerdLayout
from tests.fixtures.edge_rig import deployment, edge_rig, wait

pytestmark = pytest.mark.timeout(240)


def test_a_deployment_runs_on_the_edge_and_scaling_to_zero_leaves_nothing(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
    node, app = f"edge-pods-{run_id}", f"hello-{run_id}"
    with edge_rig(tmp_path, containerd, node) as rig:
        rig.plane.kubectl("apply", "-f", "-", input_text=deployment(app, node, 1))

        def running() -> dict[str, Any] | None:
            found = rig.pods(app)
            return found[0] if found and found[0]["status"].get("phase") == "Running" else None

        pod = wait(running, "pod Running in the cloud")
        assert pod["spec"]["nodeName"] == node
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(containerd.subnet)
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["restartCount"] == 0 and "running" in status["state"]
        with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/", timeout=5) as response:
            assert response.read().strip() == b"hello-edge"
        assert len(rig.containers(app)) == 2  # the sandbox and its container, labelled as kubelet does

        rig.plane.kubectl("scale", "deployment", app, "--replicas=0")
        wait(lambda: not rig.pods(app), "pod object gone after the edge confirmed", timeout=60)
        wait(lambda: not rig.containers(app), "no sandbox or container left in containerd", timeout=30)
