"""Liveness, readiness and startup probes with kubelet's semantics.

Sans-I/O: `ContainerProbes` is the probe state of one container instance (a new instance starts afresh,
as kubelet's per-container-ID results do). A probe first runs `initialDelaySeconds` after the container
started, then every `periodSeconds`; `successThreshold` / `failureThreshold` consecutive results change
the result in effect, which starts as failure for readiness, success for liveness, unknown for startup.
While a startup probe has not succeeded, liveness and readiness do not run; once it has, it stops. A
liveness or startup result of failure means the container must be killed (`failed`); probing stops then,
until the pod worker sees a new instance. Time comes from the caller, so the state machine is tested
without sleeps.

I/O: `Prober` is one asyncio task per probed container instance, owned by the pod worker, which cancels
it when the instance stops running or the pod goes. Each check is bounded by the probe's timeout (exec:
by the runtime, which kills the command then), and any change of started/ready/failed wakes the worker,
so the status goes up at once rather than at the next resync. Every failed check is also handed to
`on_failure` (the worker records kubelet's Unhealthy event from it; the recorder never blocks).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from common.log import get_logger
from edgecore.cri import CRIClient, CRIError
from edgecore.edged.pods.spec import ContainerSpec, PodSpecError, Probe

log = get_logger("edged")

USER_AGENT: Final = "kube-probe/1.29"
EXEC_GRACE: Final = 2.0  # on top of the probe timeout: the runtime kills the command at the timeout itself
_NETWORK_HANDLERS: Final = ("httpGet", "tcpSocket")


class ProbeError(PodSpecError):
    """A probe that cannot run as given: no supported handler, or a port name the container does not declare."""


class Kind(StrEnum):
    STARTUP = "startup"
    LIVENESS = "liveness"
    READINESS = "readiness"


@dataclass(frozen=True, slots=True)
class Health:
    """What the probes say of one running container instance, for its status."""

    started: bool
    ready: bool


def probes_of(container: ContainerSpec) -> dict[Kind, Probe]:
    found = {Kind.STARTUP: container.startup, Kind.LIVENESS: container.liveness, Kind.READINESS: container.readiness}
    return {kind: probe for kind, probe in found.items() if probe is not None}


def resolve_port(probe: Probe, container: ContainerSpec) -> int:
    """The probe's port number; a name is looked up in the container's declared ports, as kubelet does."""
    if isinstance(probe.port, int):
        port = probe.port
    else:
        port = next((p.container_port for p in container.ports if p.name and p.name == probe.port), 0)
        if not port:
            raise ProbeError(f"port {probe.port!r} is not a port name container {container.name} declares")
    if not 0 < port < 65536:
        raise ProbeError(f"port {port} is not a valid port number")
    return port


def check_probes(container: ContainerSpec) -> None:
    """ProbeError when one of the container's probes can never run (checked before the container starts)."""
    for kind, probe in probes_of(container).items():
        try:
            if probe.handler == "exec":
                if not probe.command:
                    raise ProbeError("exec needs a command")
            elif probe.handler in _NETWORK_HANDLERS:
                resolve_port(probe, container)
            elif not probe.handler:
                raise ProbeError("handler missing or ambiguous: a probe needs exactly one of exec, httpGet or "
                                 "tcpSocket")
            else:
                raise ProbeError(f"handler {probe.handler} is not supported (only exec, httpGet or tcpSocket)")
        except ProbeError as exc:
            raise ProbeError(f"{kind} probe of container {container.name}: {exc}") from None


# ---- sans-I/O state -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Track:
    probe: Probe
    next_at: float
    result: bool  # the result in effect
    last: bool | None = None  # the latest check's outcome
    run: int = 0  # how many consecutive checks had that outcome


class ContainerProbes:
    """The probes of one container instance that started (running) at `started_at`."""

    def __init__(self, container: ContainerSpec, started_at: float) -> None:
        self.name = container.name
        self.tracks = {kind: _Track(probe, started_at + probe.initial_delay, kind == Kind.LIVENESS)
                       for kind, probe in probes_of(container).items()}
        self.failed = ""  # why the container must be killed; "" while it need not
        self.failed_kind: Kind | None = None  # the probe that failed it

    @property
    def started(self) -> bool:
        startup = self.tracks.get(Kind.STARTUP)
        return startup is None or startup.result

    @property
    def ready(self) -> bool:
        readiness = self.tracks.get(Kind.READINESS)
        return self.started and not self.failed and (readiness is None or readiness.result)

    @property
    def health(self) -> Health:
        return Health(started=self.started, ready=self.ready)

    def _enabled(self) -> list[Kind]:
        if self.failed:
            return []
        if not self.started:
            return [Kind.STARTUP]
        return [kind for kind in (Kind.LIVENESS, Kind.READINESS) if kind in self.tracks]

    def next_at(self) -> float | None:
        """When the next check is due; None when no probe will run again for this instance."""
        return min((self.tracks[kind].next_at for kind in self._enabled()), default=None)

    def due(self, now: float) -> list[Kind]:
        return [kind for kind in self._enabled() if self.tracks[kind].next_at <= now]

    def record(self, kind: Kind, success: bool, now: float, message: str = "") -> bool:
        """The outcome of the check of `kind` that began at `now`; True if started, ready or failed changed."""
        before = (self.started, self.ready, self.failed)
        track = self.tracks[kind]
        track.next_at = now + track.probe.period
        track.run = track.run + 1 if track.last == success else 1
        track.last = success
        if track.run >= (track.probe.success_threshold if success else track.probe.failure_threshold):
            track.result = success
            if not success and kind != Kind.READINESS:
                self.failed = f"Container {self.name} failed {kind} probe" + (f": {message}" if message else "")
                self.failed_kind = kind
        return (self.started, self.ready, self.failed) != before


# ---- I/O ---------------------------------------------------------------------------------------------


class Prober:
    """The task that probes one running container instance; `cancel()` it when the instance goes."""

    def __init__(self, cri: CRIClient, container: ContainerSpec, container_id: str, *, started_at: float,
                 host: str, clock: Callable[[], float], on_change: Callable[[], None], pod: str,
                 on_failure: Callable[[Kind, str], None] | None = None) -> None:
        self.container_id = container_id
        self.state = ContainerProbes(container, started_at)
        self._cri = cri
        self._container = container
        self._host = host
        self._clock = clock
        self._on_change = on_change
        self._pod = pod
        self._on_failure = on_failure  # every failed check (kind, why): the worker's Unhealthy event
        self._task = asyncio.create_task(self._run(), name=f"edged:probe:{pod}/{container.name}")

    def cancel(self) -> asyncio.Task[None]:
        self._task.cancel()
        return self._task

    async def _run(self) -> None:
        while (next_at := self.state.next_at()) is not None:
            await asyncio.sleep(max(0.0, next_at - self._clock()))
            now = self._clock()
            kinds = self.state.due(now)
            outcomes = await asyncio.gather(*(self._check(self.state.tracks[kind].probe) for kind in kinds))
            changed = False
            for kind, (success, message) in zip(kinds, outcomes, strict=True):
                if not success:
                    log.v(2).info("probe failed", pod=self._pod, container=self._container.name, probe=str(kind),
                                  detail=message[:200])
                    if self._on_failure is not None:
                        self._on_failure(kind, message)
                changed |= self.state.record(kind, success, now, message)
            if changed:
                self._report()

    def _report(self) -> None:
        if self.state.failed:
            log.info("container failed a probe; killing it", pod=self._pod, container=self._container.name,
                     detail=self.state.failed[:200])
        self._on_change()

    async def _check(self, probe: Probe) -> tuple[bool, str]:
        """(success, why not) of one check; never raises for what the container or network does."""
        try:
            if probe.handler == "exec":
                return await self._exec(probe)
            async with asyncio.timeout(probe.timeout):
                port = resolve_port(probe, self._container)
                host = probe.host or self._host
                if probe.handler == "httpGet":
                    return await http_get(probe, host, port)
                if probe.handler == "tcpSocket":
                    return await tcp_connect(host, port)
                raise ProbeError(f"handler {probe.handler!r} is not supported")
        except TimeoutError:
            return False, f"timed out after {probe.timeout:.0f}s"
        except (OSError, CRIError, ProbeError, ValueError, EOFError) as exc:
            return False, str(exc) or type(exc).__name__

    async def _exec(self, probe: Probe) -> tuple[bool, str]:
        try:
            result = await self._cri.exec_sync(self.container_id, probe.command, timeout=probe.timeout,
                                               rpc_timeout=probe.timeout + EXEC_GRACE)
        except CRIError as exc:
            return False, exc.details or str(exc)
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        return result.exit_code == 0, output or f"command exited with {result.exit_code}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _no_verify() -> ssl.SSLContext:
    # kubelet does not verify a probe's certificate either (InsecureSkipVerify).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def http_get(probe: Probe, host: str, port: int) -> tuple[bool, str]:
    """An HTTP/1.1 GET; any status 200-399 is success. The caller bounds it in time."""
    reader, writer = await asyncio.open_connection(host, port, ssl=_no_verify() if probe.scheme == "HTTPS" else None)
    try:
        headers = {"host": ("Host", _host_port(host, port)), "user-agent": ("User-Agent", USER_AGENT),
                   "accept": ("Accept", "*/*")}
        headers |= {name.lower(): (name, value) for name, value in probe.headers}  # the probe's own win
        lines = [f"GET {probe.path} HTTP/1.1", *(f"{n}: {v}" for n, v in headers.values()), "Connection: close"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        parts = (await reader.readline()).split(maxsplit=2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP response from {_host_port(host, port)}")
        code = int(parts[1])
        return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"
    finally:
        writer.close()


async def tcp_connect(host: str, port: int) -> tuple[bool, str]:
    """Success if a TCP connection opens. The caller bounds it in time."""
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    return True, ""
