#!/usr/bin/env python3
"""Node groups at scale: EdgeApplication create -> every generated Deployment's pods bound, beside the same
Deployments created directly (baseline, same run).

Processes: the embedded control plane (`cloudcore controlplane`, a real process over HTTPS; its scheduler,
deployment/replicaset controllers and garbage collector run there) and this script, which runs cloudcore's
controllerManager module (NodeGroup + EdgeApplication controllers) on its own kubernetes_asyncio client,
exactly as cloudcore would, and writes the objects through a second client.

Setup: the apps CRDs; G x N simulated nodes (Node objects, Ready, 8 concurrent writers; no kubelet: a bound
pod is the end point); G NodeGroups selecting N nodes each by label; timed: all G x N nodes labelled.
Figures (section `controllers`):

- baseline: G plain Deployments (R replicas, nodeSelector belonging-to=<group>) created directly; time from
  the first create to all G x R pods with spec.nodeName set;
- EdgeApplication: one EdgeApplication with one Deployment template, R replicas, G targetNodeGroups; time
  from its create to all G x R pods of the generated Deployments bound.

    .venv/bin/python bench/nodegroups.py [--quick] [--only controllers] [--groups G] [--nodes N] [--replicas R]

`--quick`: 10 groups (under 60 s). Further sections (e.g. the EndpointSlice filter) add a `measure_<name>()`
and an entry in SECTIONS. Last lines, one per figure: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import yaml
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cloudcore.controllermanager import ControllerManagerModule  # noqa: E402
from cloudcore.controllermanager.keys import BELONGING_TO, DEPLOYMENT, EDGEAPPLICATION, NODEGROUP  # noqa: E402
from cloudcore.edgecontroller.kinds import NODE, POD  # noqa: E402
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON  # noqa: E402
from common.bus import ModuleBus  # noqa: E402
from common.modules import ModuleContext  # noqa: E402

WRITERS: Final = 8
POLL: Final = 0.05
SETTLE: Final = 2.0
NS: Final = "default"
CRD_PATH: Final = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@dataclass(frozen=True)
class Scale:
    groups: int
    nodes: int
    replicas: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def control_plane() -> Iterator[Path]:
    """A control plane process in a temporary directory; yields its admin kubeconfig once /readyz answers."""
    data = Path(tempfile.mkdtemp(prefix="bench-nodegroups-"))
    port = free_port()
    with open(data / "controlplane.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cloudcore", "controlplane", "--data-dir", str(data),
                                 "--bind-port", str(port), "--node-monitor-grace-period", "3600"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"control plane did not start; see {data / 'controlplane.log'}")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=context, timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        yield data / "admin.kubeconfig"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(data, ignore_errors=True)


@contextlib.asynccontextmanager
async def api_client(kubeconfig: Path) -> AsyncIterator[kclient.ApiClient]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        yield api


async def bounded(calls: list[Callable[[], Awaitable[Any]]], concurrency: int = WRITERS) -> None:
    """Run the calls with at most `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await call()

    async with asyncio.timeout(300):
        await asyncio.gather(*(one(c) for c in calls))


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 120) -> float:
    began = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 - the state polled is in another process
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise RuntimeError(f"not within {timeout} s: {what}") from None
    return time.monotonic() - began


async def install_crds(kube: KubeJSON) -> None:
    for path in sorted((ROOT / "config/crds/apps").glob("*.yaml")):
        with contextlib.suppress(KubeError):
            await kube.create(CRD_PATH, yaml.safe_load(path.read_text()))

    async def served() -> bool:
        try:
            found = await kube.get("/apis/apps.kubeedge.io/v1alpha1")
        except KubeError:
            return False
        return {r["name"] for r in found.get("resources") or []} >= {"nodegroups", "edgeapplications"}

    await wait_until(served, "apps.kubeedge.io served", 30)


def node_body(name: str, group: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"bench-zone": group}}}


async def make_node(kube: KubeJSON, name: str, group: str) -> None:
    await kube.create(NODE.collection_path(), node_body(name, group))
    capacity = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    await kube.patch(NODE.object_path("", name, "status"), {"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Bench"}]}})


def deployment(name: str, app: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": {"app": app}},
                                  "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}}}


async def bound_pods(kube: KubeJSON, app: str) -> int:
    found = await kube.get(POD.collection_path(NS), {"labelSelector": f"app={app}"})
    return sum(1 for p in found.get("items") or [] if (p.get("spec") or {}).get("nodeName"))


async def measure_controllers(kubeconfig: Path, scale: Scale) -> list[str]:
    groups = [f"g{i:03d}" for i in range(scale.groups)]
    pods_wanted = scale.groups * scale.replicas
    async with api_client(kubeconfig) as writer_api, api_client(kubeconfig) as controller_api:
        kube = KubeJSON(writer_api, timeout=30)
        await install_crds(kube)
        began = time.monotonic()
        await bounded([partial(make_node, kube, f"{g}-n{j:02d}", g) for g in groups for j in range(scale.nodes)])
        print(f"setup: {scale.groups * scale.nodes} Ready nodes written in {time.monotonic() - began:.1f} s")

        bus = ModuleBus()
        module = ControllerManagerModule(controller_api)
        task = asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))
        try:
            async with asyncio.timeout(60):
                await module.nodegroups.synced.wait()
                await module.edgeapplications.synced.wait()
            began = time.monotonic()
            await bounded([partial(kube.create, NODEGROUP.collection_path(), {
                "apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup", "metadata": {"name": g},
                "spec": {"matchLabels": {"bench-zone": g}}}) for g in groups])

            async def all_labelled() -> bool:
                nodes = await kube.get(NODE.collection_path(), {"labelSelector": BELONGING_TO})
                return len(nodes.get("items") or []) == scale.groups * scale.nodes

            await wait_until(all_labelled, "every node labelled")
            labelled = time.monotonic() - began
            print(f"nodegroups: {scale.groups} groups, {scale.groups * scale.nodes} nodes labelled in {labelled:.2f} s")

            # baseline: the same Deployments, created directly
            began = time.monotonic()
            await bounded([partial(kube.create, DEPLOYMENT.collection_path(NS), _pinned(
                deployment(f"base-{g}", "base", scale.replicas), g)) for g in groups])
            await wait_until(lambda: _count_is(kube, "base", pods_wanted), "baseline pods bound")
            baseline = time.monotonic() - began
            print(f"baseline: {scale.groups} Deployments x {scale.replicas} replicas created directly -> "
                  f"{pods_wanted} pods bound in {baseline:.2f} s")

            await bounded([partial(kube.delete, DEPLOYMENT.object_path(NS, f"base-{g}"), {
                "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}) for g in groups])
            cleared = await wait_until(lambda: _none_left(kube, "base"), "baseline pods deleted", 60)
            await wait_until(lambda: _no_replicasets(kube, "base-"), "baseline ReplicaSets collected", 60)
            await asyncio.sleep(SETTLE)  # let the control plane finish the garbage collection's writes
            print(f"baseline deleted, its pods gone in {cleared:.2f} s")

            began = time.monotonic()
            await kube.create(EDGEAPPLICATION.collection_path(NS), {
                "apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "EdgeApplication",
                "metadata": {"name": "bench", "namespace": NS},
                "spec": {"workloadTemplate": {"manifests": [deployment("app", "eapp", scale.replicas)]},
                         "workloadScope": {"targetNodeGroups": [{"name": g} for g in groups]}}})

            async def generated() -> bool:
                found = await kube.get(DEPLOYMENT.collection_path(NS), {"limit": "1000"})
                return sum(1 for d in found.get("items") or [] if d["metadata"]["name"].startswith("app-g")) == len(
                    groups)

            made = await wait_until(generated, "generated Deployments")
            await wait_until(lambda: _count_is(kube, "eapp", pods_wanted), "EdgeApplication pods bound")
            eapp = time.monotonic() - began
            print(f"edgeapplication: {len(groups)} Deployments generated in {made:.2f} s, {pods_wanted} pods bound "
                  f"in {eapp:.2f} s (baseline {baseline:.2f} s, {eapp / baseline:.2f}x)")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            bus.close()
    tag = f"{scale.groups}x{scale.nodes}"
    return [
        f"nodegroups_label_{tag}_nodes: {labelled:.2f} s (target none)",
        f"nodegroups_baseline_{scale.groups}_deployments_pods_bound: {baseline:.2f} s (target none)",
        f"nodegroups_eapp_generate_{scale.groups}_deployments: {made:.2f} s (target none)",
        f"nodegroups_eapp_{tag}_pods_bound: {eapp:.2f} s (target <= 5 s)",
        f"nodegroups_eapp_vs_baseline: {eapp / baseline:.2f} x (target none)",
    ]


def _pinned(manifest: dict[str, Any], group: str) -> dict[str, Any]:
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {BELONGING_TO: group}
    return manifest


async def _count_is(kube: KubeJSON, app: str, wanted: int) -> bool:
    return await bound_pods(kube, app) >= wanted


async def _no_replicasets(kube: KubeJSON, prefix: str) -> bool:
    found = await kube.get("/apis/apps/v1/namespaces/default/replicasets")
    return not any(r["metadata"]["name"].startswith(prefix) for r in found.get("items") or [])


async def _none_left(kube: KubeJSON, app: str) -> bool:
    """Whether no pod of `app` is left; the terminating ones are finished as a kubelet would (grace 0)."""
    found = (await kube.get(POD.collection_path(NS), {"labelSelector": f"app={app}"})).get("items") or []
    await bounded([partial(_force_delete, kube, p["metadata"]["name"])
                   for p in found if p["metadata"].get("deletionTimestamp")])
    return not found


async def _force_delete(kube: KubeJSON, name: str) -> None:
    with contextlib.suppress(KubeError):
        await kube.delete(POD.object_path(NS, name), {"kind": "DeleteOptions", "apiVersion": "v1",
                                                      "gracePeriodSeconds": 0})


SECTIONS: Final[dict[str, Callable[[Path, Scale], Awaitable[list[str]]]]] = {"controllers": measure_controllers}


async def run(only: list[str], scale: Scale) -> list[str]:
    lines: list[str] = []
    began = time.monotonic()
    for name in only:
        with control_plane() as kubeconfig:  # a fresh control plane per section
            lines += await SECTIONS[name](kubeconfig, scale)
    print(f"whole run: {time.monotonic() - began:.1f} s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 groups: under 60 s")
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only this section")
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=20, help="nodes per group")
    parser.add_argument("--replicas", type=int, default=20, help="replicas per generated Deployment (one pod per node)")
    args = parser.parse_args()
    scale = Scale(10 if args.quick else args.groups, args.nodes, args.replicas)
    for line in asyncio.run(run(args.only or list(SECTIONS), scale)):
        print(line)


if __name__ == "__main__":
    main()
