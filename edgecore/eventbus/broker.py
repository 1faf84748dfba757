"""The internal MQTT broker of mqttMode 0 (internal) and 1 (both): a mosquitto that edgecore starts, owns and stops.

Upstream embeds a broker on `mqttServerInternal` (tcp://127.0.0.1:1884); here it is a real mosquitto
(ref/runtime.md recipe) with a config rendered from edgecore.yaml into a private directory beside the edge
database (`<dir of database.dataSource>/eventbus-broker/`, mode 0700): `mosquitto.conf`, `mosquitto.pid`
(PID and binary, common.hostsvc.process format) and `mosquitto.log` (mosquitto's errors and warnings).

Owns: that directory and the one mosquitto process started from it. `start` reclaims a broker left running
by an edgecore that was killed (its pidfile names a live mosquitto started with our conf), starts a fresh
one and waits until the listener accepts; `supervise` restarts it with back-off (1 s doubling to 30 s,
jittered; reset after 30 s up) whenever it exits; `stop` ends it by PID (SIGTERM, SIGKILL after 5 s).
Never signals a process it cannot prove is its broker, and never touches a broker it did not start.
A missing `mosquitto` binary, or a first start that fails, is a `BrokerError` with the reason (edgecore
stops, as upstream does when its embedded broker cannot start).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from common.config.edgecore import EventBus as EventBusConfig
from common.hostsvc.mosquitto import check_readable_by_broker
from common.hostsvc.process import HostServiceError, PidRecord, is_running, stop_from_pidfile
from common.log import get_logger
from common.reliable import ReconnectBackoff, ReconnectPolicy
from edgecore.eventbus.topics import broker_address

log = get_logger("eventbus")

BROKER_BINARY: Final = "mosquitto"
BROKER_DIR_NAME: Final = "eventbus-broker"
DEFAULT_DATA_DIR: Final = Path("/var/lib/kubeedge")
READY_TIMEOUT: Final = 5.0
STOP_TIMEOUT: Final = 5.0
LOG_KEEP_BYTES: Final = 1 << 20  # the log is moved to mosquitto.log.1 at a start once it is bigger
RESTART_POLICY: Final = ReconnectPolicy(base=1.0, cap=30.0, stable_after=30.0)
_PROBE_TIMEOUT: Final = 0.5
_POLL: Final = 0.02
_EXTRA_PATH: Final = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # Debian installs mosquitto in /usr/sbin


class BrokerError(RuntimeError):
    """The internal broker cannot be started (the text says why and what to do)."""


@dataclass(frozen=True, slots=True)
class BrokerTLS:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class BrokerSpec:
    """One internal broker: where it listens, what it keeps per client, where its files go."""

    host: str
    port: int
    directory: Path
    session_queue_size: int = 100
    tls: BrokerTLS | None = None

    @property
    def conf_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def pidfile(self) -> Path:
        return self.directory / "mosquitto.pid"

    @property
    def logfile(self) -> Path:
        return self.directory / "mosquitto.log"

    @classmethod
    def from_config(cls, config: EventBusConfig, data_source: Path | None) -> BrokerSpec:
        """From `mqttServerInternal` (and eventBusTLS for an ssl:// one); the directory beside the database."""
        host, port, use_tls = broker_address(config.mqtt_server_internal)
        tls = None
        if use_tls:
            files = config.event_bus_tls
            tls = BrokerTLS(Path(files.tls_mqtt_ca_file), Path(files.tls_mqtt_cert_file),
                            Path(files.tls_mqtt_private_key_file))
        base = data_source.parent if data_source is not None else DEFAULT_DATA_DIR
        return cls(host, port, base / BROKER_DIR_NAME, max(int(config.mqtt_session_queue_size), 0), tls)


def render_conf(spec: BrokerSpec) -> str:
    """mosquitto.conf for `spec`: one listener (plain, or TLS with optional client certificates), anonymous
    clients (edgecore and mappers on the node), no persistence, errors and warnings on stdout."""
    lines = [
        "# written by edgecore (eventbus, mqttMode 0/1) at every broker start; edits are lost",
        "per_listener_settings false",
        "allow_anonymous true",
        "persistence false",
        "set_tcp_nodelay true",  # results, documents and deltas go out back to back: no Nagle wait between them
        f"max_queued_messages {spec.session_queue_size}",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        f"listener {spec.port} {spec.host}",
    ]
    if spec.tls is not None:
        lines += [f"cafile {spec.tls.ca}", f"certfile {spec.tls.cert}", f"keyfile {spec.tls.key}",
                  "require_certificate false"]
    return "\n".join(lines) + "\n"


def find_binary() -> str:
    """The mosquitto executable, or BrokerError saying how to get it."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    found = shutil.which(BROKER_BINARY, path=search)
    if found is None:
        raise BrokerError(f"mqttMode 0/1 runs an internal MQTT broker, but the {BROKER_BINARY!r} binary is not "
                          f"installed (searched PATH and {', '.join(_EXTRA_PATH)}): install it "
                          f"(apt-get install mosquitto) or set modules.eventBus.mqttMode: 2 with an external broker")
    return os.path.realpath(found)


def _prepare_files(spec: BrokerSpec) -> int:
    """Write the conf (0600), move an oversized log aside; the log's fd, opened for appending."""
    spec.conf_path.write_text(render_conf(spec))
    spec.conf_path.chmod(0o600)
    with contextlib.suppress(FileNotFoundError):
        if spec.logfile.stat().st_size > LOG_KEEP_BYTES:
            spec.logfile.replace(spec.logfile.with_suffix(".log.1"))
    return os.open(spec.logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _log_tail(path: Path, limit: int = 1500) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - limit))
            return fh.read().decode(errors="replace").strip() or "(empty log)"
    except FileNotFoundError:
        return "(no log)"


def _started_with(pid: int, conf: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(conf).encode() in argv


class InternalBroker:
    def __init__(self, spec: BrokerSpec, rand: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.restarts = 0
        self._rand = rand
        self._clock = clock
        self._binary = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._backoff = ReconnectBackoff(RESTART_POLICY)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def address(self) -> str:
        return f"{self.spec.host}:{self.spec.port}"

    async def start(self) -> None:
        """Prepare the directory, reclaim a leftover broker of ours, start mosquitto and wait until it listens."""
        self._binary = find_binary()
        spec = self.spec
        spec.directory.mkdir(parents=True, exist_ok=True)
        spec.directory.chmod(0o700)
        if spec.tls is not None:
            try:
                check_readable_by_broker([spec.tls.ca, spec.tls.cert, spec.tls.key])
            except (HostServiceError, OSError) as exc:
                raise BrokerError(f"internal broker TLS files: {exc}") from exc
        await self._reclaim_leftover()
        await self._spawn()

    async def supervise(self) -> None:
        """Until cancelled: whenever the broker exits, start it again after a back-off."""
        while True:
            proc = self._proc
            if proc is not None:
                code = await proc.wait()  # the broker's whole life; cancelled with the module
                self.spec.pidfile.unlink(missing_ok=True)
                log.error("internal mqtt broker exited, restarting", address=self.address, pid=proc.pid, code=code,
                          log_tail=_log_tail(self.spec.logfile, 400))
            delay = self._backoff.next_delay(self._clock(), self._rand)
            self._proc = None
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                self.restarts += 1
            except BrokerError as exc:
                log.error("internal mqtt broker did not start, retrying", address=self.address, err=str(exc))

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the broker by PID, SIGKILL if it is still there after `timeout`; remove the pidfile."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("internal mqtt broker ignored SIGTERM, killing it", pid=proc.pid, timeout_s=timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.wait_for(proc.wait(), timeout)
            log.info("internal mqtt broker stopped", address=self.address, pid=proc.pid)
        self.spec.pidfile.unlink(missing_ok=True)

    # -- internals ------------------------------------------------------------------------------------------
    async def _reclaim_leftover(self) -> None:
        spec = self.spec
        pid = is_running(spec.pidfile)
        if pid is None:
            spec.pidfile.unlink(missing_ok=True)
            return
        if not _started_with(pid, spec.conf_path):
            log.warning("pidfile names a mosquitto not started from our config; left alone", pid=pid,
                        pidfile=str(spec.pidfile))
            spec.pidfile.unlink(missing_ok=True)
            return
        log.warning("stopping the internal mqtt broker an earlier edgecore left running", pid=pid)
        await asyncio.to_thread(stop_from_pidfile, spec.pidfile, STOP_TIMEOUT)

    async def _spawn(self) -> None:
        spec = self.spec
        if await self._accepts():
            raise BrokerError(f"another process already listens on {self.address} (mqttServerInternal): stop it, "
                              f"or use mqttMode 2 to connect to it as the external broker")
        log_fd = _prepare_files(spec)
        try:
            proc = await asyncio.create_subprocess_exec(
                self._binary, "-c", str(spec.conf_path), stdin=asyncio.subprocess.DEVNULL, stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise BrokerError(f"cannot run {self._binary}: {exc}") from exc
        finally:
            os.close(log_fd)
        self._proc = proc
        PidRecord(proc.pid, self._binary).write(spec.pidfile)
        if not await self._wait_listening(proc):
            await self.stop()
            problem = f"exited with code {proc.returncode}" if proc.returncode is not None else \
                f"not listening after {READY_TIMEOUT:.0f} s"
            raise BrokerError(f"internal mqtt broker on {self.address} {problem}; its log ({spec.logfile}):\n"
                              f"{_log_tail(spec.logfile)}")
        self._backoff.connected(self._clock())
        log.info("internal mqtt broker running", address=self.address, pid=proc.pid, conf=str(spec.conf_path))

    async def _wait_listening(self, proc: asyncio.subprocess.Process) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline and proc.returncode is None:
            if await self._accepts():
                return proc.returncode is None
            await asyncio.sleep(_POLL)
        return False

    async def _accepts(self) -> bool:
        """Whether a TCP connection to the listener's address is accepted now."""
        host = "127.0.0.1" if self.spec.host in ("0.0.0.0", "") else self.spec.host
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                _reader, writer = await asyncio.open_connection(host, self.spec.port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(_PROBE_TIMEOUT):
                await writer.wait_closed()
        return True
