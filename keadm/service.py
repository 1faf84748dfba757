"""Running keadm's daemons: systemd units where systemd is PID 1, supervised background daemons elsewhere.

Owns the unit templates' rendering (from config/systemd/), `systemctl` calls and the daemon-mode start/stop,
which reuse common.hostsvc.process (pidfile-verified, READY=1 through a notify socket, log file). Every
command and wait has a timeout. It never signals a process it cannot match to its pidfile.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from common.hostsvc.process import (
    Daemon,
    DaemonError,
    HostServiceError,
    NotifySocket,
    StopOutcome,
    is_running,
    run_cmd,
    stop_from_pidfile,
)
from keadm.manifest import Manifest
from keadm.paths import Paths

UNIT_DIR: Final = Path(__file__).resolve().parent / "data" / "systemd"
"""config/systemd, shipped in the package (keadm/data/systemd links to it in the repository)."""
SYSTEMCTL_TIMEOUT: Final = 90.0

Mode = Literal["systemd", "daemon"]
UNIT_NAMES: Final = {"controlplane": "kubeedge-controlplane"}
"""Daemon name (pidfile, log) to unit name where they differ."""


def unit_name(name: str) -> str:
    return f"{UNIT_NAMES.get(name, name)}.service"


class ServiceError(RuntimeError):
    """A daemon could not be started or stopped; the message says why."""


def program(name: str) -> str:
    """The absolute path of a console script (`cloudcore`, `edgecore`): next to our interpreter, else PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"{name} not found next to {sys.executable} nor on PATH: install kubeedge-py")
    return found


@dataclass(frozen=True)
class Service:
    """One daemon: its unit name (`cloudcore`), the template it uses and its full command line."""

    name: str
    argv: tuple[str, ...]

    @property
    def unit(self) -> str:
        return unit_name(self.name)


def template(unit: str) -> str:
    path = UNIT_DIR / unit
    try:
        return path.read_text()
    except OSError as exc:
        raise ServiceError(f"unit template {path} is missing ({exc}): reinstall kubeedge-py") from None


def render_unit(service: Service) -> str:
    """The unit template with `ExecStart=` replaced by the service's real command line."""
    lines = []
    for line in template(service.unit).splitlines():
        if line.startswith("ExecStart="):
            line = "ExecStart=" + shlex.join(service.argv)
        lines.append(line)
    return "\n".join(lines) + "\n"


class Supervisor:
    """Starts and stops `Service`s in one mode, recording what it starts in a manifest."""

    def __init__(self, mode: Mode, paths: Paths) -> None:
        self.mode = mode
        self.paths = paths

    def running(self, name: str) -> int | None:
        """The PID of a running `name` started by keadm (daemon mode) or its unit's main PID (systemd)."""
        if self.mode == "systemd":
            done = run_cmd(["systemctl", "show", "-p", "MainPID", "--value", unit_name(name)],
                           timeout=SYSTEMCTL_TIMEOUT, check=False)
            pid = done.stdout.strip()
            return int(pid) if pid.isdigit() and int(pid) > 0 else None
        return is_running(self.paths.pidfile(name))

    def where_logs(self, name: str) -> str:
        if self.mode == "systemd":
            return f"journalctl -u {unit_name(name)} -xe"
        return str(self.paths.logfile(name))

    def start(self, service: Service, manifest: Manifest, timeout: float) -> int:
        """Start and wait for READY=1 (sd_notify); returns the PID."""
        if self.mode == "systemd":
            return self._start_unit(service, manifest, timeout)
        pidfile, logfile = self.paths.pidfile(service.name), self.paths.logfile(service.name)
        manifest.make_dirs(pidfile.parent)
        manifest.make_dirs(logfile.parent)
        manifest.add_new("file", logfile)
        notify = NotifySocket(pidfile.with_name(f".{service.name}.notify"))
        try:
            daemon = Daemon.start(service.argv, pidfile=pidfile, logfile=logfile, env=notify.env())
            manifest.add("daemon", pidfile, service.name)
            daemon.wait_ready(notify.ready, timeout, what=service.name)
        except (DaemonError, HostServiceError) as exc:
            raise ServiceError(str(exc)) from None
        finally:
            notify.close()
        return daemon.pid

    def _start_unit(self, service: Service, manifest: Manifest, timeout: float) -> int:
        unit_path = self.paths.systemd_dir / service.unit
        if unit_path.exists():
            raise ServiceError(f"{unit_path} exists already: remove it (systemctl disable --now {service.unit})")
        manifest.add("unit", unit_path, service.name)
        unit_path.write_text(render_unit(service))
        try:
            run_cmd(["systemctl", "daemon-reload"], timeout=SYSTEMCTL_TIMEOUT)
            # Type=notify: `start` returns once the daemon sent READY=1 (or failed)
            run_cmd(["systemctl", "enable", "--now", service.unit], timeout=timeout + 10)
        except HostServiceError as exc:
            raise ServiceError(f"{exc} (see `journalctl -u {service.unit} -xe`)") from None
        pid = self.running(service.name)
        if pid is None:
            raise ServiceError(f"{service.unit} is not active after start: see `journalctl -u {service.unit} -xe`")
        return pid


def stop_daemon(pidfile: Path, timeout: float = 10.0) -> StopOutcome:
    """Stop a daemon-mode service by its pidfile (PID-verified; SIGTERM, then SIGKILL)."""
    try:
        return stop_from_pidfile(pidfile, timeout)
    except HostServiceError as exc:
        raise ServiceError(str(exc)) from None


def remove_unit(unit_path: Path) -> str:
    """Stop, disable and remove a unit keadm installed; returns what happened."""
    unit = unit_path.name
    run_cmd(["systemctl", "disable", "--now", unit], timeout=SYSTEMCTL_TIMEOUT, check=False)
    unit_path.unlink(missing_ok=True)
    run_cmd(["systemctl", "daemon-reload"], timeout=SYSTEMCTL_TIMEOUT, check=False)
    return f"{unit}: stopped, disabled and removed"


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `check()` until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
