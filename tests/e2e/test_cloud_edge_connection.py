"""The cloud-edge channel as separate processes: control plane, cloudcore, edgecore. The edge gets its
certificate with the join token from the control plane, connects over mutual TLS, and reconnects by
itself after cloudcore restarts."""

from __future__ import annotations

import base64
import stat
import time
from pathlib import Path

import yaml

from common.pki import load_cert, node_name_from_cert
from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.daemons import Daemon
from tests.fixtures.mosquitto import free_port


def test_edge_bootstraps_connects_and_reconnects_after_a_cloudcore_restart(tmp_path: Path) -> None:
    plane = ControlPlaneProcess(tmp_path / "cp")
    plane.start()
    ws_port, https_port = free_port(), free_port()
    cloud_config = tmp_path / "cloudcore.yaml"
    cloud_config.write_text(yaml.safe_dump({
        "kubeAPIConfig": {"kubeConfig": str(plane.kubeconfig)},
        "modules": {"cloudHub": {
            "advertiseAddress": ["127.0.0.1"], "keepaliveInterval": 5,
            "tlsCAFile": str(tmp_path / "cloud/ca.crt"), "tlsCAKeyFile": str(tmp_path / "cloud/ca.key"),
            "tlsCertFile": str(tmp_path / "cloud/server.crt"), "tlsPrivateKeyFile": str(tmp_path / "cloud/server.key"),
            "unixsocket": {"address": f"unix://{tmp_path}/kubeedge.sock"},
            "websocket": {"address": "127.0.0.1", "port": ws_port},
            "https": {"address": "127.0.0.1", "port": https_port}}}}))
    cloud = Daemon("cloudcore", cloud_config, tmp_path / "cloudcore.log")
    edge = Daemon("edgecore", tmp_path / "edgecore.yaml", tmp_path / "edgecore.log")
    try:
        cloud.start()
        cloud.wait_log('"websocket server listening"')
        token = base64.b64decode(plane.kubectl("get", "secret", "tokensecret", "-n", "kubeedge", "-o",
                                               "jsonpath={.data.tokendata}").stdout).decode()
        edge.config.write_text(yaml.safe_dump({
            "database": {"dataSource": str(tmp_path / "edge/edgecore.db")},
            "modules": {"edged": {"hostnameOverride": "edge-e2e"}, "edgeHub": {
                "heartbeat": 1, "token": token, "httpServer": f"https://127.0.0.1:{https_port}",
                "tlsCaFile": str(tmp_path / "edge/ca/rootCA.crt"),
                "tlsCertFile": str(tmp_path / "edge/certs/server.crt"),
                "tlsPrivateKeyFile": str(tmp_path / "edge/certs/server.key"),
                "websocket": {"enable": True, "server": f"127.0.0.1:{ws_port}"},
                "quic": {"enable": False, "server": "127.0.0.1:1"}}}}))
        edge.start()
        edge.wait_log('"connected to cloudcore"')
        cloud.wait_log('"node connected" node="edge-e2e"')
        cert = load_cert(tmp_path / "edge/certs/server.crt")
        assert node_name_from_cert(cert) == "edge-e2e"
        assert stat.S_IMODE((tmp_path / "edge/certs/server.key").stat().st_mode) == 0o600
        assert token not in edge.log.read_text() and token not in cloud.log.read_text()
        edge.wait_log('"cleared edgeHub.token in the config file"')
        assert yaml.safe_load(edge.config.read_text())["modules"]["edgeHub"]["token"] == ""

        began = time.monotonic()
        cloud.stop()
        assert time.monotonic() - began < 5 and cloud.proc is not None and cloud.proc.returncode == 0
        edge.wait_log('"disconnected from cloudcore"')
        cloud.start()
        edge.wait_log('"connected to cloudcore"', count=2, timeout=60)
        cloud.wait_log('"node connected" node="edge-e2e"', count=2)
    finally:
        edge.stop()
        cloud.stop()
        plane.stop()
