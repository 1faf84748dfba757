"""Observability kit shared by cloudcore and edgecore: one metrics registry per process, bounded message
counters, and the monitor HTTP server (`/metrics`, `/healthz`, `/readyz`) as a Module.

Owns: the `CollectorRegistry` conventions (a dedicated registry per process, never prometheus_client's
global default, so tests can run several daemons in one interpreter), the label vocabulary of message
counters (resource types and operations from `common.constants`, anything else is `other`, so a label
set can never grow with input) and the HTTP shell. It must never touch another module's state: what a
daemon exports comes from the collectors and readiness checks its wiring hands in (cloudcore/cloudhub,
edgecore/edgehub). A monitor server that cannot listen logs the cause and the config key to change,
and the daemon runs on without it: observability must not take the edge or the cloud down.

Metric names, labels and config keys are listed in docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from common.constants import Op, ResourceType
from common.log import get_logger
from common.modules import ModuleContext

log = get_logger("metrics")

NAMESPACE: Final = "kubeedge"
OTHER: Final = "other"
CHECK_TIMEOUT: Final = 2.0
"""Seconds one readiness check may take before it counts as failed."""
_STOP_TIMEOUT: Final = 2.0


def _constants(holder: type) -> frozenset[str]:
    return frozenset(v for k, v in vars(holder).items() if not k.startswith("_") and isinstance(v, str))


# Label values a message counter may use; "k8s" is the first token of the `k8s/ca.crt` type, and twin
# traffic names its device (`device/<id>/twin/...`), hence the extra device-side tokens.
KNOWN_TYPES: Final = _constants(ResourceType) | {"k8s", "twin"}
KNOWN_OPERATIONS: Final = _constants(Op)


def new_registry() -> CollectorRegistry:
    """A fresh registry for one daemon (or one module's metrics until a monitor server serves them)."""
    return CollectorRegistry(auto_describe=True)


def add_process_collectors(registry: CollectorRegistry) -> None:
    """The standard process and Python collectors (`process_*`: RSS, CPU, open fds; `python_*`: version,
    GC). The monitor server's wiring adds them once per process, so that modules built many times in
    one process (hollow nodes in bench/) do not each carry them."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def resource_type_of(resource: str) -> str:
    """The label value for a wire resource: `<ns>/<type>[/<name>]` gives `<type>`; a device resource
    (`<type>/<id>/...`) its first token; anything unknown `other`. One split: it runs per message."""
    parts = resource.split("/", 2)
    if len(parts) > 1 and parts[1] in KNOWN_TYPES:
        return parts[1]
    return parts[0] if parts[0] in KNOWN_TYPES else OTHER


class MessageCounter(Collector):
    """A `kubeedge_<name>_total{type, operation}` counter with bounded labels, counted in plain ints.

    `count` is the per-message hot path: one split, two dict lookups and an integer add (no lock, no
    allocation once a label pair has been seen); Prometheus reads the ints at scrape time. Everything runs
    on the event loop, scrapes included, so no lock is needed. At most |types| x |operations| pairs exist.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = f"{NAMESPACE}_{name}"
        self.documentation = documentation
        self.count_by_type: dict[str, dict[str, int]] = {}
        registry.register(self)

    def count(self, resource: str, operation: str) -> None:
        kind = resource_type_of(resource)
        by_operation = self.count_by_type.get(kind)
        if by_operation is None:
            by_operation = self.count_by_type[kind] = {}
        if operation in by_operation:
            by_operation[operation] += 1
        else:
            op = operation if operation in KNOWN_OPERATIONS else OTHER  # unknown ones share one entry
            by_operation[op] = by_operation.get(op, 0) + 1

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=("type", "operation"))
        for kind, by_operation in self.count_by_type.items():
            for operation, count in by_operation.items():
                family.add_metric((kind, operation), count)
        yield family


class LoopHistogram(Collector):
    """A `kubeedge_<name>` histogram observed from the event loop only: a bisect and two adds per
    observation (prometheus_client's Histogram takes a lock per call, about 2.5x the cost), cumulated
    into Prometheus buckets at scrape time."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be increasing and not empty")
        self.name = f"{NAMESPACE}_{name}"
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterable[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


# -- readiness -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """One line of `/readyz`. A check that is not `required` is reported but never makes the process
    unready (the edge's cloud connection: the edge keeps working offline)."""

    name: str
    probe: Callable[[], Awaitable[CheckResult]]
    required: bool = True


async def run_check(check: ReadinessCheck, timeout: float = CHECK_TIMEOUT) -> CheckResult:
    try:
        async with asyncio.timeout(timeout):
            return await check.probe()
    except TimeoutError:
        return CheckResult(False, f"no answer in {timeout:g}s")
    except Exception as exc:  # a failing probe is an unready process, never a failed scrape
        return CheckResult(False, f"{type(exc).__name__}: {exc}")


async def readiness(checks: Sequence[ReadinessCheck], timeout: float = CHECK_TIMEOUT) -> tuple[bool, str]:
    """(ready, body) in the style of Kubernetes' verbose readyz: `[+]name ok` / `[-]name failed: why`;
    optional checks are marked `(optional)`."""
    results = await asyncio.gather(*(run_check(check, timeout) for check in checks))
    lines, ready = [], True
    for check, result in zip(checks, results, strict=True):
        optional = "" if check.required else " (optional)"
        detail = f": {result.detail}" if result.detail else ""
        lines.append(f"[{'+' if result.ok else '-'}]{check.name} {'ok' if result.ok else 'failed'}{detail}{optional}")
        ready = ready and (result.ok or not check.required)
    lines.append("readyz check passed" if ready else "readyz check failed")
    return ready, "\n".join(lines) + "\n"


# -- the HTTP server -------------------------------------------------------------------------------

def split_bind_address(bind_address: str) -> tuple[str, int]:
    """`IP:port` (IPv6 in brackets) as (host, port); the config models have checked the form."""
    host, _, port = bind_address.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsServerModule:
    """The monitor server Module: `/metrics` (Prometheus text, or OpenMetrics when asked for), `/healthz`
    (200 `ok` while the process serves) and `/readyz` (200 when every required check passes, else 500
    with the failing ones). `port` is the bound port once `listening` (useful with port 0)."""

    name = "monitor"
    group = "monitor"

    def __init__(self, bind_address: str, registry: CollectorRegistry, checks: Sequence[ReadinessCheck] = (),
                 *, config_key: str = "commonConfig.monitorServer.bindAddress") -> None:
        self.host, self.port = split_bind_address(bind_address)
        self.registry = registry
        self.checks = tuple(checks)
        self.config_key = config_key
        self.listening = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/livez", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def run(self, ctx: ModuleContext) -> None:
        # idle keep-alive connections are closed after 15 s; each readiness check has its own timeout
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0, keepalive_timeout=15.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            try:
                await site.start()
            except OSError as exc:
                log.error("monitor server not started; the daemon runs on without /metrics, /healthz and /readyz",
                          address=f"{self.host}:{self.port}", err=exc,
                          fix=f"free the port or set {self.config_key} (enable: false turns the server off)")
            else:
                self._note_port(runner)
                self.listening.set()
                log.info("monitor server listening", address=f"{self.host}:{self.port}")
            await asyncio.Event().wait()  # serve until cancelled
        finally:
            self.listening.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await runner.cleanup()

    def _note_port(self, runner: web.AppRunner) -> None:
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                return

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, body = await readiness(self.checks)
        return web.Response(status=200 if ready else 500, text=body)
