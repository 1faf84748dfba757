"""keadm on this host as a user runs it (paths in scratch dirs, free ports, supervised-daemon mode):
init, gettoken and join give a Ready edge node; reset leaves no process and no file; each failure is fast
and names its step, its cause and its fix."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.config.base import first_host_ip
from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.process import PidRecord, pid_alive
from common.pki import create_ca, create_token
from tests.fixtures.hollow_node import wait_for
from tests.fixtures.mosquitto import Broker, free_port
from tests.fixtures.paths import require_binary, require_root

ROOT = Path(__file__).resolve().parents[2]
FAST = 10.0
"""Seconds within which every failure case must be reported."""


@dataclass
class Site:
    """One host's keadm paths (all under `base`) and the cloud's ports."""

    base: Path
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in (
        "ws", "https", "stream", "tunnel", "monitor", "api", "edge_monitor")})

    @property
    def env(self) -> dict[str, str]:
        return {"KE_ETC": str(self.base / "etc"), "KE_VAR": str(self.base / "var"), "KE_LOGS": str(self.base / "log"),
                "KE_RUN": str(self.base / "run"), "KE_SERVICE_MODE": "daemon"}

    def keadm(self, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "keadm", *args], cwd=ROOT, env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def init(self) -> subprocess.CompletedProcess[str]:
        p = self.ports
        return self.keadm("init", "--advertise-address=127.0.0.1", f"--apiserver-port={p['api']}", "--set",
                          f"modules.cloudHub.websocket.port={p['ws']},modules.cloudHub.https.port={p['https']},"
                          f"modules.cloudStream.streamPort={p['stream']},modules.cloudStream.tunnelPort={p['tunnel']},"
                          f"commonConfig.monitorServer.bindAddress=127.0.0.1:{p['monitor']}")

    def join(self, cloud: Site, node: str, token: str, *extra: str, timeout: float = 150
             ) -> subprocess.CompletedProcess[str]:
        c = cloud.ports
        return self.keadm("join", f"--cloudcore-ipport=127.0.0.1:{c['ws']}", f"--certport={c['https']}",
                          f"--edgenode-name={node}", f"--token={token}", "--set",
                          f"commonConfig.monitorServer.bindAddress=127.0.0.1:{self.ports['edge_monitor']},"
                          f"modules.edgeStream.server=127.0.0.1:{c['tunnel']}", *extra, timeout=timeout)

    def leftovers(self) -> list[str]:
        return sorted(str(path.relative_to(self.base)) for path in self.base.rglob("*")) if self.base.exists() else []


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"keadm failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def kubectl(site: Site, *args: str) -> str:
    done = subprocess.run(["kubectl", "--kubeconfig", str(site.base / "etc/admin.kubeconfig"), *args],
                          capture_output=True, text=True, timeout=30)
    return done.stdout if done.returncode == 0 else ""


def _requirements() -> None:
    require_root("keadm on this host")
    for binary in ("kubectl", "containerd", "mosquitto"):
        require_binary(binary)


def test_init_gettoken_join_gives_a_ready_node_and_reset_leaves_nothing(
        state_dir: Path, run_id: str, containerd: ContainerdLayout, mosquitto: Broker) -> None:
    _requirements()
    site = Site(state_dir / "keadm")
    site.base.mkdir()
    node = f"ka-{run_id}"
    names = ("controlplane", "cloudcore", "edgecore")
    pids: dict[str, PidRecord | None] = {}
    try:
        out = ok(site.init())
        for index in range(1, 9):
            assert f"[{index}/8] " in out, out
        assert "objectsyncs.reliablesyncs.kubeedge.io created" in out
        token = ok(site.keadm("gettoken")).strip()
        assert f"keadm join --cloudcore-ipport=127.0.0.1:{site.ports['ws']} --token={token} " \
               f"--certport={site.ports['https']}" in out, out

        out = ok(site.join(site, node, token, f"--remote-runtime-endpoint=unix://{containerd.socket}",
                           "--labels=zone=lab",
                           "--set", f"modules.eventBus.mqttServerExternal=tcp://127.0.0.1:{mosquitto.port},"
                                    "modules.edged.podSandboxImage=docker.io/local/pause:1.0"))
        assert "[8/8] wait for the connection to cloudcore ... ok" in out, out
        assert token not in out and token.split(".")[-1] not in (site.base / "etc/config/edgecore.yaml").read_text()
        wait_for(lambda: kubectl(site, "get", "node", node, "-o",
                                 "jsonpath={.status.conditions[?(@.type=='Ready')].status}") == "True", timeout=60)
        assert kubectl(site, "get", "node", node, "-o", "jsonpath={.metadata.labels.zone}") == "lab"
        pids = {name: PidRecord.read(site.base / "run" / f"{name}.pid") for name in names}
        assert all(record is not None and pid_alive(record.pid) for record in pids.values()), pids
    finally:
        edge = site.keadm("reset", "edge", "--force")
        cloud = site.keadm("reset", "cloud", "--force")
    ok(edge)
    ok(cloud)
    for name, record in pids.items():
        assert record is not None and not pid_alive(record.pid), f"{name} still running"
    assert site.leftovers() == []
    assert "nothing to reset" in ok(site.keadm("reset", "--force"))


@pytest.fixture(scope="module")
def cloud(state_dir: Path) -> Iterator[Site]:
    """One cloud (`keadm init`) for the failure cases."""
    _requirements()
    site = Site(state_dir / "keadm-cloud")
    site.base.mkdir()
    try:
        ok(site.init())
        yield site
    finally:
        ok(site.keadm("reset", "cloud", "--force"))
    assert site.leftovers() == []


def failing(result: subprocess.CompletedProcess[str], started: float, step: str, *words: str) -> str:
    elapsed = time.monotonic() - started
    assert result.returncode != 0, result.stdout
    assert elapsed < FAST, f"took {elapsed:.1f} s:\n{result.stdout}\n{result.stderr}"
    assert f"error: {step}" in result.stderr, result.stderr
    assert "fix: " in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def _edge(state_dir: Path, name: str) -> Iterator[Site]:
    site = Site(state_dir / f"keadm-{name}")
    site.base.mkdir()
    yield site
    ok(site.keadm("reset", "--force"))
    assert site.leftovers() == []


@pytest.fixture
def edge(state_dir: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    yield from _edge(state_dir, request.node.name.removeprefix("test_")[:20])


def test_join_with_a_malformed_token_fails_at_preflight(cloud: Site, edge: Site) -> None:
    started = time.monotonic()
    result = edge.join(cloud, "bad-shape", "not-a-token")
    failing(result, started, "[1/8] preflight", "bad token", "keadm gettoken")


def test_join_with_a_token_signed_by_another_ca_fails_at_the_certificate(cloud: Site, edge: Site) -> None:
    real = ok(cloud.keadm("gettoken")).strip()
    forged = real.split(".")[0] + "." + create_token(create_ca()).split(".", 1)[1]  # right CA hash, wrong key
    started = time.monotonic()
    stderr = failing(edge.join(cloud, "bad-token", forged), started, "[5/8] get the node certificate",
                     "HTTP 401", "signature", "keadm gettoken", "removed the files this run had made")
    assert forged.split(".")[-1] not in stderr
    assert edge.leftovers() == []  # the CA it had fetched is gone again


def test_join_with_a_wrong_ca_hash_fails_at_the_ca(cloud: Site, edge: Site) -> None:
    started = time.monotonic()
    failing(edge.join(cloud, "bad-hash", create_token(create_ca())), started,
            "[3/8] fetch the CA", "expects", "keadm gettoken")


def test_join_to_an_unreachable_cloud_fails_at_reach(cloud: Site, edge: Site) -> None:
    nowhere = Site(cloud.base, {**cloud.ports, "ws": free_port()})
    token = ok(cloud.keadm("gettoken")).strip()
    started = time.monotonic()
    failing(edge.join(nowhere, "lost", token), started, "[2/8] reach cloudcore", "cannot connect",
            "--cloudcore-ipport")


def test_join_with_its_port_in_use_fails_at_preflight(cloud: Site, edge: Site) -> None:
    token = ok(cloud.keadm("gettoken")).strip()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", edge.ports["edge_monitor"]))
        squatter.listen()
        started = time.monotonic()
        failing(edge.join(cloud, "busy", token), started, "[1/8] preflight",
                f"port {edge.ports['edge_monitor']} (edgecore monitor) is already in use", "ss -ltnp")


def test_init_with_its_port_in_use_fails_at_preflight(cloud: Site, edge: Site) -> None:
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", edge.ports["ws"]))
        squatter.listen()
        started = time.monotonic()
        failing(edge.init(), started, "[1/8] preflight",
                f"port {edge.ports['ws']} (cloudHub websocket) is already in use")
    assert not (edge.base / "run/controlplane.pid").exists()


def test_join_through_an_address_missing_from_the_certificate_names_the_cert_ips(cloud: Site, edge: Site) -> None:
    other = first_host_ip()  # the cloud advertises 127.0.0.1 only; cloudcore listens on every address
    if ipaddress.ip_address(other).is_loopback:
        pytest.fail("this host has no non-loopback IPv4 address to join through", pytrace=False)
    token = ok(cloud.keadm("gettoken")).strip()
    c = cloud.ports
    started = time.monotonic()
    result = edge.keadm("join", f"--cloudcore-ipport={other}:{c['ws']}", f"--certport={c['https']}",
                        "--edgenode-name=wrong-ip", f"--token={token}", "--set",
                        f"commonConfig.monitorServer.bindAddress=127.0.0.1:{edge.ports['edge_monitor']}")
    failing(result, started, "[4/8] check that node name", "does not verify", "--advertise-address")
