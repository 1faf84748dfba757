"""scripts/quickstart as a user runs it (paths moved to scratch): up twice, down twice, nothing left."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from common.hostsvc.process import PidRecord, pid_alive
from tests.fixtures.hollow_node import wait_for
from tests.fixtures.mosquitto import Broker, free_port
from tests.fixtures.paths import require_binary, require_root

ROOT = Path(__file__).resolve().parents[2]


def quickstart(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([str(ROOT / "scripts/quickstart"), *args], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"quickstart {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def scratch_env(base: Path, tag: str, mqtt_port: int) -> dict[str, str]:
    require_root("quickstart")
    for binary in ("containerd", "runc", "ctr", "mosquitto"):
        require_binary(binary)
    return {"KE_ETC": str(base / "etc"), "KE_VAR": str(base / "var"), "KE_LOGS": str(base / "log"),
            "KE_RUN": str(base / "run"), "KE_CTD_TAG": tag, "KE_MQTT_PORT": str(mqtt_port),
            "KE_NODE_NAME": f"qs-{tag}", "KE_APISERVER_PORT": str(free_port()),
            "KE_CLOUDHUB_PORT": str(free_port()), "KE_CLOUDHUB_HTTPS_PORT": str(free_port()),
            "KE_STREAM_PORT": str(free_port()), "KE_TUNNEL_PORT": str(free_port()),
            "KE_METASERVER_PORT": str(free_port()), "KE_MONITOR_PORT": str(free_port()),
            "KE_EDGE_MONITOR_PORT": str(free_port())}


def test_quickstart_up_up_down_down_leaves_nothing_behind(state_dir: Path, run_id: str) -> None:
    base = state_dir / "qs"
    env = scratch_env(base, f"q{run_id}", free_port())
    pidfiles = {name: base / "run" / f"{name}.pid" for name in ("controlplane", "cloudcore", "edgecore", "mapper")}
    pidfiles["containerd"] = base / "var/containerd/containerd.pid"
    pidfiles["mosquitto"] = base / "var/mosquitto/mosquitto.pid"
    try:
        first = quickstart(env)
        for name in ("containerd", "mosquitto", "controlplane", "cloudcore", "edgecore", "mapper"):
            assert f"{name}: running pid" in first, first
        assert f"export KUBECONFIG={base}/etc/admin.kubeconfig" in first
        assert re.search(rf"^\s+qs-q{run_id}\s+Ready\s+agent,edge\s", first, re.MULTILINE), first  # get nodes
        assert "objectsyncs.reliablesyncs.kubeedge.io created" in first
        assert re.search(r"http://[\d.]+:8080/ answers: hello from hello-edge-\S+ at the edge", first), first
        assert re.search(r"kubectl logs hello-edge-\S+:\n    serving /tmp on :8080\n", first), first
        assert re.search(r"cat /tmp/index.html:\n    hello from hello-edge-\S+ at the edge\n", first), first
        assert re.search(r"thermometer-01 reports temperature: -?[\d.]+ degC", first), first
        assert "docker.io/local/busybox:1.0" in first and "docker.io/local/pause:1.0" in first
        pids = {name: PidRecord.read(path) for name, path in pidfiles.items()}
        assert all(record is not None for record in pids.values())
        assert (base / "etc/config/edgecore.yaml").exists() and (base / "etc/certs/server.crt").exists()
        assert f'node="qs-q{run_id}"' in (base / "log/edgecore.log").read_text()
        wait_for(lambda: '"connected to cloudcore"' in (base / "log/edgecore.log").read_text())
        wait_for(lambda: f'"node connected" node="qs-q{run_id}"' in (base / "log/cloudcore.log").read_text())
        # the cloud's desired value reaches the mapper over DMI, which applies it and reports it back
        kubectl = [require_binary("kubectl"), "--kubeconfig", str(base / "etc/admin.kubeconfig")]
        subprocess.run([*kubectl, "patch", "device", "thermometer-01", "--type=json", "-p",
                        '[{"op":"replace","path":"/spec/properties/1/desired/value","value":"27.5"}]'],
                       check=True, capture_output=True, timeout=30)
        threshold = [*kubectl, "get", "device", "thermometer-01", "-o",
                     'jsonpath={.status.twins[?(@.propertyName=="threshold")].reported.value}']
        wait_for(lambda: subprocess.run(threshold, capture_output=True, text=True, timeout=30).stdout == "27.5")

        second = quickstart(env)  # idempotent: the same daemons keep running
        assert {name: PidRecord.read(path) for name, path in pidfiles.items()} == pids
        assert "already running" in second
    finally:
        quickstart(env, "down")
    quickstart(env, "down")  # a second down is harmless
    for name, record in pids.items():
        assert record is not None and not pid_alive(record.pid), f"{name} still running"
        assert not pidfiles[name].exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"keq{run_id}" not in links
    assert str(base) not in Path("/proc/mounts").read_text()


def test_quickstart_uses_a_broker_already_on_its_port(state_dir: Path, run_id: str,
                                                     mosquitto: Broker) -> None:
    base = state_dir / "qs-broker"
    env = scratch_env(base, f"b{run_id}", mosquitto.port)
    try:
        out = quickstart(env)
        assert f"a broker already listens on 127.0.0.1:{mosquitto.port}" in out
        assert "edgecore: running pid" in out
        assert not (base / "var/mosquitto/mosquitto.pid").exists()
    finally:
        quickstart(env, "down")
    assert pid_alive(mosquitto.pid)  # not ours to stop
