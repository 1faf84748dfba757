"""Daemon lifecycle in real processes: SIGTERM/SIGINT stop within 5 s, pidfile, sd_notify, modules."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DAEMON = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from common import daemon, log
    from common.bus import ModuleBus
    from common.modules import ModuleContext, run_modules

    log.setup(verbosity=2)
    mode = sys.argv[2]

    class Sleeper:
        name, group = "sleeper", "g"
        async def run(self, ctx: ModuleContext) -> None:
            if mode == "stubborn":
                while True:
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        pass  # refuses to stop: the deadline must cancel the main task
            if mode == "crash":
                raise RuntimeError("module blew up")
            await asyncio.sleep(3600)

    async def main(stop: asyncio.Event) -> int:
        daemon.sd_notify("READY=1")
        print("ready", flush=True)
        return await run_modules(ModuleBus(), [Sleeper()], stop, stop_timeout=0.5)

    sys.exit(daemon.run(main, pidfile_path=Path(sys.argv[1]), stop_timeout=1.0))
""")


def start(tmp_path: Path, mode: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Path]:
    pidfile = tmp_path / "run" / "d.pid"
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, str(pidfile), mode], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc, pidfile


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_within_deadline_and_removes_pidfile(tmp_path: Path, signum: int) -> None:
    proc, pidfile = start(tmp_path, "normal")
    assert pidfile.read_text().splitlines()[0] == str(proc.pid)
    began = time.monotonic()
    proc.send_signal(signum)
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - began < 5
    assert not pidfile.exists()
    assert "signal received, stopping" in proc.stderr.read()  # type: ignore[union-attr]


def test_stubborn_module_is_cancelled_at_the_deadline(tmp_path: Path) -> None:
    proc, _ = start(tmp_path, "stubborn")
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=5)
    assert time.monotonic() - began < 5
    assert "did not stop in time" in proc.stderr.read()  # type: ignore[union-attr]


def test_failing_module_stops_the_process_with_exit_1(tmp_path: Path) -> None:
    proc, pidfile = start(tmp_path, "crash")
    assert proc.wait(timeout=5) == 1
    assert 'module failed, stopping' in proc.stderr.read()  # type: ignore[union-attr]
    assert not pidfile.exists()


def test_second_instance_refused_while_first_holds_pidfile(tmp_path: Path) -> None:
    first, pidfile = start(tmp_path, "normal")
    try:
        second = subprocess.run([sys.executable, "-c", DAEMON, str(pidfile), "normal"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert second.returncode != 0
        assert f"held by running process {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=5)


def test_stale_pidfile_is_taken_over(tmp_path: Path) -> None:
    pidfile = tmp_path / "run" / "d.pid"
    pidfile.parent.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    proc, _ = start(tmp_path, "normal")
    assert pidfile.read_text().splitlines()[0] == str(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0


def test_sd_notify_ready_and_stopping_reach_the_notify_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(5)
        proc, _ = start(tmp_path, "normal", env={"NOTIFY_SOCKET": address})
        assert sock.recv(100) == b"READY=1"
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(100) == b"STOPPING=1"
        assert proc.wait(timeout=5) == 0


def test_sd_notify_is_a_noop_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    from common.daemon import sd_notify
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
