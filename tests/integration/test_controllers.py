"""The workload controllers against a real store on SQLite, through the ObjectAPI (no HTTP).

Each test starts the controller manager on a fresh store, creates Ready nodes and objects as a
client would, and waits (bounded polling) for the controllers to converge. `FakeKubelet` plays
the node side where a test needs it: it gives bound pods an IP, marks them Running and Ready,
and removes pods once they are marked for deletion, as a kubelet does after the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.objects import DeleteOptions, ObjectAPI, WriteOptions, now_rfc3339
from cloudcore.controlplane.api.resources import Registry, ResourceInfo
from cloudcore.controlplane.controllers import manager
from cloudcore.controlplane.store.store import Store
from cloudcore.controlplane.store.types import Key, StoredObject, WatcherClosedError

OPTS = WriteOptions()
WAIT = 15.0


def _selectable(registry: Registry) -> Callable[[str, dict[str, Any]], dict[str, str]]:
    def fields(gr: str, obj: dict[str, Any]) -> dict[str, str]:
        info = registry.by_gr(gr)
        return info.field_values(obj) if info is not None else {}
    return fields


@dataclass
class Cluster:
    store: Store
    objects: ObjectAPI
    registry: Registry
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def info(self, group: str, plural: str) -> ResourceInfo:
        version = "v1"
        info = self.registry.get(group, version, plural)
        assert info is not None, plural
        return info

    @property
    def pods(self) -> ResourceInfo:
        return self.info("", "pods")

    def items(self, plural: str, group: str = "", namespace: str | None = "default") -> list[dict[str, Any]]:
        return [s.decode() for s in self.store.list(self.info(group, plural).gr, namespace)[0]]

    def get(self, plural: str, name: str, group: str = "", namespace: str = "default") -> dict[str, Any] | None:
        info = self.info(group, plural)
        stored = self.store.get(Key(info.gr, namespace if info.namespaced else "", name))
        return stored.decode() if stored is not None else None

    async def create(self, plural: str, body: dict[str, Any], group: str = "", namespace: str = "default"
                     ) -> dict[str, Any]:
        info = self.info(group, plural)
        return (await self.objects.create(info, namespace if info.namespaced else "", body, OPTS)).stored.decode()

    async def change(self, plural: str, name: str, edit: Callable[[dict[str, Any]], None], group: str = "",
                     namespace: str = "default", subresource: str = "") -> dict[str, Any]:
        """Read-modify-write with retries on Conflict, as a client would."""
        info = self.info(group, plural)
        for _ in range(20):
            current = self.get(plural, name, group, namespace)
            assert current is not None, f"{plural} {name} is gone"
            edit(current)
            try:
                result = await self.objects.update(info, namespace if info.namespaced else "", name, current, OPTS,
                                                   subresource)
            except APIError as exc:
                if exc.reason == "Conflict":
                    await asyncio.sleep(0.01)
                    continue
                raise
            return result.stored.decode()
        raise AssertionError(f"could not update {plural} {name}")

    async def delete(self, plural: str, name: str, group: str = "", namespace: str = "default",
                     policy: str = "", grace: int | None = None) -> None:
        info = self.info(group, plural)
        await self.objects.delete(info, namespace if info.namespaced else "", name,
                                  DeleteOptions(grace_period_seconds=grace, propagation_policy=policy))

    async def add_node(self, name: str, *, labels: dict[str, str] | None = None,
                       taints: list[dict[str, Any]] | None = None, cpu: str = "4", memory: str = "8Gi",
                       pods: str = "110") -> None:
        body: dict[str, Any] = {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                                      **(labels or {})}}}
        if taints:
            body["spec"] = {"taints": taints}
        await self.create("nodes", body)
        await self.report_ready(name, cpu=cpu, memory=memory, pods=pods)

    async def report_ready(self, name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110") -> None:
        now = now_rfc3339()

        def edit(node: dict[str, Any]) -> None:
            status = node.setdefault("status", {})
            status["allocatable"] = status["capacity"] = {"cpu": cpu, "memory": memory, "pods": pods}
            status["conditions"] = [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                     "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                                     "lastTransitionTime": now}]
        await self.change("nodes", name, edit, subresource="status")


@pytest.fixture
async def start_cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    made: list[Cluster] = []

    async def start(node_grace_period: float = 40.0) -> Cluster:
        registry = Registry()
        store = await Store.open(tmp_path / f"state{len(made)}.db", synchronous="NORMAL",
                                 selectable_fields=_selectable(registry))
        objects = ObjectAPI(store, registry)
        await objects.ensure_system_namespaces()
        cluster = Cluster(store, objects, registry)
        cluster.tasks = manager.start(objects, lambda: None, node_grace_period=node_grace_period)
        made.append(cluster)
        return cluster

    yield start
    for cluster in made:
        for task in cluster.tasks:
            task.cancel()
        results = await asyncio.gather(*cluster.tasks, return_exceptions=True)
        await cluster.store.close()
        for result in results:  # a controller task must only ever end by cancellation
            assert isinstance(result, asyncio.CancelledError), result


@pytest.fixture
async def cluster(start_cluster: Callable[..., Awaitable[Cluster]]) -> Cluster:
    c = await start_cluster()
    for name in ("n1", "n2", "n3"):
        await c.add_node(name)
    return c


async def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


class FakeKubelet:
    """Plays every node's kubelet: runs bound pods (IP, Running, Ready) and removes deleted ones."""

    def __init__(self, cluster: Cluster, *, ready: bool = True) -> None:
        self.cluster = cluster
        self.ready = ready
        self._ips = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeKubelet:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        store = self.cluster.store
        items, rv = store.list("pods")
        for stored in items:
            await self._handle(stored)
        watcher = store.watch("pods", None, rv)
        try:
            while True:
                event = await watcher.next(1.0)
                current = store.get(event.object.key) if event is not None else None
                if current is not None:
                    await self._handle(current)
        except WatcherClosedError:
            return
        finally:
            watcher.close()

    async def _handle(self, stored: StoredObject) -> None:
        pod = stored.decode()
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if not spec.get("nodeName"):
            return
        with contextlib.suppress(APIError):
            if meta.get("deletionTimestamp"):
                await self.cluster.delete("pods", meta["name"], namespace=meta["namespace"], grace=0)
                return
            status = pod.get("status") or {}
            if status.get("podIP") and (not self.ready or _ready(pod)):
                return
            now = now_rfc3339()
            count = next(self._ips)
            status.update(phase="Running", podIP=status.get("podIP") or f"10.244.{count // 250}.{count % 250 + 1}",
                          hostIP="192.168.0.1")
            if self.ready:
                conditions = [c for c in status.get("conditions") or () if c.get("type") != "Ready"]
                conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": now})
                status["conditions"] = conditions
            pod["status"] = status
            await self.cluster.objects.update(self.cluster.pods, meta["namespace"], meta["name"], pod, OPTS,
                                              "status")


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def deployment(name: str, replicas: int, image: str = "nginx:1.25", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image,
                                                           "ports": [{"name": "http", "containerPort": 8080}]}]}},
                     **spec}}


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                     "ports": [{"name": "http", "containerPort": 8080}]}], **spec}}


def live_pods(c: Cluster, app: str, namespace: str = "default") -> list[dict[str, Any]]:
    return [p for p in c.items("pods", namespace=namespace)
            if p["metadata"].get("labels", {}).get("app") == app and not p["metadata"].get("deletionTimestamp")]


def rollout_done(c: Cluster, name: str) -> bool:
    """What `kubectl rollout status` checks."""
    d = c.get("deployments", name, "apps")
    if d is None:
        return False
    status, replicas = d.get("status") or {}, d["spec"]["replicas"]
    return (status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == replicas and status.get("replicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
            and _condition(d, "Progressing").get("reason") == "NewReplicaSetAvailable")


# ---- deployments and replicasets ---------------------------------------------------------------------


async def test_deployment_replicaset_pods_and_availability(cluster: Cluster) -> None:
    c = cluster
    await c.create("deployments", deployment("web", 3), "apps")
    pods = await wait_for(lambda: len(live_pods(c, "web")) == 3 and all(p["spec"].get("nodeName")
                                                                       for p in live_pods(c, "web"))
                          and live_pods(c, "web"), what="3 bound pods")
    replicasets = c.items("replicasets", "apps")
    assert len(replicasets) == 1
    rs = replicasets[0]
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    owner = rs["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Deployment", "web", True)
    for p in pods:
        assert p["metadata"]["generateName"] == f"web-{pod_hash}-"
        assert p["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert _condition(p, "PodScheduled")["status"] == "True"
    assert {p["spec"]["nodeName"] for p in pods} == {"n1", "n2", "n3"}  # least requested spreads them

    d = c.get("deployments", "web", "apps")
    assert d is not None
    assert _condition(d, "Available")["status"] == "False"
    for p in pods:
        def ready(obj: dict[str, Any]) -> None:
            obj["status"].update(phase="Running", podIP="10.244.0.9",
                                 conditions=[{"type": "Ready", "status": "True"}])
        await c.change("pods", p["metadata"]["name"], ready, subresource="status")
    await wait_for(lambda: rollout_done(c, "web"), what="deployment available")
    d = c.get("deployments", "web", "apps")
    assert d is not None
    assert d["status"]["updatedReplicas"] == d["status"]["availableReplicas"] == d["status"]["readyReplicas"] == 3
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert _condition(d, "Available")["reason"] == "MinimumReplicasAvailable"
    assert "unavailableReplicas" not in d["status"]
    rs = c.items("replicasets", "apps")[0]
    assert (rs["status"]["replicas"], rs["status"]["readyReplicas"], rs["status"]["availableReplicas"]) == (3, 3, 3)


async def test_rolling_update_keeps_surge_and_availability(cluster: Cluster) -> None:
    c = cluster
    async with FakeKubelet(c):
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
        await c.create("deployments", deployment("web", 4, strategy=strategy), "apps")
        await wait_for(lambda: rollout_done(c, "web"), what="first rollout")
        violations: list[str] = []
        seen = {"max_pods": 0, "min_ready": 99}

        async def check() -> None:
            watcher = c.store.watch("pods", None, c.store.current_rv)
            try:
                while True:
                    if await watcher.next(1.0) is None:
                        continue
                    pods = live_pods(c, "web")
                    ready = sum(1 for p in pods if _ready(p))
                    seen["max_pods"] = max(seen["max_pods"], len(pods))
                    seen["min_ready"] = min(seen["min_ready"], ready)
                    if len(pods) > 5:
                        violations.append(f"{len(pods)} pods")
                    if ready < 3:
                        violations.append(f"only {ready} ready")
            finally:
                watcher.close()

        checker = asyncio.create_task(check())
        try:
            def new_image(d: dict[str, Any]) -> None:
                d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
            await c.change("deployments", "web", new_image, "apps")
            await wait_for(lambda: rollout_done(c, "web") and all(
                p["spec"]["containers"][0]["image"] == "nginx:1.26" for p in live_pods(c, "web")),
                what="second rollout")
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker
        assert not violations, violations[:5]
        assert seen["max_pods"] == 5  # the surge was used
        replicasets = c.items("replicasets", "apps")
        assert len(replicasets) == 2
        by_revision = {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs for rs in replicasets}
        assert by_revision["2"]["spec"]["replicas"] == 4
        assert by_revision["1"]["spec"]["replicas"] == 0
        d = c.get("deployments", "web", "apps")
        assert d is not None
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


async def test_scale_up_and_down(cluster: Cluster) -> None:
    c = cluster
    async with FakeKubelet(c):
        await c.create("deployments", deployment("web", 2), "apps")
        await wait_for(lambda: rollout_done(c, "web"), what="rollout of 2")
        for replicas in (5, 1):
            def scale(d: dict[str, Any], n: int = replicas) -> None:
                d["spec"]["replicas"] = n

            def scaled(n: int = replicas) -> bool:
                return rollout_done(c, "web") and len(live_pods(c, "web")) == n
            await c.change("deployments", "web", scale, "apps")
            await wait_for(scaled, what=f"scaled to {replicas}")
            rs = c.items("replicasets", "apps")
            assert [r["spec"]["replicas"] for r in rs] == [replicas]
            assert rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == str(replicas)


async def test_recreate_strategy(cluster: Cluster) -> None:
    c = cluster
    async with FakeKubelet(c):
        await c.create("deployments", deployment("web", 2, strategy={"type": "Recreate"}), "apps")
        await wait_for(lambda: rollout_done(c, "web"), what="first rollout")

        def new_image(d: dict[str, Any]) -> None:
            d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
        await c.change("deployments", "web", new_image, "apps")
        await wait_for(lambda: rollout_done(c, "web") and len(c.items("replicasets", "apps")) == 2,
                       what="recreated")
        images = {p["spec"]["containers"][0]["image"] for p in live_pods(c, "web")}
        assert images == {"nginx:1.26"}


async def test_replicaset_adopts_orphans_and_releases_non_matching(cluster: Cluster) -> None:
    c = cluster
    await c.create("pods", pod("stray", {"app": "cache"}))
    rs = await c.create("replicasets", {"metadata": {"name": "cache"},
                                        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "cache"}},
                                                 "template": pod("", {"app": "cache"})}}, "apps")
    await wait_for(lambda: len(live_pods(c, "cache")) == 2, what="2 cache pods")
    stray = c.get("pods", "stray")
    assert stray is not None and stray["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]

    def relabel(p: dict[str, Any]) -> None:
        p["metadata"]["labels"] = {"app": "debug"}
    await c.change("pods", "stray", relabel)
    await wait_for(lambda: len(live_pods(c, "cache")) == 2, what="replacement pod")
    stray = c.get("pods", "stray")
    assert stray is not None and not stray["metadata"].get("ownerReferences")
    await wait_for(lambda: (c.get("replicasets", "cache", "apps") or {}).get("status", {}).get("replicas") == 2)


# ---- daemonsets --------------------------------------------------------------------------------------


async def test_daemonset_one_pod_per_eligible_node(cluster: Cluster) -> None:
    c = cluster
    await c.add_node("edge1", labels={"node-role.kubernetes.io/edge": ""},
                     taints=[{"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"}])
    ds = {"metadata": {"name": "agent"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"metadata": {"labels": {"app": "agent"}},
                                "spec": {"containers": [{"name": "a", "image": "agent:1"}]}}}}
    await c.create("daemonsets", ds, "apps")
    await wait_for(lambda: len(live_pods(c, "agent")) == 3, what="a pod on each untainted node")
    await asyncio.sleep(0.2)
    pods = live_pods(c, "agent")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["n1", "n2", "n3"]
    tolerations = pods[0]["spec"]["tolerations"]
    assert {"key": "node.kubernetes.io/unreachable", "operator": "Exists"} in tolerations
    await wait_for(lambda: (c.get("daemonsets", "agent", "apps") or {}).get("status", {}).get(
        "desiredNumberScheduled") == 3, what="status")

    async with FakeKubelet(c):
        await wait_for(lambda: (c.get("daemonsets", "agent", "apps") or {}).get("status", {}).get("numberReady") == 3,
                       what="daemon pods ready")

        def tolerate_edge(obj: dict[str, Any]) -> None:
            obj["spec"]["template"]["spec"]["tolerations"] = [{"key": "node-role.kubernetes.io/edge",
                                                              "operator": "Exists"}]
        await c.change("daemonsets", "agent", tolerate_edge, "apps")
        await wait_for(lambda: sorted(p["spec"]["nodeName"] for p in live_pods(c, "agent"))
                       == ["edge1", "n1", "n2", "n3"]
                       and (c.get("daemonsets", "agent", "apps") or {}).get("status", {}).get(
                           "updatedNumberScheduled") == 4, what="rolled to 4 nodes")
        status = (c.get("daemonsets", "agent", "apps") or {})["status"]
        assert (status["desiredNumberScheduled"], status["currentNumberScheduled"]) == (4, 4)
        hashes = {p["metadata"]["labels"]["controller-revision-hash"] for p in live_pods(c, "agent")}
        assert len(hashes) == 1


# ---- endpoints -----------------------------------------------------------------------------------------


async def test_service_endpoints_and_slices(cluster: Cluster) -> None:
    c = cluster
    for name, ip, ready in (("api-a", "10.244.1.1", True), ("api-b", "10.244.1.2", False)):
        await c.create("pods", pod(name, {"app": "api"}, nodeName="n1"))

        def run(p: dict[str, Any], ip: str = ip, ready: bool = ready) -> None:
            p["status"].update(phase="Running", podIP=ip,
                               conditions=[{"type": "Ready", "status": "True" if ready else "False"}])
        await c.change("pods", name, run, subresource="status")
    await c.create("pods", pod("api-no-ip", {"app": "api"}, nodeName="n2"))
    svc = await c.create("services", {"metadata": {"name": "api", "labels": {"tier": "backend"}},
                                      "spec": {"selector": {"app": "api"},
                                               "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}})

    def endpoints_ready() -> dict[str, Any] | None:
        ep = c.get("endpoints", "api")
        return ep if ep and ep.get("subsets") and c.items("endpointslices", "discovery.k8s.io") else None
    ep = await wait_for(endpoints_ready, what="endpoints")
    [subset] = ep["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.244.1.1"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.244.1.2"]
    assert subset["addresses"][0]["nodeName"] == "n1"
    assert subset["addresses"][0]["targetRef"]["name"] == "api-a"
    assert subset["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]

    slices = c.items("endpointslices", "discovery.k8s.io")
    assert len(slices) == 1
    es = slices[0]
    assert es["metadata"]["name"].startswith("api-") and len(es["metadata"]["name"]) == len("api-") + 5
    assert es["metadata"]["labels"]["kubernetes.io/service-name"] == "api"
    assert es["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert es["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert es["addressType"] == "IPv4"
    assert es["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    by_ip = {e["addresses"][0]: e for e in es["endpoints"]}
    assert by_ip["10.244.1.1"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert by_ip["10.244.1.2"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    assert by_ip["10.244.1.1"]["nodeName"] == "n1" and "zone" not in by_ip["10.244.1.1"]

    def now_ready(p: dict[str, Any]) -> None:
        p["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    await c.change("pods", "api-b", now_ready, subresource="status")
    await wait_for(lambda: len((c.get("endpoints", "api") or {}).get("subsets", [{}])[0].get("addresses", [])) == 2,
                   what="both ready")
    await wait_for(lambda: all(e["conditions"]["ready"] for e in c.items("endpointslices", "discovery.k8s.io")[0]
                               ["endpoints"]), what="slice ready")

    await c.delete("services", "api")
    await wait_for(lambda: c.get("endpoints", "api") is None and not c.items("endpointslices", "discovery.k8s.io"),
                   what="endpoints and slices gone with the service")


# ---- garbage collection ------------------------------------------------------------------------------


async def test_background_deletion_removes_replicasets_and_pods(cluster: Cluster) -> None:
    c = cluster
    async with FakeKubelet(c):
        await c.create("deployments", deployment("web", 3), "apps")
        await wait_for(lambda: rollout_done(c, "web"), what="rollout")
        await c.delete("deployments", "web", "apps", policy="Background")
        await wait_for(lambda: not c.items("replicasets", "apps") and not c.items("pods"), what="all gone")


async def test_foreground_deletion_waits_for_dependents(cluster: Cluster) -> None:
    c = cluster
    async with FakeKubelet(c):
        await c.create("deployments", deployment("web", 2), "apps")
        await wait_for(lambda: rollout_done(c, "web"), what="rollout")
        await c.delete("deployments", "web", "apps", policy="Foreground")
        d = c.get("deployments", "web", "apps")
        assert d is not None and "foregroundDeletion" in d["metadata"]["finalizers"]
        await wait_for(lambda: c.get("deployments", "web", "apps") is None, what="deployment gone")
        assert not c.items("replicasets", "apps") and not c.items("pods")


async def test_orphan_deletion_keeps_dependents(cluster: Cluster) -> None:
    c = cluster
    await c.create("deployments", deployment("web", 2), "apps")
    await wait_for(lambda: len(live_pods(c, "web")) == 2, what="pods")
    await c.delete("deployments", "web", "apps", policy="Orphan")
    await wait_for(lambda: c.get("deployments", "web", "apps") is None, what="deployment gone")
    [rs] = c.items("replicasets", "apps")
    assert not rs["metadata"].get("ownerReferences")
    assert len(live_pods(c, "web")) == 2


async def test_dangling_owner_reference_is_collected(cluster: Cluster) -> None:
    c = cluster
    cm = await c.create("configmaps", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": cm["metadata"]["uid"]}
    await c.create("secrets", {"metadata": {"name": "child", "ownerReferences": [ref]}})
    other = await c.create("configmaps", {"metadata": {"name": "keeper"}})
    keep_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": other["metadata"]["uid"]}
    await c.create("secrets", {"metadata": {"name": "two-owners", "ownerReferences": [ref, keep_ref]}})
    await asyncio.sleep(0.1)
    assert c.get("secrets", "child") is not None
    await c.delete("configmaps", "owner")
    await wait_for(lambda: c.get("secrets", "child") is None, what="child collected")
    survivor = await wait_for(lambda: (s := c.get("secrets", "two-owners")) and
                              len(s["metadata"]["ownerReferences"]) == 1 and s, what="dangling ref dropped")
    assert survivor["metadata"]["ownerReferences"][0]["name"] == "keeper"


# ---- node lifecycle ------------------------------------------------------------------------------------


async def test_stale_lease_marks_node_unknown_and_unreachable(start_cluster: Callable[..., Awaitable[Cluster]]
                                                              ) -> None:
    c = await start_cluster(node_grace_period=1.5)
    lease_info = c.info("coordination.k8s.io", "leases")

    async def renew() -> None:
        lease = {"metadata": {"name": "edge1", "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": "edge1", "leaseDurationSeconds": 40,
                          "renewTime": now_rfc3339().replace("Z", ".000000Z")}}
        current = c.get("leases", "edge1", "coordination.k8s.io", "kube-node-lease")
        if current is None:
            await c.objects.create(lease_info, "kube-node-lease", lease, OPTS)
        else:
            current["spec"] = lease["spec"]
            await c.objects.update(lease_info, "kube-node-lease", "edge1", current, OPTS)

    await c.add_node("edge1", labels={"node-role.kubernetes.io/edge": ""})
    await renew()
    await c.create("pods", pod("app", {"app": "x"}, nodeName="edge1"))

    def ready_pod(p: dict[str, Any]) -> None:
        p["status"].update(phase="Running", podIP="10.244.9.9", conditions=[{"type": "Ready", "status": "True"}])
    await c.change("pods", "app", ready_pod, subresource="status")

    def unreachable() -> bool:
        node = c.get("nodes", "edge1")
        taints = {(t["key"], t["effect"]) for t in (node or {}).get("spec", {}).get("taints") or ()}
        return ("node.kubernetes.io/unreachable", "NoExecute") in taints and \
            ("node.kubernetes.io/unreachable", "NoSchedule") in taints
    await wait_for(unreachable, timeout=10, what="unreachable taints")
    node = c.get("nodes", "edge1")
    ready = _condition(node, "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("Unknown", "NodeStatusUnknown",
                                                                   "Kubelet stopped posting node status.")
    await wait_for(lambda: _condition(c.get("pods", "app"), "Ready").get("status") == "False",
                   what="pod marked not ready")
    assert c.get("pods", "app") is not None  # never evicted: edge autonomy

    await renew()
    await c.report_ready("edge1")
    await wait_for(lambda: not unreachable() and _condition(c.get("nodes", "edge1"), "Ready")["status"] == "True",
                   timeout=5, what="taints removed")


# ---- namespaces ----------------------------------------------------------------------------------------


async def test_namespace_deletion_removes_content_then_namespace(cluster: Cluster) -> None:
    c = cluster
    async with FakeKubelet(c):
        await c.create("namespaces", {"metadata": {"name": "doomed"}})
        await c.create("configmaps", {"metadata": {"name": "cfg"}}, namespace="doomed")
        await c.create("deployments", deployment("web", 2), "apps", namespace="doomed")
        await c.create("services", {"metadata": {"name": "web"},
                                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
                       namespace="doomed")
        await wait_for(lambda: len(live_pods(c, "web", "doomed")) == 2, what="pods in doomed")
        await c.delete("namespaces", "doomed")
        ns = c.get("namespaces", "doomed")
        assert ns is not None and ns["status"]["phase"] == "Terminating"
        await wait_for(lambda: c.get("namespaces", "doomed") is None, what="namespace gone")
        for plural, group in (("configmaps", ""), ("pods", ""), ("services", ""), ("endpoints", ""),
                              ("deployments", "apps"), ("replicasets", "apps")):
            assert not c.items(plural, group, namespace="doomed"), plural


# ---- scheduler -----------------------------------------------------------------------------------------


async def test_scheduler_filters_and_unschedulable(cluster: Cluster) -> None:
    c = cluster
    await c.add_node("edge1", labels={"node-role.kubernetes.io/edge": ""}, cpu="1",
                     taints=[{"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"}])

    def node_of(name: str) -> str | None:
        return ((c.get("pods", name) or {}).get("spec") or {}).get("nodeName")

    await c.create("pods", pod("pinned", nodeSelector={"kubernetes.io/hostname": "n2"}))
    assert await wait_for(lambda: node_of("pinned")) == "n2"

    tolerate = [{"key": "node-role.kubernetes.io/edge", "operator": "Exists", "effect": "NoSchedule"}]
    edge_affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "node-role.kubernetes.io/edge", "operator": "Exists"}]}]}}}
    await c.create("pods", pod("edge-app", tolerations=tolerate, affinity=edge_affinity))
    assert await wait_for(lambda: node_of("edge-app")) == "edge1"

    await c.create("pods", pod("edge-untolerated", affinity=edge_affinity))
    await wait_for(lambda: _condition(c.get("pods", "edge-untolerated"), "PodScheduled").get("reason")
                   == "Unschedulable", what="unschedulable")
    message = _condition(c.get("pods", "edge-untolerated"), "PodScheduled")["message"]
    assert message == ("0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/edge: }, "
                       "3 node(s) didn't match Pod's node affinity/selector.")

    big = pod("big", tolerations=tolerate)
    big["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "4500m", "memory": "1Gi"}}
    await c.create("pods", big)
    await wait_for(lambda: _condition(c.get("pods", "big"), "PodScheduled").get("reason") == "Unschedulable",
                   what="big unschedulable")
    assert _condition(c.get("pods", "big"), "PodScheduled")["message"] == \
        "0/4 nodes are available: 4 Insufficient cpu."
    await c.add_node("n4", cpu="8")  # a node that fits: the pending pod is retried
    assert await wait_for(lambda: node_of("big")) == "n4"
    small = pod("small")
    small["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "3800m"}}
    await c.create("pods", small)
    assert await wait_for(lambda: node_of("small")) in ("n1", "n3")  # n2 has "pinned", n4 is nearly full


async def test_custom_resource_owner_is_followed_by_the_collector(cluster: Cluster) -> None:
    c = cluster
    crd = {"metadata": {"name": "widgets.example.kubeedge.io"},
           "spec": {"group": "example.kubeedge.io", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                      "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}
    await c.create("customresourcedefinitions", crd, "apiextensions.k8s.io")
    await wait_for(lambda: c.registry.get("example.kubeedge.io", "v1", "widgets"), what="CRD served")
    widget = await c.create("widgets", {"metadata": {"name": "w1"}, "spec": {"size": 1}}, "example.kubeedge.io")
    ref = {"apiVersion": "example.kubeedge.io/v1", "kind": "Widget", "name": "w1", "uid": widget["metadata"]["uid"]}
    await c.create("configmaps", {"metadata": {"name": "widget-config", "ownerReferences": [ref]}})
    await asyncio.sleep(0.2)
    assert c.get("configmaps", "widget-config") is not None  # its owner exists
    await c.delete("widgets", "w1", "example.kubeedge.io")
    await wait_for(lambda: c.get("configmaps", "widget-config") is None, what="dependent of the widget collected")
