"""A Deployment applied with kubectl runs on the edge node's containerd: real control plane, cloudcore,
edgecore (edged with the `containerd` fixture's runtime) as separate processes. The pod is Running in
the cloud with its pod-network IP and answers HTTP there; scaling to 0 removes it everywhere (the cloud's
object after the edge confirmed, and every sandbox and container in containerd)."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF
from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.daemons import Daemon
from tests.fixtures.mosquitto import free_port

pytestmark = pytest.mark.timeout(240)


def wait(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s")


@contextlib.contextmanager
def cloud_and_edge(tmp_path: Path, containerd: ContainerdLayout, node: str) -> Iterator[ControlPlaneProcess]:
    plane = ControlPlaneProcess(tmp_path / "cp")
    ws, https = free_port(), free_port()
    cloud = Daemon("cloudcore", tmp_path / "cloudcore.yaml", tmp_path / "cloudcore.log")
    edge = Daemon("edgecore", tmp_path / "edgecore.yaml", tmp_path / "edgecore.log")
    try:
        plane.start()
        cloud.config.write_text(yaml.safe_dump({
            "kubeAPIConfig": {"kubeConfig": str(plane.kubeconfig)},
            "modules": {"cloudHub": {
                "advertiseAddress": ["127.0.0.1"],
                "tlsCAFile": str(tmp_path / "cloud/ca.crt"), "tlsCAKeyFile": str(tmp_path / "cloud/ca.key"),
                "tlsCertFile": str(tmp_path / "cloud/server.crt"),
                "tlsPrivateKeyFile": str(tmp_path / "cloud/server.key"),
                "unixsocket": {"address": f"unix://{tmp_path}/kubeedge.sock"},
                "websocket": {"address": "127.0.0.1", "port": ws}, "https": {"address": "127.0.0.1", "port": https}}}}))
        cloud.start()
        cloud.wait_log('"websocket server listening"')
        token = base64.b64decode(plane.kubectl("get", "secret", "tokensecret", "-n", "kubeedge", "-o",
                                               "jsonpath={.data.tokendata}").stdout).decode()
        edge.config.write_text(yaml.safe_dump({
            "database": {"dataSource": str(tmp_path / "edge/edgecore.db")},
            "modules": {
                "edged": {"hostnameOverride": node, "nodeIP": "127.0.0.1", "tailoredKubeletConfig": {
                    "containerRuntimeEndpoint": f"unix://{containerd.socket}",
                    "imageServiceEndpoint": f"unix://{containerd.socket}", "nodeStatusUpdateFrequency": "2s"}},
                "edgeHub": {
                    "heartbeat": 2, "token": token, "httpServer": f"https://127.0.0.1:{https}",
                    "tlsCaFile": str(tmp_path / "edge/ca/rootCA.crt"),
                    "tlsCertFile": str(tmp_path / "edge/certs/server.crt"),
                    "tlsPrivateKeyFile": str(tmp_path / "edge/certs/server.key"),
                    "websocket": {"enable": True, "server": f"127.0.0.1:{ws}"},
                    "quic": {"enable": False, "server": "127.0.0.1:1"}}}}))
        edge.start()
        edge.wait_log('"connected to cloudcore"', timeout=60)
        yield plane
    finally:
        edge.stop()
        cloud.stop()
        plane.stop()


def deployment(name: str, node: str, replicas: int) -> str:
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                       "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                                "template": {"metadata": {"labels": {"app": name}}, "spec": {
                                    "nodeSelector": {"kubernetes.io/hostname": node},
                                    "terminationGracePeriodSeconds": 2,
                                    "containers": [{"name": "web", "image": BUSYBOX_REF,
                                                    "command": ["sh", "-c", "echo hello-edge > /tmp/index.html && "
                                                                "exec httpd -f -p 8080 -h /tmp"]}]}}}})


def pods(plane: ControlPlaneProcess, app: str) -> list[dict[str, Any]]:
    listed = plane.kubectl("get", "pods", "-l", f"app={app}", "-o", "json", check=False)
    return json.loads(listed.stdout)["items"] if listed.returncode == 0 else []


def containers(containerd: ContainerdLayout, app: str) -> list[str]:
    """Sandboxes and containers in containerd of the app's pods (kubelet's pod-name label)."""
    return subprocess.run(["ctr", "--address", str(containerd.socket), "-n", "k8s.io", "containers", "ls", "-q",
                           f'labels."io.kubernetes.pod.name"~="^{app}-"'],
                          capture_output=True, text=True, timeout=20, check=True).stdout.split()


def test_a_deployment_runs_on_the_edge_and_scaling_to_zero_leaves_nothing(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
    node, app = f"edge-pods-{run_id}", f"hello-{run_id}"
    with cloud_and_edge(tmp_path, containerd, node) as plane:
        wait(lambda: "True" in plane.kubectl("get", "node", node, "-o",
                                             "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                             check=False).stdout, "edge node Ready")
        plane.kubectl("apply", "-f", "-", input_text=deployment(app, node, 1))

        def running() -> dict[str, Any] | None:
            found = pods(plane, app)
            return found[0] if found and found[0]["status"].get("phase") == "Running" else None

        pod = wait(running, "pod Running in the cloud")
        assert pod["spec"]["nodeName"] == node
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(containerd.subnet)
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["restartCount"] == 0 and "running" in status["state"]
        with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/", timeout=5) as response:
            assert response.read().strip() == b"hello-edge"
        assert len(containers(containerd, app)) == 2  # the sandbox and its container, labelled as kubelet does

        plane.kubectl("scale", "deployment", app, "--replicas=0")
        wait(lambda: not pods(plane, app), "pod object gone after the edge confirmed", timeout=60)
        wait(lambda: not containers(containerd, app), "no sandbox or container left in containerd", timeout=30)
