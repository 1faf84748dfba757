#!/usr/bin/env python3
"""Edge pods from `kubectl apply` to Running as the cloud sees it, beside the raw CRI cost of the same pods.

Needs root (it runs its own containerd). Processes: a private containerd (CRI, bridge CNI, the locally
built busybox and pause images; common.hostsvc.containerd), the embedded control plane, cloudcore and
edgecore (tests/fixtures/edge_rig.py; `--v=2`, nodeStatusUpdateFrequency 10 s as upstream), and this
script: the cloud client (aiohttp, the admin client certificate) and a CRI client (edgecore.cri).

Figures:

- raw CRI: RunPodSandbox + CreateContainer + StartContainer of the pod shape the Deployment makes (same
  sandbox and container configs as edged builds: edgecore.edged.pods.configs; pod network), measured
  straight against containerd, one pod at a time (N after one warm-up). Also, for information, N such
  pods started at once (what edged faces when N pods arrive together);
- edged: a Deployment of N replicas (busybox `httpd -f`) pinned to the edge node is created; a pod watch
  opened before gives, per pod, the time from its ADDED event (the pod's creation) to the first event
  with phase Running (the edge's status written back to the API server). p50 and p99, and the ratio
  p50 / raw p50;
- edgecore's VmRSS (/proc/<pid>/status) with the N pods running, once every process is idle.

Where the time goes: per pod, the stages seen at the cloud (bound to the node) and in edgecore's log
(stored at the edge with `--trace`, which runs the daemons at `--v=4`; sandbox started, container
started), medians of each step.

    sudo .venv/bin/python bench/edged.py [--quick] [--trace]

`--quick`: 5 pods. Everything it starts is stopped and removed at the end (pods, daemons, containerd,
its directories and bridge). Last lines: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.edgesync import cloud_tls, cpu_seconds, expect_json, percentile, rss_mib, settle  # noqa: E402
from common.hostsvc import containerd as ctd  # noqa: E402
from edgecore.cri import CRIClient  # noqa: E402
from edgecore.cri.types import PodSandboxFilter  # noqa: E402
from edgecore.edged.pods.configs import RuntimeOptions, container_config, sandbox_config  # noqa: E402
from edgecore.edged.pods.spec import PodSpec, parse_pod  # noqa: E402
from tests.fixtures.edge_rig import EdgeRig, deployment, edge_rig, wait  # noqa: E402

NODE: Final = "edged-bench"
APP: Final = "bench"
RAW_LABEL: Final = "kubeedge-py.bench/raw"
_LOG_LINE: Final = re.compile(r'^I(\d{4} \d\d:\d\d:\d\d\.\d{6}) +\d+ \w+\] "([^"]+)"(.*)$')


# -- containerd ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def private_containerd() -> Iterator[ctd.ContainerdLayout]:
    """A containerd of this run's own under /run (short paths for sockets), removed with everything in it."""
    tag = f"kb{secrets.token_hex(3)}"
    base = Path("/run") / f"ke-bench-{tag}"
    layout = ctd.ContainerdLayout.from_base(base / "containerd", tag)
    daemon = None
    try:
        daemon = ctd.start(layout)
        ctd.ensure_local_images(layout, base / "images")
        yield layout
    finally:
        ctd.teardown(layout, daemon)
        shutil.rmtree(base, ignore_errors=True)


# -- raw CRI ------------------------------------------------------------------------------------------------


def pod_template() -> dict[str, Any]:
    return dict(orjson.loads(deployment(APP, NODE, 1))["spec"]["template"])


def raw_spec(index: int) -> PodSpec:
    template = pod_template()
    return parse_pod({"metadata": {**template["metadata"], "name": f"raw-{index}", "namespace": "bench-raw",
                                   "uid": str(uuid.uuid4()), "labels": {RAW_LABEL: "1"}},
                      "spec": {**template["spec"], "nodeName": NODE}})


async def start_raw(cri: CRIClient, spec: PodSpec, options: RuntimeOptions) -> float:
    """Seconds for RunPodSandbox + CreateContainer + StartContainer of one pod, as edged configures them."""
    began = time.perf_counter()
    config = sandbox_config(spec, 0, options)
    sandbox = await cri.run_pod_sandbox(config)
    container = await cri.create_container(sandbox, container_config(spec, spec.containers[0], 0), config)
    await cri.start_container(container)
    return time.perf_counter() - began


async def remove_raw(cri: CRIClient) -> None:
    for sandbox in await cri.list_pod_sandbox(PodSandboxFilter(label_selector={RAW_LABEL: "1"})):
        with contextlib.suppress(Exception):
            await cri.stop_pod_sandbox(sandbox.id)
        await cri.remove_pod_sandbox(sandbox.id)


async def raw_cri(layout: ctd.ContainerdLayout, count: int, scratch: Path) -> tuple[list[float], list[float]]:
    """Seconds per pod: one at a time (after a warm-up pod), then `count` at once."""
    options = RuntimeOptions(log_root=scratch / "raw-logs", root_dir=scratch / "raw-kubelet")
    async with CRIClient(f"unix://{layout.socket}") as cri:
        try:
            single = [await start_raw(cri, raw_spec(i), options) for i in range(count + 1)][1:]
            await remove_raw(cri)
            burst = await asyncio.gather(*(start_raw(cri, raw_spec(100 + i), options) for i in range(count)))
        finally:
            await remove_raw(cri)
    return single, list(burst)


# -- edged --------------------------------------------------------------------------------------------------


@dataclass
class PodTimes:
    """Wall-clock seconds (time.time(), comparable with the daemons' log stamps) of each pod's milestones."""

    added: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)


async def watch_pods(session: aiohttp.ClientSession, url: str, times: PodTimes, opened: asyncio.Event) -> None:
    params = {"watch": "1", "labelSelector": f"app={APP}"}
    async with session.get(f"{url}/api/v1/namespaces/default/pods", params=params,
                           timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
        if response.status != 200:
            raise RuntimeError(f"pod watch: {response.status} {await response.text()}")
        opened.set()
        async for line in response.content:
            now = time.time()
            event = orjson.loads(line)
            pod = event["object"]
            name = pod["metadata"]["name"]
            times.added.setdefault(name, now)
            if pod["spec"].get("nodeName"):
                times.bound.setdefault(name, now)
            if (pod.get("status") or {}).get("phase") == "Running":
                times.running.setdefault(name, now)


def busy_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each process, and by the whole machine (/proc/stat, all CPUs)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return {**{name: cpu_seconds(pid) for name, pid in pids.items()},
            "machine": (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")}


async def run_deployment(rig: EdgeRig, count: int) -> tuple[PodTimes, float]:
    """Create the Deployment; wait until all its pods are Running in the cloud. Returns the times and
    edgecore's RSS (MiB) once every process is idle with the pods running."""
    assert rig.plane.proc is not None and rig.cloud.proc is not None and rig.edge.proc is not None
    pids = {"edgecore": rig.edge.proc.pid, "cloudcore": rig.cloud.proc.pid, "control plane": rig.plane.proc.pid}
    times = PodTimes()
    opened = asyncio.Event()
    connector = aiohttp.TCPConnector(ssl=cloud_tls(rig.plane))
    async with aiohttp.ClientSession(connector=connector) as cloud:
        watcher = asyncio.create_task(watch_pods(cloud, rig.plane.url, times, opened))
        try:
            async with asyncio.timeout(30):
                await opened.wait()
            async with cloud.post(f"{rig.plane.url}/apis/apps/v1/namespaces/default/deployments",
                                  data=deployment(APP, NODE, count),
                                  headers={"Content-Type": "application/json"}) as response:
                await expect_json(response, 201)
            before = busy_seconds(pids)
            async with asyncio.timeout(60 + 5 * count):
                while len(times.running) < count:
                    if watcher.done():
                        raise RuntimeError("the pod watch ended") from watcher.exception()
                    await asyncio.sleep(0.05)
            used = {name: spent - before[name] for name, spent in busy_seconds(pids).items()}
            print("cpu s from the create until all Running: " + ", ".join(f"{name} {spent:.2f}"
                  for name, spent in used.items()) + f" (machine: {os.cpu_count()} CPUs, containerd, shims, "
                  "runc and CNI plugins included)")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    await settle(pids.values())
    return times, rss_mib(rig.edge.proc.pid)


def delete_all(rig: EdgeRig) -> float:
    """Delete the Deployment; seconds until edged removed every sandbox and container of it."""
    began = time.monotonic()
    rig.plane.kubectl("delete", "deployment", APP, "--wait=false")
    wait(lambda: not rig.containers(APP), "every pod of the Deployment gone from containerd", timeout=90)
    return time.monotonic() - began


# -- where the time goes ------------------------------------------------------------------------------------


def log_stamps(log: Path, message: str, key: str, value: re.Pattern[str]) -> dict[str, float]:
    """First wall-clock time of `message` per pod name, the name taken from the field `key`."""
    year = datetime.now().year
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        parsed = _LOG_LINE.match(line)
        if parsed is None or parsed.group(2) != message:
            continue
        field_value = re.search(rf'{key}="([^"]*)"', parsed.group(3))
        name = value.fullmatch(field_value.group(1)) if field_value else None
        if name is not None:
            stamp = datetime.strptime(f"{year}{parsed.group(1)}", "%Y%m%d %H:%M:%S.%f").timestamp()
            found.setdefault(name.group(1), stamp)
    return found


def stages(rig: EdgeRig, times: PodTimes) -> list[tuple[str, dict[str, float]]]:
    """Each pod's milestones in order; a stage absent from the logs (stored: only at --v=4) is left out."""
    log = rig.edge.log
    steps = [
        ("created (ADDED at the cloud watch)", times.added),
        ("bound to the node", times.bound),
        ("stored at the edge", log_stamps(log, "stored", "resource", re.compile(r"default/pod/(.+)"))),
        ("sandbox started", log_stamps(log, "pod sandbox started", "pod", re.compile(r"default/(.+)"))),
        ("container started", log_stamps(log, "container started", "pod", re.compile(r"default/(.+)"))),
        ("Running at the cloud watch", times.running),
    ]
    return [(name, stamps) for name, stamps in steps if stamps]


def print_breakdown(rig: EdgeRig, times: PodTimes) -> None:
    steps = stages(rig, times)
    print("where the time goes (ms, median / max over the pods, each step from the one before):")
    for (_, before), (name, after) in itertools.pairwise(steps):
        gaps = [(after[pod] - before[pod]) * 1000 for pod in times.running if pod in before and pod in after]
        if gaps:
            print(f"  -> {name}: {statistics.median(gaps):.0f} / {max(gaps):.0f}")
    first, last = min(times.added.values()), max(times.running.values())
    print(f"  first pod created -> last pod Running: {(last - first) * 1000:.0f} ms")


# -- the run ------------------------------------------------------------------------------------------------


def measure(quick: bool, trace: bool) -> list[str]:
    count = 5 if quick else 20
    began = time.monotonic()
    with private_containerd() as layout, tempfile.TemporaryDirectory(prefix="edged-bench-") as scratch:
        single, burst = asyncio.run(raw_cri(layout, count, Path(scratch)))
        raw = statistics.median(single)
        print(f"raw CRI (RunPodSandbox + CreateContainer + StartContainer, pod network), {count} one at a time: "
              f"p50 {raw * 1000:.0f} ms, max {max(single) * 1000:.0f} ms; {count} at once: "
              f"p50 {percentile(burst, 50) * 1000:.0f} ms, p99 {percentile(burst, 99) * 1000:.0f} ms")
        with edge_rig(Path(scratch) / "rig", layout, NODE, verbosity=4 if trace else 2,
                      status_interval="10s") as rig:
            print(f"setup: containerd, control plane, cloudcore, edgecore up, node Ready: "
                  f"{time.monotonic() - began:.1f} s")
            times, rss = asyncio.run(run_deployment(rig, count))
            latency = [times.running[pod] - times.added[pod] for pod in times.running]
            p50, p99 = percentile(latency, 50), percentile(latency, 99)
            print(f"edged: {count} pods, created -> Running at the cloud: p50 {p50 * 1000:.0f} ms, "
                  f"p99 {p99 * 1000:.0f} ms, max {max(latency) * 1000:.0f} ms; p50 / raw p50 of {count} at once: "
                  f"{p50 / percentile(burst, 50):.2f}")
            print_breakdown(rig, times)
            print(f"rss: edgecore {rss:.1f} MB with {count} pods running")
            print(f"delete: the Deployment -> no sandbox or container left: {delete_all(rig):.1f} s")
    print(f"whole run: {time.monotonic() - began:.1f} s")
    return [
        f"edged_running_p50: {p50:.2f} s (target <= 1.0 s)",
        f"edged_running_p99: {p99:.2f} s (target <= 2.0 s)",
        f"edged_cri_raw_p50: {raw:.3f} s (target none)",
        f"edged_ratio: {p50 / raw:.1f} x (target none)",
        f"edged_cri_raw_{count}_at_once_p50: {percentile(burst, 50):.2f} s (target none)",
        f"edged_ratio_{count}_at_once: {p50 / percentile(burst, 50):.2f} x (target none)",
        f"edgecore_rss_{count}_pods: {rss:.1f} MB (target <= 90 MB)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 pods: under 60 s")
    parser.add_argument("--trace", action="store_true", help="daemons at --v=4: the breakdown shows when "
                                                             "each pod was stored at the edge")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/edged.py runs its own containerd: run it as root")
    for line in measure(args.quick, args.trace):
        print(line)


if __name__ == "__main__":
    main()
