"""`kubectl logs` on an edge pod through the control plane, cloudcore's CloudStream and the edge's EdgeStream:
real control plane, cloudcore and edgecore (edged on the `containerd` fixture's runtime) as separate processes.
The API server's pods/log reaches CloudStream's stream server (the Node's endpoint annotation), which relays
the request over the node's tunnel; EdgeStream reads the container's CRI log file."""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF
from common.streamframes import ENDPOINT_ANNOTATION
from tests.e2e.test_edge_pods import wait
from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.daemons import Daemon
from tests.fixtures.mosquitto import free_port
from tests.fixtures.paths import require_binary

pytestmark = pytest.mark.timeout(240)


@contextlib.contextmanager
def cloud_and_edge_with_stream(tmp_path: Path, containerd: ContainerdLayout, node: str
                               ) -> Iterator[ControlPlaneProcess]:
    plane = ControlPlaneProcess(tmp_path / "cp")
    ws, https, tunnel, stream = free_port(), free_port(), free_port(), free_port()
    cloud = Daemon("cloudcore", tmp_path / "cloudcore.yaml", tmp_path / "cloudcore.log")
    edge = Daemon("edgecore", tmp_path / "edgecore.yaml", tmp_path / "edgecore.log")
    try:
        plane.start()
        cloud.config.write_text(yaml.safe_dump({
            "kubeAPIConfig": {"kubeConfig": str(plane.kubeconfig)},
            "modules": {
                "cloudHub": {
                    "advertiseAddress": ["127.0.0.1"],
                    "tlsCAFile": str(tmp_path / "cloud/ca.crt"), "tlsCAKeyFile": str(tmp_path / "cloud/ca.key"),
                    "tlsCertFile": str(tmp_path / "cloud/server.crt"),
                    "tlsPrivateKeyFile": str(tmp_path / "cloud/server.key"),
                    "unixsocket": {"address": f"unix://{tmp_path}/kubeedge.sock"},
                    "websocket": {"address": "127.0.0.1", "port": ws},
                    "https": {"address": "127.0.0.1", "port": https}},
                "cloudStream": {"enable": True, "tunnelPort": tunnel, "streamPort": stream,
                                "tlsStreamCAFile": str(plane.data_dir / "pki/ca.crt"),
                                "tlsStreamCertFile": str(tmp_path / "none.crt"),
                                "tlsStreamPrivateKeyFile": str(tmp_path / "none.key")}}}))
        cloud.start()
        cloud.wait_log('"cloudstream listening"')
        token = base64.b64decode(plane.kubectl("get", "secret", "tokensecret", "-n", "kubeedge", "-o",
                                               "jsonpath={.data.tokendata}").stdout).decode()
        certs = {"tlsTunnelCAFile": str(tmp_path / "edge/ca/rootCA.crt"),
                 "tlsTunnelCertFile": str(tmp_path / "edge/certs/server.crt"),
                 "tlsTunnelPrivateKeyFile": str(tmp_path / "edge/certs/server.key")}
        edge.config.write_text(yaml.safe_dump({
            "database": {"dataSource": str(tmp_path / "edge/edgecore.db")},
            "modules": {
                "edged": {"hostnameOverride": node, "nodeIP": "127.0.0.1", "tailoredKubeletConfig": {
                    "containerRuntimeEndpoint": f"unix://{containerd.socket}",
                    "imageServiceEndpoint": f"unix://{containerd.socket}", "nodeStatusUpdateFrequency": "2s"}},
                "edgeHub": {
                    "heartbeat": 2, "token": token, "httpServer": f"https://127.0.0.1:{https}",
                    "tlsCaFile": certs["tlsTunnelCAFile"], "tlsCertFile": certs["tlsTunnelCertFile"],
                    "tlsPrivateKeyFile": certs["tlsTunnelPrivateKeyFile"],
                    "websocket": {"enable": True, "server": f"127.0.0.1:{ws}"},
                    "quic": {"enable": False, "server": "127.0.0.1:1"}},
                "edgeStream": {"enable": True, "server": f"127.0.0.1:{tunnel}", **certs}}}))
        edge.start()
        edge.wait_log('"connected to cloudcore"', timeout=60)
        edge.wait_log('"stream tunnel connected"', timeout=60)
        yield plane
    finally:
        edge.stop()
        cloud.stop()
        plane.stop()


def test_kubectl_logs_tail_and_follow_reach_the_edge_pod(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
    node, name = f"edge-stream-{run_id}", f"talker-{run_id}"
    with cloud_and_edge_with_stream(tmp_path, containerd, node) as plane:
        wait(lambda: "True" in plane.kubectl("get", "node", node, "-o",
                                             "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                             check=False).stdout, "edge node Ready")
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
