"""cloudcore and edgecore as real processes: configs in, certificates and database made, clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def command(program: str, *args: str) -> list[str]:
    return [sys.executable, "-m", program, *args]


def run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(program, *args), cwd=ROOT, capture_output=True, text=True, timeout=30)


def cloudcore_config(tmp: Path) -> Path:
    path = tmp / "cloudcore.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "cloudcore.config.kubeedge.io/v1alpha2", "kind": "CloudCore",
        "modules": {"cloudHub": {
            "advertiseAddress": ["127.0.0.1"], "dnsNames": ["localhost"],
            "tlsCAFile": str(tmp / "ca/rootCA.crt"), "tlsCAKeyFile": str(tmp / "ca/rootCA.key"),
            "tlsCertFile": str(tmp / "certs/server.crt"), "tlsPrivateKeyFile": str(tmp / "certs/server.key"),
            "unixsocket": {"address": f"unix://{tmp}/kubeedge.sock"}}},
    }))
    return path


def edgecore_config(tmp: Path) -> Path:
    path = tmp / "edgecore.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "edgecore.config.kubeedge.io/v1alpha2", "kind": "EdgeCore",
        "database": {"dataSource": str(tmp / "db/edgecore.db")},
        "modules": {"edged": {"hostnameOverride": "edge-e2e"}},
    }))
    return path


def start_and_stop(program: str, config: Path, pidfile: Path) -> str:
    proc = subprocess.Popen(command(program, "--config", str(config), "--pidfile", str(pidfile), "--v=2"),
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "daemon did not write its pidfile in 20 s"
            time.sleep(0.05)
        assert pidfile.read_text().splitlines()[0] == str(proc.pid)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - began < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not pidfile.exists()
    return proc.stderr.read() if proc.stderr else ""


def test_cloudcore_without_a_kubernetes_api_exits_1_naming_the_fix(tmp_path: Path) -> None:
    result = run("cloudcore", "--config", str(cloudcore_config(tmp_path)), "--pidfile", str(tmp_path / "cc.pid"))
    assert result.returncode == 1
    assert "set kubeAPIConfig.kubeConfig" in result.stderr and "cloudcore controlplane" in result.stderr
    assert "Traceback" not in result.stderr


def test_edgecore_opens_its_database_then_stops_on_sigterm(tmp_path: Path) -> None:
    stderr = start_and_stop("edgecore", edgecore_config(tmp_path), tmp_path / "run/edgecore.pid")
    assert 'node="edge-e2e"' in stderr
    assert (tmp_path / "db/edgecore.db").exists()


@pytest.mark.parametrize("program", ["cloudcore", "edgecore"])
def test_defaultconfig_and_minconfig_load_back_unchanged(tmp_path: Path, program: str) -> None:
    from common.config import load_cloudcore, load_edgecore
    load = load_cloudcore if program == "cloudcore" else load_edgecore
    for flag in ("--defaultconfig", "--minconfig"):
        printed = run(program, flag)
        assert printed.returncode == 0 and printed.stderr == ""
        path = tmp_path / f"{program}{flag}.yaml"
        path.write_text(printed.stdout)
        assert yaml.safe_load(printed.stdout)["kind"] in ("CloudCore", "EdgeCore")
        load(path)


def test_wrong_type_exits_1_with_file_line_and_key_path_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "edgecore.yaml"
    config.write_text("apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\nmodules:\n"
                      "  edgeHub:\n    heartbeat: fast\n")
    result = run("edgecore", "--config", str(config))
    assert result.returncode == 1
    assert f"{config}:5: modules.edgeHub.heartbeat" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_key_warns_with_line_and_still_runs(tmp_path: Path) -> None:
    config = edgecore_config(tmp_path)
    config.write_text(config.read_text() + "surprise: 1\n")
    stderr = start_and_stop("edgecore", config, tmp_path / "run/edgecore.pid")
    assert "unknown key surprise" in stderr and "edgecore.yaml:" in stderr


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = run("cloudcore", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: config file {tmp_path}/nope.yaml not exist"


def test_second_instance_refused_by_pidfile(tmp_path: Path) -> None:
    config, pidfile = edgecore_config(tmp_path), tmp_path / "run/edgecore.pid"
    first = subprocess.Popen(command("edgecore", "--config", str(config), "--pidfile", str(pidfile)),
                             cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run("edgecore", "--config", str(config), "--pidfile", str(pidfile))
        assert second.returncode == 1 and f"held by running process {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=5)


def test_version_and_help() -> None:
    for program in ("cloudcore", "edgecore", "keadm"):
        args = ("version",) if program == "keadm" else ("--version",)
        assert "KubeEdge v1.20.0" in run(program, *args).stdout
        assert "usage:" in run(program, "--help").stdout
