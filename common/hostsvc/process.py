"""Detached host daemons owned by pidfile: start, readiness polling and PID-safe stop.

This module owns the process lifecycle shared by every host service (containerd, mosquitto): a daemon
runs in its own session with stdin from /dev/null and stdout+stderr in a log file, and its pidfile
records the PID and the binary so that a *different* process (the CLI, a later test session) can stop
it without ever signalling a recycled PID.

Pidfile format: line 1 is the PID, line 2 the absolute path of the binary that was started.
`run_cmd` is the one way this package runs short helper commands (always with a timeout).
It never signals a PID whose /proc entry does not run the recorded binary, nor a whole process group.
"""

from __future__ import annotations

import enum
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_POLL_INTERVAL = 0.02
_KILL_WAIT = 5.0
_LOG_TAIL_BYTES = 2000


class HostServiceError(RuntimeError):
    """Base error of common.hostsvc: a host service could not be set up or torn down."""


class DaemonError(HostServiceError):
    """A daemon failed to start, exited early or did not become ready in time."""


class StopOutcome(enum.Enum):
    """What `stop_from_pidfile` did."""

    STOPPED = "stopped"
    NOT_RUNNING = "not-running"
    STALE = "stale"  # the PID is alive but runs another program: left alone, pidfile removed


@dataclass(frozen=True)
class PidRecord:
    """The content of a pidfile."""

    pid: int
    binary: str

    @classmethod
    def read(cls, pidfile: Path) -> PidRecord | None:
        """Parse `pidfile`; None when it is missing or malformed."""
        try:
            lines = pidfile.read_text().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 2 or not lines[0].strip().isdigit():
            return None
        return cls(pid=int(lines[0]), binary=lines[1].strip())

    def write(self, pidfile: Path) -> None:
        """Write atomically so that a concurrent reader never sees half a pidfile."""
        tmp = pidfile.with_name(f".{pidfile.name}.{os.getpid()}")
        tmp.write_text(f"{self.pid}\n{self.binary}\n")
        os.replace(tmp, pidfile)


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, None when the process does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return stat[stat.rindex(")") + 2]


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    state = _proc_state(pid)
    return state is not None and state != "Z"


def pid_runs(pid: int, binary: str) -> bool:
    """True when live process `pid` executes `binary`: /proc/<pid>/exe, argv[0], or argv[1].

    `ip netns exec NS prog` execs `prog`, so the check also holds for daemons started in a netns;
    argv[1] covers interpreted daemons (a console script runs as `python /path/to/script ...`).
    """
    if not pid_alive(pid):
        return False
    want = os.path.realpath(binary)
    try:
        if os.path.realpath(os.readlink(f"/proc/{pid}/exe")) == want:
            return True
    except OSError:
        pass  # kernel threads and exited processes have no exe link
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
    except OSError:
        return False
    return any(_resolves_to(arg.decode(errors="replace"), want) for arg in argv if arg)


def _resolves_to(arg: str, want: str) -> bool:
    resolved = shutil.which(arg) if os.sep not in arg else arg
    return resolved is not None and os.path.realpath(resolved) == want


def own_binary() -> str:
    """What `pid_runs` should match for this process: the script it runs, else the interpreter."""
    argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    script = argv[1].decode(errors="replace") if len(argv) > 1 else ""
    if os.sep in script and os.path.isfile(script):
        return os.path.realpath(script)
    return os.path.realpath("/proc/self/exe")


class NotifySocket:
    """A systemd-style notify socket for a daemon we start: it sends `READY=1` when it is up.

    Our daemons call common.daemon.sd_notify, so readiness is the daemon's own word, not a guess
    from its log or a port.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setblocking(False)
        self._ready = False

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def ready(self) -> bool:
        while not self._ready:
            try:
                datagram = self._sock.recv(4096)
            except BlockingIOError:
                break
            self._ready = b"READY=1" in datagram.split(b"\n")
        return self._ready

    def close(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)


def is_running(pidfile: Path) -> int | None:
    """The PID recorded in `pidfile` when that process is alive and still runs the recorded binary."""
    record = PidRecord.read(pidfile)
    if record is None or not pid_runs(record.pid, record.binary):
        return None
    return record.pid


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def _signal_and_wait(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL and wait; raise DaemonError if it survives."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_gone(pid, timeout):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not _wait_gone(pid, _KILL_WAIT):
        raise DaemonError(f"pid {pid} survived SIGKILL for {_KILL_WAIT:.0f} s")


def stop_from_pidfile(pidfile: Path, timeout: float = 5.0) -> StopOutcome:
    """Stop the daemon recorded in `pidfile` from any process, then remove the pidfile.

    The PID is signalled only if /proc/<pid> still runs the recorded binary; a recycled PID is
    reported as STALE and left alone.
    """
    record = PidRecord.read(pidfile)
    if record is None:
        pidfile.unlink(missing_ok=True)
        return StopOutcome.NOT_RUNNING
    if not pid_alive(record.pid):
        outcome = StopOutcome.NOT_RUNNING
    elif not pid_runs(record.pid, record.binary):
        outcome = StopOutcome.STALE
    else:
        _signal_and_wait(record.pid, timeout)
        outcome = StopOutcome.STOPPED
    pidfile.unlink(missing_ok=True)
    return outcome


def run_cmd(
    argv: Sequence[str], timeout: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a short command with a timeout; with `check`, a failure raises HostServiceError with stderr."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HostServiceError(f"`{' '.join(argv)}` timed out after {timeout:.0f} s") from exc
    except OSError as exc:
        raise HostServiceError(f"`{' '.join(argv)}` could not run: {exc}") from exc
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise HostServiceError(f"`{' '.join(argv)}` exited {done.returncode}: {detail}")
    return done


def _log_tail(logfile: Path, limit: int = _LOG_TAIL_BYTES) -> str:
    """The last `limit` bytes of a daemon log, for error messages."""
    try:
        with logfile.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - limit))
            return fh.read().decode(errors="replace").strip()
    except FileNotFoundError:
        return "(no log)"


class Daemon:
    """One detached daemon started by this process (see module docstring)."""

    def __init__(self, proc: subprocess.Popen[bytes], pidfile: Path, logfile: Path) -> None:
        self._proc = proc
        self.pidfile = pidfile
        self.logfile = logfile

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        pidfile: Path,
        logfile: Path,
        binary: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        """Start `argv` detached and record it in `pidfile`.

        `binary` is the program the PID will run once started (default: argv[0] resolved on PATH);
        give it when argv is a wrapper that execs, such as `ip netns exec NS prog`.
        """
        if is_running(pidfile) is not None:
            raise DaemonError(f"{pidfile} names a running process: stop it first")
        program = binary if binary is not None else argv[0]
        resolved = shutil.which(program)
        if resolved is None:
            raise DaemonError(f"binary {program!r} not found")
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "ab") as log, open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(
                list(argv),
                stdin=devnull,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={**os.environ, **env} if env else None,
            )
        PidRecord(pid=proc.pid, binary=os.path.realpath(resolved)).write(pidfile)
        return cls(proc, pidfile, logfile)

    def running(self) -> bool:
        return self._proc.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str = "daemon") -> None:
        """Poll `check` until it returns True.

        Raises DaemonError (with the log tail) when the daemon exits first or `timeout` elapses;
        the daemon is stopped in both cases so that a failed start leaves nothing behind.
        """
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            code = self._proc.poll()
            if code is not None:
                self.pidfile.unlink(missing_ok=True)
                problem = f"exited with code {code} before ready"
                break
            if time.monotonic() >= deadline:
                self.stop()
                problem = f"not ready after {timeout:.1f} s"
                break
            time.sleep(_POLL_INTERVAL)
        raise DaemonError(f"{what} {problem} (log {self.logfile}):\n{_log_tail(self.logfile)}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to `timeout`, SIGKILL fallback; reap the child and remove the pidfile."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                try:
                    self._proc.wait(_KILL_WAIT)
                except subprocess.TimeoutExpired as exc:
                    raise DaemonError(f"pid {self.pid} survived SIGKILL for {_KILL_WAIT:.0f} s") from exc
        self.pidfile.unlink(missing_ok=True)
