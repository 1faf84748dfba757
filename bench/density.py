#!/usr/bin/env python3
"""Upstream's density test in miniature (issue 10): hollow edge nodes against the embedded control plane and
one real cloudcore; pod startup latency, cloudcore memory per node, steady-state messages per node, and the
recovery of every node after a partition of all of them.

Processes, all on this machine:

- the embedded control plane (`python -m cloudcore controlplane`, controllers on: scheduler, node lifecycle,
  ...) with `--node-monitor-grace-period` lowered (20 s; 12 s with --quick; it must stay above edged's 10 s
  status and Lease interval, or nodes flap) so that the partition below makes
  the nodes NotReady (Ready=Unknown) before it ends; the reliablesyncs CRDs applied;
- cloudcore (`python -m cloudcore`: CloudHub over WebSocket, EdgeController, ..., monitor server for
  /metrics), nodeLimit raised above the node count, --v=2; all of config/crds applied;
- hollow edge processes (bench/density_edge.py, 250 nodes each): per node edgecore's real EdgeHub and
  MetaManager (own SQLite file on tmpfs) and a hollow edged, i.e. edged's registration, node status and
  Lease code with the CRI replaced by a fake runtime that reports every pod Running at once;
- this script: the cloud client (aiohttp, admin certificate).

Pods: bare pause pods without a node, created at a fixed rate (`--rate`, 50/s; as upstream's density test
creates its pods at a fixed rate) and placed by the control plane's scheduler, which spreads them (10 per node
at the full size). Startup latency per pod: from the create request being sent to the first event with phase
Running at a pod WATCH the script opened before (create -> Running seen by the cloud). Baseline in the same
run: a fresh control plane with the same number of hollow nodes that talk to it directly (bench/density_direct.py:
no cloudcore, no EdgeHub/MetaManager; same status builders) and the same pods at the same rate.

Other figures:

- cloudcore RSS per node: cloudcore's VmRSS with every node connected and every pod Running, after the idle
  window, minus its VmRSS before the first node connected (CloudHub listening, idle), divided by the nodes;
- messages per node per second at steady state: cloudcore's /metrics counters `kubeedge_cloudhub_messages_
  received_total` + `kubeedge_cloudhub_messages_sent_total` + `kubeedge_cloudhub_acks_total`, over an idle
  window (30 s; 5 s with --quick) once all pods are Running and cloudcore's queues are empty, per node;
- partition: every hollow EdgeHub's connection is aborted (TCP RST) and its dials fail at once for 30 s (16 s
  with --quick); then they may dial again. Recovery: from the heal to the first LIST of Nodes in which every
  node is Ready=True (polled every 0.5 s). EdgeHub's own reconnect back-off (full jitter, 30 s cap) applies.

    .venv/bin/python bench/density.py [--quick] [--nodes N] [--pods-per-node P] [--rate R] [--no-baseline]
                                      [--cloudcores N]

With `--cloudcores N` the edge phase runs N cloudcores against the one control plane, each node listing all
of them (edgeHub.websocket.server, comma-separated, starting at a different one per node) and each instance
with cloudHub.nodeLease on (docs/ha.md); RSS per node is summed over the instances, messages over their
/metrics.

Last lines: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.density_edge import FAKE_RUNTIME  # noqa: E402
from bench.edgesync import Watch, cpu_seconds, percentile, rss_mib  # noqa: E402
from cloudcore.cloudhub.secrets import CA_DATA, CA_KEY_DATA, CA_SECRET, NAMESPACE  # noqa: E402
from common.pki import KeyPair, load_cert, load_private_key  # noqa: E402
from tests.fixtures.controlplane import ControlPlaneProcess  # noqa: E402
from tests.fixtures.daemons import Daemon  # noqa: E402
from tests.fixtures.mosquitto import free_port  # noqa: E402

NODES_PER_PROCESS: Final = 250
CLIENTS: Final = 16  # concurrent creates at most
POD_NAMESPACE: Final = "default"
MESSAGE_COUNTERS: Final = ("kubeedge_cloudhub_messages_received_total", "kubeedge_cloudhub_messages_sent_total",
                           "kubeedge_cloudhub_acks_total")
STATUS_SKIPS: Final = "kubeedge_cloudhub_status_only_skips_total"


def say(*words: object) -> None:
    print(*words, flush=True)


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


async def settle(pids: Iterable[int], timeout: float, window: float = 0.5, busy: float = 0.1) -> float:
    """Wait until every process uses less than `busy` of a CPU over `window` s; seconds waited (<= timeout)."""
    began = time.monotonic()
    pids = list(pids)
    while time.monotonic() - began < timeout:
        before = [cpu_seconds(pid) for pid in pids]
        await asyncio.sleep(window)
        if all(cpu_seconds(pid) - used < busy * window for pid, used in zip(pids, before, strict=True)):
            break
    return time.monotonic() - began


# -- children ---------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A fleet process (bench/density_edge.py or density_direct.py): commands on stdin, answers on stdout."""

    proc: asyncio.subprocess.Process

    @classmethod
    async def start(cls, argv: list[str], log: Path) -> Child:
        err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *argv, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
        finally:
            os.close(err)
        return cls(proc)

    async def expect(self, word: str, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"fleet process {self.proc.pid} exited ({await self.proc.wait()}) "
                                       f"before {word!r}")
                fields = line.split()
                if fields and fields[0] == word:
                    return fields[1:]

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send("quit")
            try:
                await asyncio.wait_for(self.proc.wait(), 40)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# -- cloud client -----------------------------------------------------------------------------------------


def client_session(plane: ControlPlaneProcess) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=str(plane.data_dir / "pki/ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(plane.data_dir / "pki/admin.crt", plane.data_dir / "pki/admin.key")
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=CLIENTS + 4))


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status} {body[:300]!r}")
        return orjson.loads(body)


async def ready_nodes(session: aiohttp.ClientSession, server: str, prefix: str,
                      not_ready: list[str] | None = None) -> tuple[int, int]:
    """(nodes Ready=True, nodes) among those named `<prefix>-...`; `not_ready` gets the others' Ready."""
    listed = await get_json(session, f"{server}/api/v1/nodes")
    ready = total = 0
    for node in listed.get("items") or ():
        if not node["metadata"]["name"].startswith(prefix + "-"):
            continue
        total += 1
        conditions = [c for c in (node.get("status") or {}).get("conditions") or () if c.get("type") == "Ready"]
        if conditions and conditions[0].get("status") == "True":
            ready += 1
        elif not_ready is not None:
            not_ready.append(f"{node['metadata']['name']} {conditions}")
    return ready, total


async def wait_ready(session: aiohttp.ClientSession, server: str, prefix: str, nodes: int, timeout: float,
                     interval: float = 0.5) -> float:
    """Poll until all `nodes` are Ready=True; the monotonic time of the LIST that showed it."""
    deadline = time.monotonic() + timeout
    last = (0, 0)
    while time.monotonic() < deadline:
        last = await ready_nodes(session, server, prefix)
        if last[0] >= nodes:
            return time.monotonic()
        await asyncio.sleep(interval)
    stuck: list[str] = []
    await ready_nodes(session, server, prefix, stuck)
    raise RuntimeError(f"only {last[0]} of {nodes} nodes Ready ({last[1]} registered) after {timeout:.0f} s; "
                       f"not Ready: {'; '.join(stuck[:3])}")


class PodWatch(Watch):
    """A pod WATCH: when (monotonic) each pod was first seen bound and first seen Running."""

    def __init__(self, session: aiohttp.ClientSession, server: str) -> None:
        super().__init__(session, f"{server}/api/v1/namespaces/{POD_NAMESPACE}/pods", time.monotonic)
        self.bound: dict[str, float] = {}
        self.running: dict[str, float] = {}

    def seen(self, kind: str, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        if name not in self.bound and (obj.get("spec") or {}).get("nodeName"):
            self.bound[name] = now
        if name not in self.running and (obj.get("status") or {}).get("phase") == "Running":
            self.running[name] = now


def pause_pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": POD_NAMESPACE, "labels": {"app": "density"}},
            "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}],
                     "terminationGracePeriodSeconds": 0}}


@dataclass
class Startup:
    pods: int
    created: dict[str, float]
    bound: dict[str, float]
    running: dict[str, float]
    create_span: float

    @property
    def latencies(self) -> list[float]:
        return sorted(self.running[n] - t for n, t in self.created.items() if n in self.running)

    def step(self, first: dict[str, float], second: dict[str, float]) -> list[float]:
        return sorted(second[n] - first[n] for n in self.created if n in first and n in second)

    def summary(self, label: str) -> str:
        lat = self.latencies
        to_bound = self.step(self.created, self.bound)
        to_running = self.step(self.bound, self.running)
        return (f"{label}: {len(lat)} of {self.pods} pods Running; created in {self.create_span:.1f} s "
                f"({self.pods / self.create_span:.0f}/s); create -> Running p50 {percentile(lat, 50):.3f} s, "
                f"p90 {percentile(lat, 90):.3f} s, p99 {percentile(lat, 99):.3f} s, max {lat[-1]:.3f} s; "
                f"create -> bound p50 {percentile(to_bound, 50):.3f} / p99 {percentile(to_bound, 99):.3f} s; "
                f"bound -> Running p50 {percentile(to_running, 50):.3f} / p99 {percentile(to_running, 99):.3f} s")


async def create_pods(session: aiohttp.ClientSession, server: str, pods: int, rate: float,
                      timeout: float) -> Startup:
    """`pods` pause pods created at `rate` per second (16 requests in flight at most), each timed from its
    request being sent to Running at the watch."""
    created: dict[str, float] = {}
    gate = asyncio.Semaphore(CLIENTS)
    url = f"{server}/api/v1/namespaces/{POD_NAMESPACE}/pods"

    async def create(name: str) -> None:
        async with gate:
            created[name] = time.monotonic()
            async with session.post(url, data=orjson.dumps(pause_pod(name)),
                                    headers={"Content-Type": "application/json"}) as response:
                body = await response.read()
                if response.status != 201:
                    raise RuntimeError(f"create {name}: {response.status} {body[:300]!r}")

    async with PodWatch(session, server) as watch:
        began = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            for i in range(pods):
                await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
                tasks.create_task(create(f"density-{i:05d}"))
        span = time.monotonic() - began
        deadline = time.monotonic() + timeout
        while len(watch.running) < pods and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        return Startup(pods, created, dict(watch.bound), dict(watch.running), span)


# -- metrics ----------------------------------------------------------------------------------------------


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Every `kubeedge_cloudhub_*` sample of cloudcore's /metrics, by its full series name."""
    async with session.get(url, ssl=False) as response:
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("kubeedge_"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def counter_sum(samples: dict[str, float], names: Iterable[str]) -> float:
    wanted = tuple(names)
    return sum(v for k, v in samples.items() if k.split("{")[0] in wanted)


def pod_messages(samples: dict[str, float]) -> float:
    """Messages cloudcore sent about pods: the pods themselves and the answers to their status reports."""
    return sum(value for series, value in samples.items() if series.startswith(MESSAGE_COUNTERS[1] + "{")
               and ('type="pod"' in series or 'type="podstatus"' in series))


def by_type(before: dict[str, float], after: dict[str, float], name: str) -> str:
    parts = []
    for series, value in sorted(after.items()):
        if series.split("{")[0] != name:
            continue
        delta = value - before.get(series, 0.0)
        if delta:
            labels = series.partition("{")[2].rstrip("}").replace('"', "")
            parts.append(f"{labels}={delta:.0f}")
    return ", ".join(parts) or "none"


# -- phases -----------------------------------------------------------------------------------------------


@dataclass
class Options:
    nodes: int
    pods_per_node: int
    rate: float
    grace: float
    partition: float
    window: float
    baseline: bool
    cloudcores: int


async def baseline_phase(work: Path, opts: Options) -> Startup:
    plane = ControlPlaneProcess(work / "cp-direct")
    plane.start("--node-monitor-grace-period", str(opts.grace), "--v", "0")
    fleets: list[Child] = []
    try:
        async with client_session(plane) as session:
            per = math.ceil(opts.nodes / math.ceil(opts.nodes / (2 * NODES_PER_PROCESS)))
            for first in range(0, opts.nodes, per):
                fleets.append(await Child.start(
                    [str(ROOT / "bench/density_direct.py"), "--server", plane.url, "--pki",
                     str(plane.data_dir / "pki"), "--prefix", "direct", "--first", str(first),
                     "--count", str(min(per, opts.nodes - first))], work / f"direct-{first}.log"))
            for child in fleets:
                await child.expect("ready", 60 + opts.nodes / 10)
            await wait_ready(session, plane.url, "direct", opts.nodes, 60)
            say(f"baseline: {opts.nodes} direct hollow nodes Ready ({len(fleets)} processes); creating pods")
            startup = await create_pods(session, plane.url, opts.nodes * opts.pods_per_node, opts.rate,
                                        60 + opts.nodes * opts.pods_per_node / 100)
            say(startup.summary("baseline (nodes talk to the control plane directly)"))
            return startup
    finally:
        for child in fleets:
            await child.stop()
        plane.stop()


def write_cloudcore_config(work: Path, plane: ControlPlaneProcess, ports: dict[str, int], nodes: int,
                           index: int, instances: int) -> Path:
    """cloudcore-<index>.yaml; with several instances, each with the per-node Lease (docs/ha.md) on."""
    path = work / f"cloudcore-{index}.yaml"
    files = work / f"cloud-{index}"
    hub: dict[str, Any] = {
        "advertiseAddress": ["127.0.0.1"], "nodeLimit": max(nodes + 24, 500),
        "tlsCAFile": str(files / "ca.crt"), "tlsCAKeyFile": str(files / "ca.key"),
        "tlsCertFile": str(files / "server.crt"), "tlsPrivateKeyFile": str(files / "server.key"),
        "unixsocket": {"address": f"unix://{work}/kubeedge-{index}.sock"},
        "websocket": {"address": "127.0.0.1", "port": ports["ws"]},
        "https": {"address": "127.0.0.1", "port": ports["https"]}}
    if instances > 1:
        hub["nodeLease"] = {"enable": True, "identity": f"cloudcore-{index}"}
    path.write_text(yaml.safe_dump({
        "kubeAPIConfig": {"kubeConfig": str(plane.kubeconfig)},
        "commonConfig": {"monitorServer": {"bindAddress": f"127.0.0.1:{ports['monitor']}"}},
        "modules": {"cloudHub": hub}}))
    return path


async def wait_http(session: aiohttp.ClientSession, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url, ssl=False) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not 200 within {timeout} s")


async def scrape_all(session: aiohttp.ClientSession, urls: list[str]) -> dict[str, float]:
    """`scrape` of every cloudcore, summed per series."""
    total: dict[str, float] = {}
    for url in urls:
        for series, value in (await scrape(session, url)).items():
            total[series] = total.get(series, 0.0) + value
    return total


async def quiet_queues(session: aiohttp.ClientSession, metrics: list[str], timeout: float) -> tuple[float, float]:
    """Wait until the queues of the nodes each cloudcore serves and the ObjectSync backlogs are empty:
    (seconds waited, messages and records still queued; 0 unless the timeout ran out). With several
    cloudcores each also queues for the nodes the others serve (docs/ha.md); those never drain here."""
    began = time.monotonic()
    queued = 0.0
    while time.monotonic() - began < timeout:
        samples = await scrape_all(session, metrics)
        queued = counter_sum(samples, ["kubeedge_cloudhub_objectsync_backlog_records"]) + sum(
            value for series, value in samples.items()
            if series.startswith("kubeedge_cloudhub_queue_messages{") and 'connected="true"' in series)
        if queued == 0:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - began, queued


@dataclass
class EdgeFigures:
    startup: Startup
    rss_idle: float
    rss_connected: float
    rss_steady: float
    msgs_per_node_s: float
    startup_detail: str
    msgs_down_per_pod: float
    window_detail: str
    not_ready_at_heal: int
    reconnected: float
    recovered: float
    cpu: str


async def edge_phase(work: Path, opts: Options, db_dir: Path) -> EdgeFigures:
    plane = ControlPlaneProcess(work / "cp-edge")
    plane.start("--node-monitor-grace-period", str(opts.grace), "--v", "0")
    ports = [{"ws": free_port(), "https": free_port(), "monitor": free_port()} for _ in range(opts.cloudcores)]
    clouds = [Daemon("cloudcore", write_cloudcore_config(work, plane, p, opts.nodes, k, opts.cloudcores),
                     work / f"cloudcore-{k}.log", verbosity=2) for k, p in enumerate(ports)]
    fleets: list[Child] = []
    metrics = [f"http://127.0.0.1:{p['monitor']}/metrics" for p in ports]
    try:
        plane.kubectl("apply", "-R", "-f", str(ROOT / "config/crds"))
        plane.kubectl("wait", "--for=condition=established", "crd/objectsyncs.reliablesyncs.kubeedge.io",
                      "--timeout=20s")
        async with client_session(plane) as session:
            for cloud, p in zip(clouds, ports, strict=True):  # one at a time: the first one makes the CA
                cloud.start()
                await wait_http(session, f"http://127.0.0.1:{p['monitor']}/readyz", 60)
            assert plane.proc is not None
            cloud_pids = [cloud.proc.pid for cloud in clouds if cloud.proc is not None]
            plane_pid = plane.proc.pid
            secret = await get_json(session, f"{plane.url}/api/v1/namespaces/{NAMESPACE}/secrets/{CA_SECRET}")
            data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
            KeyPair(load_cert(data[CA_DATA]), load_private_key(data[CA_KEY_DATA])).write(work / "ca.crt",
                                                                                         work / "ca.key")
            await settle([*cloud_pids, plane_pid], 15)
            rss_idle = sum(rss_mib(pid) for pid in cloud_pids)
            processes = math.ceil(opts.nodes / NODES_PER_PROCESS)
            per = math.ceil(opts.nodes / processes)
            servers = ",".join(f"127.0.0.1:{p['ws']}" for p in ports)
            began = time.monotonic()
            for first in range(0, opts.nodes, per):
                fleets.append(await Child.start(
                    [str(ROOT / "bench/density_edge.py"), "--servers", servers, "--dir", str(work),
                     "--db-dir", str(db_dir), "--prefix", "hollow", "--first", str(first),
                     "--count", str(min(per, opts.nodes - first))], work / f"edge-{first}.log"))
            for child in fleets:
                await child.expect("ready", 120 + opts.nodes / 5)
            connected = time.monotonic() - began
            ready_at = await wait_ready(session, plane.url, "hollow", opts.nodes, 120)
            if opts.cloudcores > 1:
                served = [counter_sum(await scrape(session, url), ["kubeedge_cloudhub_connected_nodes"])
                          for url in metrics]
                say(f"edge: {opts.cloudcores} cloudcores serve {', '.join(f'{n:.0f}' for n in served)} nodes")
            say(f"edge: {opts.nodes} hollow edge nodes ({len(fleets)} processes) connected in {connected:.1f} s, "
                f"all Ready in the control plane {ready_at - began:.1f} s after the start; {FAKE_RUNTIME}")
            await quiet_queues(session, metrics, 30)
            rss_connected = sum(rss_mib(pid) for pid in cloud_pids)
            before_pods = await scrape_all(session, metrics)
            startup = await create_pods(session, plane.url, opts.nodes * opts.pods_per_node, opts.rate,
                                        60 + opts.nodes * opts.pods_per_node / 50)
            say(startup.summary("edge (cloudcore, EdgeHub, MetaManager, hollow edged)"))

            waited, queued = await quiet_queues(session, metrics, 120)
            await asyncio.sleep(2)
            after_pods = await scrape_all(session, metrics)
            down = pod_messages(after_pods) - pod_messages(before_pods)
            skips = counter_sum(after_pods, [STATUS_SKIPS]) - counter_sum(before_pods, [STATUS_SKIPS])
            startup_detail = (f"sent {by_type(before_pods, after_pods, MESSAGE_COUNTERS[1])}; received "
                              f"{by_type(before_pods, after_pods, MESSAGE_COUNTERS[0])}; status-only pod updates "
                              f"recorded, not sent: {skips:.0f}")
            state = "empty" if queued == 0 else f"still holding {queued:.0f} messages/records"
            say(f"edge: cloudcore queues and ObjectSync backlog {state} {waited:.1f} s after the pod wait ended; "
                f"idle window of {opts.window:.0f} s")
            pids = {**{f"cloudcore{k}": pid for k, pid in enumerate(cloud_pids)}, "control plane": plane_pid,
                    **{f"edge{k}": c.proc.pid for k, c in enumerate(fleets)}}
            cpu_before = {k: cpu_seconds(p) for k, p in pids.items()}
            before = await scrape_all(session, metrics)
            window_began = time.monotonic()
            await asyncio.sleep(opts.window)
            after = await scrape_all(session, metrics)
            window = time.monotonic() - window_began
            cpu = ", ".join(f"{k} {(cpu_seconds(p) - cpu_before[k]) / window * 100:.0f}%" for k, p in pids.items())
            messages = counter_sum(after, MESSAGE_COUNTERS) - counter_sum(before, MESSAGE_COUNTERS)
            acks = counter_sum(after, MESSAGE_COUNTERS[2:]) - counter_sum(before, MESSAGE_COUNTERS[2:])
            detail = (f"received {by_type(before, after, MESSAGE_COUNTERS[0])}; "
                      f"sent {by_type(before, after, MESSAGE_COUNTERS[1])}; acks {acks:.0f}")
            rss_steady = sum(rss_mib(pid) for pid in cloud_pids)

            for child in fleets:
                child.send("cut")
            for child in fleets:
                await child.expect("cut", 30)
            say(f"edge: partition of all {opts.nodes} nodes for {opts.partition:.0f} s (connections aborted, "
                f"dials refused); node-monitor-grace-period {opts.grace:.0f} s")
            await asyncio.sleep(opts.partition)
            ready, _ = await ready_nodes(session, plane.url, "hollow")
            healed = time.monotonic()
            for child in fleets:
                child.send("heal")
            reconnect = asyncio.gather(*(child.expect("connected", 120) for child in fleets))
            try:
                recovered_at = await wait_ready(session, plane.url, "hollow", opts.nodes, 180)
            except RuntimeError as exc:  # reported as a figure (inf), not a crash
                say(f"partition: {exc}")
                recovered_at = math.inf
            try:
                reconnected = max(float(fields[0]) for fields in await asyncio.wait_for(reconnect, 60))
            except TimeoutError:
                reconnected = math.inf
            return EdgeFigures(startup, rss_idle, rss_connected, rss_steady, messages / window / opts.nodes,
                               startup_detail, down / max(1, opts.nodes * opts.pods_per_node), detail,
                               opts.nodes - ready, reconnected - healed, recovered_at - healed, cpu)
    finally:
        for child in fleets:
            await child.stop()
        for cloud in clouds:
            cloud.stop()
        plane.stop()


async def run(opts: Options, scratch: Path, shm: Path) -> list[str]:
    db_dir = Path(tempfile.mkdtemp(prefix="density-bench-db-", dir=shm))
    try:
        say(f"density: {opts.nodes} nodes x {opts.pods_per_node} pods at {opts.rate:.0f} pods/s, "
            f"{os.cpu_count()} CPUs, load average {load_average()}; node SQLite files on {shm}")
        base = await baseline_phase(scratch, opts) if opts.baseline else None
        say(f"load average {load_average()} before the edge phase")
        edge = await edge_phase(scratch, opts, db_dir)
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)
    per_node_kib = (edge.rss_steady - edge.rss_idle) * 1024 / opts.nodes
    say(f"cloudcore RSS: {edge.rss_idle:.1f} MiB idle, {edge.rss_connected:.1f} MiB with {opts.nodes} nodes "
        f"connected, {edge.rss_steady:.1f} MiB with their {opts.nodes * opts.pods_per_node} pods Running "
        f"({(edge.rss_connected - edge.rss_idle) * 1024 / opts.nodes:.0f} KiB per node without pods)")
    say(f"pod start-up messages: {edge.startup_detail}")
    say(f"idle window: {edge.window_detail}; CPU: {edge.cpu}")
    say(f"partition: {edge.not_ready_at_heal} of {opts.nodes} nodes not Ready when it ended; all reconnected "
        f"{edge.reconnected:.1f} s after the heal, all Ready {edge.recovered:.1f} s after it")
    if opts.cloudcores == 1:
        say("3 cloudcores: not measured in this run (`--cloudcores 3`: several instances with cloudHub.nodeLease)")
    lat = edge.startup.latencies
    lines = []
    name = "density" if opts.cloudcores == 1 else f"density_{opts.cloudcores}cloudcores"
    if base is not None:
        base_lat = base.latencies
        lines.append(f"density_baseline_startup_p99: {percentile(base_lat, 99):.3f} s (target none)")
        lines.append(f"density_startup_p50_vs_baseline: {percentile(lat, 50) / percentile(base_lat, 50):.2f} x "
                     f"(target none)")
    missing = edge.startup.pods - len(lat)
    lines += [f"{name}_pods_not_running: {missing} pods (target 0)",
              f"{name}_startup_p50: {percentile(lat, 50):.3f} s (target none)",
              f"{name}_startup_p90: {percentile(lat, 90):.3f} s (target none)",
              f"{name}_startup_p99: {percentile(lat, 99):.3f} s (target <= 4.0 s)",
              f"{name}_cloudcore_rss_per_node: {per_node_kib / 1024:.2f} MB (target <= 2 MB)",
              f"{name}_msgs_per_node_per_s: {edge.msgs_per_node_s:.2f} msgs (target none)",
              f"{name}_pod_msgs_down_per_pod_started: {edge.msgs_down_per_pod:.2f} msgs (target none)",
              f"{name}_partition_recovery: {edge.recovered:.1f} s (target <= 30 s)"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 nodes x 5 pods, shorter windows (< 60 s)")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--pods-per-node", type=int)
    parser.add_argument("--rate", type=float, help="pod creates per second (default 50; 100 with --quick)")
    parser.add_argument("--grace", type=float, help="control plane node-monitor-grace-period, s (20; 12 quick); "
                        "above edged's 10 s status and Lease interval, or nodes flap")
    parser.add_argument("--partition", type=float, help="partition length, s (30; 16 with --quick)")
    parser.add_argument("--window", type=float, help="idle window for messages per node, s (30; 5 quick)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the direct-to-API baseline phase")
    parser.add_argument("--cloudcores", type=int, default=1,
                        help="cloudcore instances sharing the nodes (cloudHub.nodeLease, docs/ha.md; default 1)")
    args = parser.parse_args()
    quick = args.quick
    opts = Options(nodes=args.nodes or (100 if quick else 1000),
                   pods_per_node=args.pods_per_node or (5 if quick else 10),
                   rate=args.rate or (100.0 if quick else 50.0), grace=args.grace or (12.0 if quick else 20.0),
                   partition=args.partition or (16.0 if quick else 30.0),
                   window=args.window or (5.0 if quick else 30.0), baseline=not args.no_baseline,
                   cloudcores=args.cloudcores)
    scratch = Path(tempfile.mkdtemp(prefix="density-bench-"))
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    try:
        lines = asyncio.run(run(opts, scratch, shm))
    except BaseException:
        print(f"logs kept in {scratch}", file=sys.stderr)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
