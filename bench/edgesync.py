#!/usr/bin/env python3
"""Cloud-to-edge sync as a client of the edge's MetaServer sees it (issue 6), real processes on loopback.

Processes: the embedded control plane (`python -m cloudcore controlplane`, controllers on, the
reliablesyncs CRDs applied), cloudcore (CloudHub + EdgeController; WebSocket), edgecore (edged, which
registers the node `edgesync` labelled node-role.kubernetes.io/edge and reports its status; MetaManager;
MetaServer on a free port; EdgeHub, certificates fetched with the join token), all at `--v=2` (the
production default), and this script: the cloud client (aiohttp, the admin kubeconfig's client
certificate, 8 connections) and the MetaServer client (aiohttp, plain HTTP).

Figures:

- create -> visible through MetaServer: Services (every edge node gets each one: EdgeController ->
  CloudHub -> EdgeHub -> MetaManager -> MetaServer). A MetaServer WATCH on the namespace's services is
  open before the creates; a sample is from the create's API call returning to the arrival of its
  ADDED event at this client. One create at a time (after the previous one arrived and 50 ms more; 3
  warm-up creates first), 100 of them (30 with --quick); then the same number created in a burst (8
  at a time) as an extra figure;
- the pods' time to the edge: N pods (5,000; 1,000 with --quick) bound to the edge node, created 8 at a
  time, timed from the first create to the last ADDED event at a MetaServer pods watch (resumed from
  its last resourceVersion if MetaServer drops it);
- LIST of the N pods through MetaServer, plain `GET /api/v1/pods` (kubectl's `-o json`, no chunking)
  and the Table form (kubectl's `get` Accept header): median of 5 after one warm-up, request to last
  byte. Baseline in the same run: the same LISTs against the control plane (HTTPS);
- edgecore's RSS (VmRSS of /proc/<pid>/status, MB = MiB as in bench/store.py): idle (connected,
  registered, no objects of ours) and with the N pods stored, after the lists.

Before the latency passes, the lists and each RSS reading the script waits until every process is idle
(< 10% of a CPU over 0.5 s; at most 20 s, after the pods 20 s + 10 ms per pod): the cloud keeps writing
ObjectSync records for the edge's ACKs after the objects arrive.

    .venv/bin/python bench/edgesync.py [--quick] [--profile-edge FILE.prof]

`--profile-edge` runs edgecore under cProfile (written when it stops); its figures are then not
comparable. Last lines: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, Self

import aiohttp
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.controlplane import ControlPlaneProcess  # noqa: E402
from tests.fixtures.mosquitto import free_port  # noqa: E402

NODE: Final = "edgesync"
EDGE_LABEL: Final = "node-role.kubernetes.io/edge"
NAMESPACE: Final = "default"
CLIENTS: Final = 8  # concurrent cloud API connections for bulk creates
WARM_UP: Final = 3  # creates before the timed ones of the one-at-a-time pass
GAP: Final = 0.05  # s after an object arrived before the next create (its ACK and ObjectSync settle)
LISTS: Final = 5
TABLE_ACCEPT: Final = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
                       "g=meta.k8s.io,application/json")


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settle(pids: Iterable[int], timeout: float = 20.0, window: float = 0.5, busy: float = 0.1) -> float:
    """Wait until every process uses less than `busy` of a CPU over `window` s; seconds waited (at most
    `timeout`, then a warning: what follows is measured beside a busy process)."""
    began = time.monotonic()
    pids = [*pids, os.getpid()]
    while time.monotonic() - began < timeout:
        before = [cpu_seconds(pid) for pid in pids]
        await asyncio.sleep(window)
        if all(cpu_seconds(pid) - used < busy * window for pid, used in zip(pids, before, strict=True)):
            return time.monotonic() - began
    print(f"warning: processes still busy after {timeout:.0f} s; measuring anyway", file=sys.stderr)
    return time.monotonic() - began


# -- processes --------------------------------------------------------------------------------------------


class Daemon:
    """cloudcore or edgecore as a child process (its own PID, optionally under cProfile), its log in a file."""

    def __init__(self, program: str, config: Path, log: Path, profile: Path | None = None) -> None:
        self.program, self.config, self.log, self.profile = program, config, log, profile
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        profiler = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        argv = [sys.executable, *profiler, "-m", self.program, "--config", str(self.config),
                "--pidfile", str(self.config.with_suffix(".pid")), "--v=2"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20 if self.profile else 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    async def wait_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and text in self.log.read_text(errors="replace"):
                return
            if self.proc is None or self.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        raise RuntimeError(f"{self.program}: {text!r} not logged within {timeout} s:\n{tail}")


def write_configs(work: Path, plane: ControlPlaneProcess, ports: dict[str, int], token: str) -> None:
    (work / "cloudcore.yaml").write_text(yaml.safe_dump({
        "kubeAPIConfig": {"kubeConfig": str(plane.kubeconfig)},
        "modules": {"cloudHub": {
            "advertiseAddress": ["127.0.0.1"],
            "tlsCAFile": str(work / "cloud/ca.crt"), "tlsCAKeyFile": str(work / "cloud/ca.key"),
            "tlsCertFile": str(work / "cloud/server.crt"), "tlsPrivateKeyFile": str(work / "cloud/server.key"),
            "unixsocket": {"address": f"unix://{work}/kubeedge.sock"},
            "websocket": {"address": "127.0.0.1", "port": ports["ws"]},
            "https": {"address": "127.0.0.1", "port": ports["https"]}}}}))
    (work / "edgecore.yaml").write_text(yaml.safe_dump({
        "database": {"dataSource": str(work / "edge/edgecore.db")},
        "modules": {
            "edged": {"hostnameOverride": NODE, "nodeIP": "127.0.0.1"},
            "metaManager": {"metaServer": {"enable": True, "server": f"127.0.0.1:{ports['metaserver']}"}},
            "edgeHub": {
                "token": token, "httpServer": f"https://127.0.0.1:{ports['https']}",
                "tlsCaFile": str(work / "edge/ca/rootCA.crt"), "tlsCertFile": str(work / "edge/certs/server.crt"),
                "tlsPrivateKeyFile": str(work / "edge/certs/server.key"),
                "websocket": {"enable": True, "server": f"127.0.0.1:{ports['ws']}"},
                "quic": {"enable": False, "server": "127.0.0.1:1"}}}}))


# -- clients ----------------------------------------------------------------------------------------------


def cloud_tls(plane: ControlPlaneProcess) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(plane.data_dir / "pki/ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(plane.data_dir / "pki/admin.crt", plane.data_dir / "pki/admin.key")
    return context


async def expect_json(response: aiohttp.ClientResponse, *statuses: int) -> Any:
    body = await response.read()
    if response.status not in statuses:
        raise RuntimeError(f"{response.method} {response.url}: {response.status} {body[:500]!r}")
    return orjson.loads(body)


async def poll(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"not within {timeout} s: {what}")


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}], "selector": {"app": name}}}


def pod(name: str) -> dict[str, Any]:
    """~1 KiB of JSON as created; the control plane adds defaults and metadata."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "edgesync", "shard": name[-1]}},
            "spec": {"nodeName": NODE, "containers": [{
                "name": "app", "image": "docker.io/local/busybox:1.0", "command": ["sh", "-c", "sleep 3600"],
                "env": [{"name": f"VAR{i}", "value": "x" * 24} for i in range(8)],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


class Watch:
    """A WATCH read in its own task; `seen` gets each ADDED/MODIFIED/DELETED event with the `clock()` time it
    arrived. If the server ends the stream (a watch that fell behind is dropped) it is opened again from
    the last resourceVersion seen, as client-go does."""

    def __init__(self, session: aiohttp.ClientSession, url: str,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.session, self.url, self.clock = session, url, clock
        self.reopened = 0
        self._rv = ""
        self._opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def seen(self, kind: str, obj: dict[str, Any], now: float) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        opened = asyncio.create_task(self._opened.wait())
        await asyncio.wait([opened, self._task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not self._opened.is_set():
            opened.cancel()
            self._task.cancel()
            raise RuntimeError(f"watch {self.url} not opened: {self._task.exception() if self._task.done() else ''}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            query = {"watch": "1", **({"resourceVersion": self._rv} if self._rv else {})}
            async with self.session.get(self.url, params=query,
                                        timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
                if response.status != 200:
                    raise RuntimeError(f"watch {self.url}: {response.status} {await response.text()}")
                self._opened.set()
                async for line in response.content:
                    now = self.clock()
                    event = orjson.loads(line)
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch {self.url}: {event['object']}")
                    self._rv = (event["object"].get("metadata") or {}).get("resourceVersion") or self._rv
                    self.seen(event["type"], event["object"], now)
            self.reopened += 1


class EdgeWatch(Watch):
    """A MetaServer WATCH: when (perf_counter) each object's first ADDED or MODIFIED event arrived, by name."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        super().__init__(session, url)
        self.arrived: dict[str, float] = {}
        self._changed = asyncio.Event()

    def seen(self, kind: str, obj: dict[str, Any], now: float) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if kind in ("ADDED", "MODIFIED") and name not in self.arrived:
            self.arrived[name] = now
            self._changed.set()

    async def wait(self, names: Iterable[str], timeout: float) -> None:
        """Until every name has arrived."""
        missing = set(names)
        async with asyncio.timeout(timeout):
            while True:
                missing -= self.arrived.keys()
                if not missing:
                    return
                if self._task is not None and self._task.done():
                    raise RuntimeError("the watch ended") from self._task.exception()
                self._changed.clear()
                await self._changed.wait()


async def post(cloud: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    """Create one object; perf_counter when the call returned."""
    async with cloud.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as response:
        await expect_json(response, 201)
    return time.perf_counter()


async def create_many(cloud: aiohttp.ClientSession, url: str, bodies: list[dict[str, Any]]) -> dict[str, float]:
    """Create all, CLIENTS at a time; when each call returned, by name."""
    returned: dict[str, float] = {}
    queue = iter(bodies)

    async def worker() -> None:
        for body in queue:
            returned[body["metadata"]["name"]] = await post(cloud, url, body)

    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return returned


async def timed_list(session: aiohttp.ClientSession, url: str, table: bool) -> tuple[float, int]:
    """ms from the request to the last byte of the body, and the number of items (rows)."""
    headers = {"Accept": TABLE_ACCEPT if table else "application/json"}
    began = time.perf_counter()
    async with session.get(f"{url}/api/v1/pods", headers=headers) as response:
        body = await response.read()
    elapsed = (time.perf_counter() - began) * 1000
    if response.status != 200:
        raise RuntimeError(f"list {url}: {response.status} {body[:300]!r}")
    return elapsed, len(orjson.loads(body)["rows" if table else "items"])


# -- the run ----------------------------------------------------------------------------------------------


class Rig:
    def __init__(self, work: Path, profile: Path | None) -> None:
        self.work = work
        self.plane = ControlPlaneProcess(work / "cp")
        self.ports = {"ws": free_port(), "https": free_port(), "metaserver": free_port()}
        self.cloud = Daemon("cloudcore", work / "cloudcore.yaml", work / "cloudcore.log")
        self.edge = Daemon("edgecore", work / "edgecore.yaml", work / "edgecore.log", profile)

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metaserver']}"

    @property
    def pids(self) -> list[int]:
        assert self.plane.proc is not None
        return [self.plane.proc.pid, self.cloud.pid, self.edge.pid]

    def start(self) -> None:
        self.plane.start()
        self.plane.kubectl("apply", "-f", str(ROOT / "config/crds/reliablesyncs"))
        self.plane.kubectl("wait", "--for=condition=established", "--timeout=20s",
                           "crd/objectsyncs.reliablesyncs.kubeedge.io",
                           "crd/clusterobjectsyncs.reliablesyncs.kubeedge.io")
        write_configs(self.work, self.plane, self.ports, "")
        self.cloud.start()

    async def start_edge(self) -> None:
        await self.cloud.wait_log('"cloudcore started"')
        await self.cloud.wait_log('"websocket server listening"')
        token = base64.b64decode(self.plane.kubectl("get", "secret", "tokensecret", "-n", "kubeedge", "-o",
                                                    "jsonpath={.data.tokendata}").stdout).decode()
        write_configs(self.work, self.plane, self.ports, token)
        self.edge.start()
        await self.edge.wait_log('"metaserver listening"')
        await self.edge.wait_log('"connected to cloudcore"', timeout=60)

    def stop(self) -> None:
        """Each process by its PID, edge first; one failing to stop does not keep the others running."""
        steps = [self.edge.stop, self.cloud.stop, *([self.plane.stop] if self.plane.proc is not None else [])]
        for step in steps:
            try:
                step()
            except Exception as exc:  # report it and go on stopping the rest
                print(f"stopping: {exc!r}", file=sys.stderr)


async def latency(cloud: aiohttp.ClientSession, edge: aiohttp.ClientSession, rig: Rig, count: int,
                  ) -> tuple[list[float], list[float], float]:
    """Services: one at a time (ms each), then a burst of `count` (ms each, and s from first create to last
    arrival)."""
    create_url = f"{rig.plane.url}/api/v1/namespaces/{NAMESPACE}/services"
    async with EdgeWatch(edge, f"{rig.edge_url}/api/v1/namespaces/{NAMESPACE}/services") as watch:
        single: list[float] = []
        for i in range(WARM_UP + count):
            name = f"lat-{i:04d}"
            returned = await post(cloud, create_url, service(name))
            await watch.wait([name], 30)
            if i >= WARM_UP:
                single.append((watch.arrived[name] - returned) * 1000)
            await asyncio.sleep(GAP)
        await settle(rig.pids)
        bodies = [service(f"burst-{i:04d}") for i in range(count)]
        began = time.perf_counter()
        returned_at = await create_many(cloud, create_url, bodies)
        await watch.wait(returned_at, 60)
        burst = [(watch.arrived[name] - returned) * 1000 for name, returned in returned_at.items()]
        span = max(watch.arrived[name] for name in returned_at) - began
    return single, burst, span


async def measure(quick: bool, profile: Path | None) -> list[str]:
    pods, objects = (1_000, 30) if quick else (5_000, 100)
    began_run = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgesync-bench-") as scratch:
        rig = Rig(Path(scratch), profile)
        try:
            rig.start()
            await rig.start_edge()
            connector = aiohttp.TCPConnector(limit=CLIENTS, ssl=cloud_tls(rig.plane))
            async with aiohttp.ClientSession(connector=connector) as cloud, aiohttp.ClientSession() as edge:
                return await run(rig, cloud, edge, pods, objects, began_run)
        finally:
            rig.stop()


async def run(rig: Rig, cloud: aiohttp.ClientSession, edge: aiohttp.ClientSession, pods: int, objects: int,
              began_run: float) -> list[str]:
    async def node_in_cloud() -> bool:
        async with cloud.get(f"{rig.plane.url}/api/v1/nodes/{NODE}") as response:
            found = await response.json() if response.status == 200 else {}
        return EDGE_LABEL in ((found.get("metadata") or {}).get("labels") or {})

    async def node_at_edge() -> bool:
        async with edge.get(f"{rig.edge_url}/api/v1/nodes/{NODE}") as response:
            await response.read()
            return response.status == 200

    await poll(node_in_cloud, "edged registered the Node in the cloud", 60)
    await poll(node_at_edge, "the edge's own Node through MetaServer", 60)
    waited = await settle(rig.pids)
    rss_idle = rss_mib(rig.edge.pid)
    print(f"setup: control plane, cloudcore, edgecore up, node {NODE} registered and at the edge, "
          f"{time.monotonic() - began_run:.1f} s; settled in {waited:.1f} s; edgecore RSS idle {rss_idle:.1f} MB")

    single, burst, span = await latency(cloud, edge, rig, objects)
    print(f"latency: Service create returned -> ADDED at a MetaServer watch, one at a time ({objects} after "
          f"{WARM_UP} warm-up): p50 {percentile(single, 50):.1f} ms, p99 {percentile(single, 99):.1f} ms, "
          f"max {max(single):.1f} ms")
    print(f"latency: {objects} created in a burst ({CLIENTS} at a time): p50 {percentile(burst, 50):.1f} ms, "
          f"p99 {percentile(burst, 99):.1f} ms; first create -> last arrival {span * 1000:.0f} ms")

    await settle(rig.pids)
    pod_url = f"{rig.plane.url}/api/v1/namespaces/{NAMESPACE}/pods"
    cpu_before = [cpu_seconds(pid) for pid in rig.pids] + [time.process_time()]
    async with EdgeWatch(edge, f"{rig.edge_url}/api/v1/pods") as watch:
        began = time.perf_counter()
        returned = await create_many(cloud, pod_url, [pod(f"p-{i:05d}") for i in range(pods)])
        created = time.perf_counter() - began
        await watch.wait(returned, 60 + pods / 20)
        reached = max(watch.arrived.values()) - began
        reopened = watch.reopened
    print(f"pods: {pods:,} bound to {NODE} created in {created:.2f} s ({pods / created:,.0f}/s, {CLIENTS} "
          f"connections); all ADDED at the MetaServer watch {reached:.2f} s after the first create "
          f"({pods / reached:,.0f}/s; watch reopened {reopened} times)")
    rss_synced = rss_mib(rig.edge.pid)
    waited = await settle(rig.pids, timeout=20 + pods / 100)  # the cloud still records the ACKs (ObjectSync)
    cpu = [after - before for after, before in
           zip([cpu_seconds(pid) for pid in rig.pids] + [time.process_time()], cpu_before, strict=True)]
    print(f"pods: edgecore RSS {rss_synced:.1f} MB right after the last arrival; processes idle {waited:.1f} s later; "
          f"CPU s from the first create until idle: control plane {cpu[0]:.1f}, cloudcore {cpu[1]:.1f}, "
          f"edgecore {cpu[2]:.1f}, this client {cpu[3]:.1f} ({os.cpu_count()} CPUs)")

    results: dict[tuple[str, bool], list[float]] = {}
    for table in (False, True):
        for side, url, session in (("edge", rig.edge_url, edge), ("cloud", rig.plane.url, cloud)):
            times = []
            for _ in range(1 + LISTS):
                elapsed, items = await timed_list(session, url, table)
                if items != pods:
                    raise RuntimeError(f"{side} list ({'table' if table else 'json'}): {items} items, not {pods}")
                times.append(elapsed)
            results[side, table] = times
    for table in (False, True):
        form = "Table (kubectl get)" if table else "JSON (kubectl get -o json, no chunking)"
        edge_times, cloud_times = results["edge", table][1:], results["cloud", table][1:]
        print(f"list {pods:,} pods, {form}: MetaServer median {statistics.median(edge_times):.0f} ms "
              f"(runs {', '.join(f'{t:.0f}' for t in edge_times)}; warm-up {results['edge', table][0]:.0f}); "
              f"control plane (baseline) median {statistics.median(cloud_times):.0f} ms "
              f"(runs {', '.join(f'{t:.0f}' for t in cloud_times)}; warm-up {results['cloud', table][0]:.0f})")
    await settle(rig.pids)
    rss_full = rss_mib(rig.edge.pid)
    print(f"rss: edgecore {rss_idle:.1f} MB idle, {rss_full:.1f} MB with {pods:,} pods after the lists; "
          f"control plane {rss_mib(rig.pids[0]):.1f} MB, cloudcore {rss_mib(rig.cloud.pid):.1f} MB")

    def median_of(side: str, table: bool) -> float:
        return statistics.median(results[side, table][1:])

    return [
        f"edgesync_create_to_metaserver_p50: {percentile(single, 50):.1f} ms (target none)",
        f"edgesync_create_to_metaserver_p99: {percentile(single, 99):.1f} ms (target <= 300 ms)",
        f"edgesync_create_to_metaserver_burst_p50: {percentile(burst, 50):.1f} ms (target none)",
        f"edgesync_create_to_metaserver_burst_p99: {percentile(burst, 99):.1f} ms (target none)",
        f"edgesync_metaserver_list_{pods}_pods: {median_of('edge', False):.0f} ms (target <= 200 ms)",
        f"edgesync_controlplane_list_{pods}_pods: {median_of('cloud', False):.0f} ms (target none)",
        f"edgesync_metaserver_list_{pods}_pods_table: {median_of('edge', True):.0f} ms (target none)",
        f"edgesync_controlplane_list_{pods}_pods_table: {median_of('cloud', True):.0f} ms (target none)",
        f"edgesync_pods_to_edge_{pods}: {reached:.2f} s (target none)",
        f"edgesync_edgecore_rss_idle: {rss_idle:.1f} MB (target <= 80 MB)",
        f"edgesync_edgecore_rss_{pods}: {rss_full:.1f} MB (target none)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 pods and 30 latency samples: under 60 s")
    parser.add_argument("--profile-edge", type=Path, metavar="FILE",
                        help="run edgecore under cProfile, stats written to FILE when it stops")
    args = parser.parse_args()
    profile = args.profile_edge.resolve() if args.profile_edge else None
    for line in asyncio.run(measure(args.quick, profile)):
        print(line)


if __name__ == "__main__":
    main()
