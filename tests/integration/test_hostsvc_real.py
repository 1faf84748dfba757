"""common.hostsvc against the real daemons: mosquitto (plain and TLS), containerd with the local images,
netns pairs, PID-safe stops, crash teardown, and the `python -m common.hostsvc` CLI.

Nothing is mocked. Every wait is bounded, and every test removes what it made (processes by PID, netns,
bridges, mounts).
"""

from __future__ import annotations

import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from common.hostsvc import containerd as ctd
from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.netns import NetnsPair, exec_argv, link_exists, netns_exists
from common.hostsvc.ociimage import BUSYBOX_REF, PAUSE_REF
from common.hostsvc.process import (
    Daemon,
    DaemonError,
    HostServiceError,
    PidRecord,
    StopOutcome,
    is_running,
    pid_alive,
    run_cmd,
    stop_from_pidfile,
)
from tests.fixtures.mosquitto import Broker, TlsBroker, free_port
from tests.fixtures.paths import require_binary, require_root

ROOT = Path(__file__).resolve().parents[2]
WAIT = 5.0


@pytest.fixture
def root_state_dir(request: pytest.FixtureRequest) -> Path:
    """`state_dir`, after failing clearly (not with a PermissionError on /run) when not root."""
    require_root(request.node.name)
    state_dir: Path = request.getfixturevalue("state_dir")
    return state_dir


# --- mosquitto -------------------------------------------------------------------------------------


@contextmanager
def mqtt_client(
    host: str, port: int, *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> Iterator[tuple[mqtt.Client, queue.Queue[mqtt.MQTTMessage]]]:
    """A connected paho client (network loop in its thread) and the queue its messages land in."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ke-test-{uuid.uuid4().hex[:8]}")
    if ca is not None:
        client.tls_set(
            ca_certs=str(ca),
            certfile=str(cert) if cert else None,
            keyfile=str(key) if key else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, reason, _p: connected.set() if not reason.is_failure else None
    client.on_message = lambda _c, _u, message: received.put(message)
    client.connect(host, port, keepalive=10)
    client.loop_start()
    try:
        assert connected.wait(WAIT), f"no CONNACK from {host}:{port} within {WAIT} s"
        yield client, received
    finally:
        client.disconnect()
        client.loop_stop()


def round_trip(sub: mqtt.Client, inbox: queue.Queue[mqtt.MQTTMessage], pub: mqtt.Client) -> None:
    """Subscribe (QoS 1, wait for SUBACK), publish QoS 1 (wait for PUBACK), receive it."""
    topic = f"ke-test/{uuid.uuid4().hex}/events"
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_args: subscribed.set()
    sub.subscribe(topic, qos=1)
    assert subscribed.wait(WAIT), "no SUBACK"
    info = pub.publish(topic, b'{"op":"update"}', qos=1)
    info.wait_for_publish(timeout=WAIT)
    assert info.is_published(), "no PUBACK"
    message = inbox.get(timeout=WAIT)
    assert (message.topic, message.payload, message.qos) == (topic, b'{"op":"update"}', 1)


def test_mosquitto_plain_qos1_round_trip(mosquitto: Broker) -> None:
    assert pid_alive(mosquitto.pid)
    with (
        mqtt_client(mosquitto.host, mosquitto.port) as (sub, inbox),
        mqtt_client(mosquitto.host, mosquitto.port) as (pub, _),
    ):
        round_trip(sub, inbox, pub)


def test_mosquitto_tls_round_trip_with_and_without_client_cert(mosquitto_tls: TlsBroker) -> None:
    b = mosquitto_tls
    with (
        mqtt_client(b.host, b.tls_port, ca=b.ca) as (sub, inbox),
        mqtt_client(b.host, b.tls_port, ca=b.ca, cert=b.client_cert, key=b.client_key) as (pub, _),
    ):
        round_trip(sub, inbox, pub)


def test_plain_client_on_the_tls_port_never_connects(mosquitto_tls: TlsBroker) -> None:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="ke-test-plain-on-tls", reconnect_on_failure=False
    )
    connected, dropped = threading.Event(), threading.Event()
    client.on_connect = lambda *_args: connected.set()
    client.on_disconnect = lambda *_args: dropped.set()
    client.connect(mosquitto_tls.host, mosquitto_tls.tls_port, keepalive=10)
    client.loop_start()
    try:
        assert dropped.wait(WAIT), "the TLS listener kept a plain-text client"
        assert not connected.is_set()
    finally:
        client.disconnect()
        client.loop_stop()


def test_mosquitto_tls_broker_also_serves_plain(mosquitto_tls: TlsBroker) -> None:
    with (
        mqtt_client(mosquitto_tls.host, mosquitto_tls.port) as (sub, inbox),
        mqtt_client(mosquitto_tls.host, mosquitto_tls.port) as (pub, _),
    ):
        round_trip(sub, inbox, pub)


# --- containerd -----------------------------------------------------------------------------------


@pytest.mark.root
def test_containerd_answers_ctr_version(containerd: ContainerdLayout) -> None:
    out = ctd.run_ctr(containerd, "version", namespace=None)
    assert "Server:" in out and "1.6" in out
    assert is_running(containerd.pidfile) is not None


@pytest.mark.root
def test_both_local_images_are_in_the_cri_namespace(containerd: ContainerdLayout) -> None:
    rows = [line.split() for line in ctd.run_ctr(containerd, "images", "list").splitlines()[1:]]
    managed = {row[0] for row in rows if "io.cri-containerd.image=managed" in row}
    assert {BUSYBOX_REF, PAUSE_REF} <= managed
    plugins = [
        line.split() for line in ctd.run_ctr(containerd, "plugins", "list", namespace=None).splitlines()
    ]
    assert any(row[:2] == ["io.containerd.grpc.v1", "cri"] and row[-1] == "ok" for row in plugins)


@pytest.mark.root
def test_ctr_run_busybox_prints_hi(containerd: ContainerdLayout, run_id: str) -> None:
    name = f"ke-hi-{run_id}-{uuid.uuid4().hex[:6]}"
    out = ctd.run_ctr(containerd, "run", "--rm", BUSYBOX_REF, name, "sh", "-c", "echo hi", timeout=30)
    assert out.strip() == "hi"
    assert name not in ctd.run_ctr(containerd, "containers", "list", "-q").split()


@pytest.mark.root
def test_teardown_after_containerd_crash_leaves_nothing(root_state_dir: Path, run_id: str) -> None:
    """containerd SIGKILLed with a container running: teardown restarts it, cleans up, removes all."""
    state_dir = root_state_dir
    layout = ContainerdLayout.from_base(state_dir / "crash", f"{run_id}x")
    daemon = ctd.start(layout)
    try:
        ctd.ensure_local_images(layout, state_dir / "images")
        ctd.run_ctr(layout, "run", "-d", BUSYBOX_REF, f"ke-crash-{run_id}", "sleep", "600", timeout=30)
        run_cmd(["ip", "link", "add", layout.bridge, "type", "bridge"], timeout=10)  # as CNI would
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.stop()  # reaps it
        assert ctd.shim_pids(layout), "the shim should outlive containerd"
    finally:
        ctd.teardown(layout)
    assert not ctd.shim_pids(layout)
    assert not ctd.mounts_under([state_dir / "crash"])
    assert not layout.root.exists() and not layout.state.exists()
    assert not link_exists(layout.bridge)
    assert is_running(layout.pidfile) is None


# --- netns ----------------------------------------------------------------------------------------


@pytest.mark.root
def test_netns_pair_pings_edge_to_cloud_then_delete_removes_it(netns_pair: NetnsPair) -> None:
    require_binary("busybox")
    assert all(len(n) <= 15 for n in (netns_pair.cloud_veth, netns_pair.edge_veth))
    ping = exec_argv(netns_pair.edge_ns, ["busybox", "ping", "-c", "1", "-W", "2", netns_pair.cloud_ip])
    assert "1 packets received" in run_cmd(ping, timeout=10).stdout
    listed = run_cmd(["ip", "netns", "list"], timeout=5).stdout
    assert netns_pair.cloud_ns in listed and netns_pair.edge_ns in listed
    netns_pair.delete()
    listed = run_cmd(["ip", "netns", "list"], timeout=5).stdout
    assert netns_pair.cloud_ns not in listed and netns_pair.edge_ns not in listed
    assert not netns_exists(netns_pair.cloud_ns) and not link_exists(netns_pair.cloud_veth)
    netns_pair.delete()  # idempotent


@pytest.mark.root
def test_daemon_started_through_ip_netns_exec_is_tracked_by_its_own_pid(
    netns_pair: NetnsPair, tmp_path: Path
) -> None:
    """`ip netns exec` execs the program, so the pidfile PID runs `sleep` and stops cleanly."""
    argv = exec_argv(netns_pair.cloud_ns, ["sleep", "30"])
    daemon = Daemon.start(argv, pidfile=tmp_path / "ns.pid", logfile=tmp_path / "ns.log", binary="sleep")
    try:
        daemon.wait_ready(
            lambda: is_running(daemon.pidfile) == daemon.pid, timeout=WAIT, what="sleep in netns"
        )
        own_net = os.readlink(f"/proc/{daemon.pid}/ns/net")
        assert own_net != os.readlink("/proc/self/ns/net")
        assert stop_from_pidfile(daemon.pidfile, timeout=2) is StopOutcome.STOPPED
    finally:
        daemon.stop()


@pytest.mark.root
def test_netns_pair_create_refuses_an_existing_pair(netns_pair: NetnsPair) -> None:
    twin = NetnsPair.from_tag(netns_pair.tag)
    with pytest.raises(HostServiceError, match="already exists"):
        twin.create()
    assert netns_exists(netns_pair.cloud_ns) and netns_exists(netns_pair.edge_ns)


# --- process --------------------------------------------------------------------------------------


def test_stop_from_pidfile_refuses_a_pid_that_runs_another_program(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        pidfile = tmp_path / "containerd.pid"
        PidRecord(pid=sleeper.pid, binary="/usr/bin/containerd").write(pidfile)
        assert is_running(pidfile) is None
        assert stop_from_pidfile(pidfile) is StopOutcome.STALE
        assert sleeper.poll() is None, "a recycled PID was signalled"
        assert not pidfile.exists()
    finally:
        sleeper.kill()
        sleeper.wait(WAIT)


def test_stop_from_pidfile_stops_the_recorded_daemon(tmp_path: Path) -> None:
    daemon = Daemon.start(["sleep", "30"], pidfile=tmp_path / "s.pid", logfile=tmp_path / "s.log")
    try:
        assert is_running(daemon.pidfile) == daemon.pid
        assert stop_from_pidfile(daemon.pidfile, timeout=2) is StopOutcome.STOPPED
        assert not pid_alive(daemon.pid)
        assert stop_from_pidfile(daemon.pidfile) is StopOutcome.NOT_RUNNING
    finally:
        daemon.stop()


def test_daemon_that_exits_early_reports_its_log(tmp_path: Path) -> None:
    daemon = Daemon.start(
        ["sh", "-c", "echo boom-from-daemon; exit 3"], pidfile=tmp_path / "d.pid", logfile=tmp_path / "d.log"
    )
    with pytest.raises(DaemonError, match=r"(?s)exited with code 3.*boom-from-daemon"):
        daemon.wait_ready(lambda: False, timeout=WAIT, what="sh")
    assert not daemon.pidfile.exists()


def test_daemon_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    daemon = Daemon.start(["sleep", "30"], pidfile=tmp_path / "n.pid", logfile=tmp_path / "n.log")
    started = time.monotonic()
    with pytest.raises(DaemonError, match=r"not ready after 0\.3 s"):
        daemon.wait_ready(lambda: False, timeout=0.3, what="sleep")
    assert time.monotonic() - started < 0.3 + 5.0
    assert not daemon.running() and not daemon.pidfile.exists()


# --- CLI (the scripts/quickstart path) ------------------------------------------------------------


def hostsvc(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.hostsvc", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.root
def test_cli_containerd_up_status_down(root_state_dir: Path) -> None:
    state_dir = root_state_dir
    base = state_dir / "cli-ctd"
    up = hostsvc("containerd-up", "--base", str(base), "--images", str(state_dir / "images"))
    try:
        assert up.returncode == 0, up.stderr
        socket_path = Path(up.stdout.strip())
        assert socket_path.is_socket()
        status = hostsvc("status", "--base", str(base)).stdout.splitlines()
        assert status[0].startswith("containerd: running pid ") and str(socket_path) in status[0]
        assert status[1] == "mosquitto: stopped"
        again = hostsvc("containerd-up", "--base", str(base))
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = hostsvc("containerd-down", "--base", str(base))
    assert down.returncode == 0, down.stderr
    assert hostsvc("status", "--base", str(base)).stdout.splitlines()[0] == "containerd: stopped"
    assert not (base / "root").exists() and not (base / "state").exists()


@pytest.mark.root
def test_cli_mosquitto_up_down_and_one_line_errors(root_state_dir: Path) -> None:
    state_dir = root_state_dir
    directory = state_dir / "cli-mq"
    port = free_port()
    up = hostsvc("mosquitto-up", "--dir", str(directory), "--port", str(port))
    try:
        assert up.returncode == 0, up.stderr
        with mqtt_client("127.0.0.1", port):
            pass
        status = hostsvc("status", "--base", str(state_dir / "none"), "--mosquitto-dir", str(directory))
        assert status.stdout.splitlines()[1].startswith("mosquitto: running pid ")
        clash = hostsvc("mosquitto-up", "--dir", str(directory), "--port", str(port))
        assert clash.returncode == 1
        assert clash.stderr.count("\n") == 1 and "Traceback" not in clash.stderr
    finally:
        down = hostsvc("mosquitto-down", "--dir", str(directory))
    assert down.stdout.strip() == "mosquitto: stopped"
    assert hostsvc("mosquitto-down", "--dir", str(directory)).stdout.strip() == "mosquitto: not-running"
    bad = hostsvc("mosquitto-up", "--dir", str(directory), "--tls-port", "1")
    assert bad.returncode == 1 and bad.stderr.startswith("hostsvc mosquitto-up: error: --tls-port needs")
