"""The embedded control plane's scheduler at fleet size: N Ready nodes, P pending pods created as fast
as the API takes them, time until every pod is bound; and the control plane's CPU seconds for it.

    .venv/bin/python bench/scheduler.py [--quick] [--nodes N] [--pods P]

No cloudcore and no edge: only the control plane process (API server + scheduler on SQLite) and this
client (kubernetes_asyncio, 16 requests in flight). Baseline in the same run: the same pods created
with spec.nodeName already set (no scheduling), so `scheduler_ratio` is what scheduling adds to
creating and storing a pod. Figures: pods bound per second, the control plane's CPU milliseconds per
scheduled pod, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.edgesync import cpu_seconds  # noqa: E402
from tests.fixtures.controlplane import ControlPlaneProcess  # noqa: E402

IN_FLIGHT = 16


def node(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"bench": "scheduler"}},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, node_name: str = "") -> dict[str, object]:
    spec: dict[str, object] = {"containers": [{"name": "c", "image": "busybox", "resources": {
        "requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def bounded(jobs: list[object]) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(job: object) -> None:
        async with gate:
            await job  # type: ignore[misc]

    await asyncio.gather(*(one(job) for job in jobs))


async def bound_count(core: kclient.CoreV1Api, namespace: str) -> int:
    listed = await core.list_namespaced_pod(namespace, field_selector="spec.nodeName!=")
    return len(listed.items)


async def phase(core: kclient.CoreV1Api, namespace: str, pods: int, nodes: int, preset: bool,
                plane_pid: int) -> tuple[float, float]:
    """(seconds until all `pods` are bound, control plane CPU seconds meanwhile)."""
    await core.create_namespace({"metadata": {"name": namespace}})
    cpu_before, began = cpu_seconds(plane_pid), time.monotonic()
    await bounded([core.create_namespaced_pod(namespace, pod(f"p{i:05d}", f"n{i % nodes:04d}" if preset else ""))
                   for i in range(pods)])
    while await bound_count(core, namespace) < pods:
        if time.monotonic() - began > 600:
            raise RuntimeError(f"{namespace}: pods not all bound in 600 s")
        await asyncio.sleep(0.2)
    return time.monotonic() - began, cpu_seconds(plane_pid) - cpu_before


async def measure(nodes: int, pods: int, work: Path) -> list[str]:
    plane = ControlPlaneProcess(work / "cp")
    plane.start("--v", "0")
    try:
        configuration = kclient.Configuration()
        await kconfig.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
        async with kclient.ApiClient(configuration) as api:
            core = kclient.CoreV1Api(api)

            async def add_node(i: int) -> None:
                created = await core.create_node(node(f"n{i:04d}"))
                await core.replace_node_status(created.metadata.name, {**node(created.metadata.name),
                                                                        "metadata": created.metadata})

            await bounded([add_node(i) for i in range(nodes)])
            pid = plane.proc.pid if plane.proc is not None else 0
            preset_s, preset_cpu = await phase(core, "preset", pods, nodes, True, pid)
            sched_s, sched_cpu = await phase(core, "scheduled", pods, nodes, False, pid)
    finally:
        plane.stop()
    print(f"{nodes} nodes, {pods} pods: with nodeName set {preset_s:.1f} s ({preset_cpu:.1f} CPU-s); "
          f"scheduled {sched_s:.1f} s ({sched_cpu:.1f} CPU-s)")
    return [f"scheduler_pods_bound_per_s: {pods / sched_s:.0f} pods/s (target none)",
            f"scheduler_cpu_ms_per_pod: {(sched_cpu - preset_cpu) / pods * 1000:.2f} ms (target none)",
            f"scheduler_ratio: {sched_s / preset_s:.2f} x (target none)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 nodes, 1,000 pods")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--pods", type=int)
    args = parser.parse_args()
    nodes = args.nodes or (200 if args.quick else 1000)
    pods = args.pods or (1000 if args.quick else 3000)
    with tempfile.TemporaryDirectory(prefix="scheduler-bench-") as work:
        lines = asyncio.run(measure(nodes, pods, Path(work)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
