"""NodeGroup controller against a real control plane process (CRDs installed with kubectl as scripts/quickstart
does). Node objects are written through the API (no kubelet needed: the controller only reads labels and the
Ready condition); pods are created already bound. Every wait is bounded.

The harness here (`plane`, `manager`, `make_node`, `eventually`) is shared by test_edgeapplication_controller.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from cloudcore.controllermanager import ControllerManagerModule
from cloudcore.controllermanager.keys import BELONGING_TO, FINALIZER, NODEGROUP
from cloudcore.edgecontroller.kinds import NODE, POD
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from common.bus import ModuleBus
from common.modules import ModuleContext
from tests.fixtures.controlplane import ROOT, ControlPlaneProcess

WAIT = 20.0
APP_CRDS = ("crd/nodegroups.apps.kubeedge.io", "crd/edgeapplications.apps.kubeedge.io")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    instance = ControlPlaneProcess(tmp_path_factory.mktemp("nodegroups-cp"))
    instance.start("--node-monitor-grace-period", "3600")  # Node objects here have no lease
    instance.kubectl("apply", "-R", "-f", str(ROOT / "config/crds"))
    instance.kubectl("wait", "--for=condition=established", "--timeout=30s", *APP_CRDS)
    yield instance
    instance.stop()


@dataclass
class Harness:
    kube: KubeJSON
    module: ControllerManagerModule


@contextlib.asynccontextmanager
async def manager(plane: ControlPlaneProcess) -> AsyncIterator[Harness]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api:
        bus = ModuleBus()
        module = ControllerManagerModule(api)
        task = asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))
        try:
            async with asyncio.timeout(WAIT):
                await module.nodegroups.synced.wait()
                await module.edgeapplications.synced.wait()
            yield Harness(KubeJSON(api), module)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            bus.close()


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT) -> Any:
    """Poll `check` until it returns a truthy value (which is returned); AssertionError after `timeout`."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    last = await check()
                except (KubeError, AssertionError, KeyError) as exc:
                    last = exc
                else:
                    if last:
                        return last
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}") from None


async def make_node(kube: KubeJSON, name: str, labels: dict[str, str] | None = None, ready: str = "True") -> None:
    await kube.create(NODE.collection_path(), {"apiVersion": "v1", "kind": "Node",
                                               "metadata": {"name": name, "labels": labels or {}}})
    await kube.patch(NODE.object_path("", name, "status"), {"status": {"conditions": [
        {"type": "Ready", "status": ready, "reason": "Test", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})


async def node_labels(kube: KubeJSON, name: str) -> dict[str, str]:
    return dict((await kube.get(NODE.object_path("", name)))["metadata"].get("labels") or {})


async def make_group(kube: KubeJSON, name: str, nodes: list[str] | None = None,
                     match_labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if nodes is not None:
        spec["nodes"] = nodes
    if match_labels is not None:
        spec["matchLabels"] = match_labels
    return await kube.create(NODEGROUP.collection_path(), {"apiVersion": "apps.kubeedge.io/v1alpha1",
                                                           "kind": "NodeGroup", "metadata": {"name": name},
                                                           "spec": spec})


async def group_statuses(kube: KubeJSON, name: str) -> list[dict[str, Any]]:
    return list(((await kube.get(NODEGROUP.object_path("", name))).get("status") or {}).get("nodeStatuses") or [])


async def bound_pod(kube: KubeJSON, name: str, node: str, group: str | None) -> None:
    spec: dict[str, Any] = {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    if group is not None:
        spec["nodeSelector"] = {BELONGING_TO: group}
    await kube.create(POD.collection_path("default"), {"apiVersion": "v1", "kind": "Pod",
                                                       "metadata": {"name": name, "namespace": "default"},
                                                       "spec": spec})


async def pod_evicted(kube: KubeJSON, name: str) -> bool:
    try:
        pod = await kube.get(POD.object_path("default", name))
    except KubeError as exc:
        return exc.not_found
    return bool(pod["metadata"].get("deletionTimestamp"))


def test_crds_install_with_upstream_names_and_scopes(plane: ControlPlaneProcess) -> None:
    crds = {name: json.loads(plane.kubectl("get", name, "-o", "json").stdout)["spec"] for name in APP_CRDS}
    nodegroup, edgeapp = crds[APP_CRDS[0]], crds[APP_CRDS[1]]
    assert (nodegroup["group"], nodegroup["scope"], nodegroup["names"]["plural"]) == (
        "apps.kubeedge.io", "Cluster", "nodegroups")
    assert nodegroup["names"]["shortNames"] == ["ng"]
    assert (edgeapp["scope"], edgeapp["names"]["plural"], edgeapp["names"]["shortNames"]) == (
        "Namespaced", "edgeapplications", ["eapp"])
    for spec in (nodegroup, edgeapp):
        assert [(v["name"], v["served"], v["storage"], v["subresources"]) for v in spec["versions"]] == [
            ("v1alpha1", True, True, {"status": {}})]
    assert plane.kubectl("get", "ng").returncode == 0
    assert plane.kubectl("get", "eapp", "-A").returncode == 0


async def test_membership_is_names_plus_labels_and_status_is_sorted(plane: ControlPlaneProcess) -> None:
    async with manager(plane) as h:
        await make_node(h.kube, "m-b")
        await make_node(h.kube, "m-a", {"zone": "m"}, ready="False")
        await make_node(h.kube, "m-c", {"zone": "m", "extra": "1"}, ready="Unknown")
        await make_node(h.kube, "m-other", {"zone": "elsewhere"})
        await make_group(h.kube, "members", nodes=["m-b", "m-ghost"], match_labels={"zone": "m"})

        async def settled() -> list[dict[str, Any]]:
            statuses = await group_statuses(h.kube, "members")
            return statuses if len(statuses) == 4 else []

        statuses = await eventually(settled, "nodeStatuses of group members")
        assert statuses == [
            {"nodeName": "m-a", "readyStatus": "NotReady", "selectionStatus": "Succeeded"},
            {"nodeName": "m-b", "readyStatus": "Ready", "selectionStatus": "Succeeded"},
            {"nodeName": "m-c", "readyStatus": "Unknown", "selectionStatus": "Succeeded"},
            {"nodeName": "m-ghost", "readyStatus": "Unknown", "selectionStatus": "Failed",
             "selectionStatusReason": "node does not exist"},
        ]
        for node in ("m-a", "m-b", "m-c"):
            assert (await node_labels(h.kube, node))[BELONGING_TO] == "members"
        assert BELONGING_TO not in await node_labels(h.kube, "m-other")
        group = await h.kube.get(NODEGROUP.object_path("", "members"))
        assert FINALIZER in group["metadata"]["finalizers"]
        shown = plane.kubectl("get", "ng", "members", "-o", "jsonpath={.status.nodeStatuses[*].nodeName}").stdout
        assert shown == "m-a m-b m-c m-ghost"

        # the ready status follows the node
        await h.kube.patch(NODE.object_path("", "m-a", "status"), {"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "Test"}]}})

        async def ready_now() -> bool:
            return bool((await group_statuses(h.kube, "members"))[0]["readyStatus"] == "Ready")

        await eventually(ready_now, "m-a Ready in the group's status")


async def test_nil_match_labels_selects_no_node(plane: ControlPlaneProcess) -> None:
    async with manager(plane) as h:
        await make_node(h.kube, "nil-a", {"any": "thing"})
        await make_group(h.kube, "nil-group", nodes=[])
        await asyncio.sleep(1.0)  # give the controller every chance to get it wrong
        assert BELONGING_TO not in await node_labels(h.kube, "nil-a")
        assert await group_statuses(h.kube, "nil-group") == []


async def test_node_joining_later_is_added(plane: ControlPlaneProcess) -> None:
    async with manager(plane) as h:
        await make_group(h.kube, "late", match_labels={"zone": "late"})
        await make_node(h.kube, "late-1", {"zone": "late"})

        async def labelled() -> bool:
            return (await node_labels(h.kube, "late-1")).get(BELONGING_TO) == "late"

        await eventually(labelled, "late-1 labelled for group late")
        # a node that gains the label later joins too
        await make_node(h.kube, "late-2")
        await h.kube.patch(NODE.object_path("", "late-2"), {"metadata": {"labels": {"zone": "late"}}})

        async def both() -> bool:
            return [s["nodeName"] for s in await group_statuses(h.kube, "late")] == ["late-1", "late-2"]

        await eventually(both, "late-2 in the status of group late")


async def test_a_node_leaving_loses_the_label_and_the_groups_pods(plane: ControlPlaneProcess) -> None:
    async with manager(plane) as h:
        await make_node(h.kube, "leave-1", {"zone": "leave"})
        await make_group(h.kube, "leave", match_labels={"zone": "leave"})

        async def labelled() -> bool:
            return (await node_labels(h.kube, "leave-1")).get(BELONGING_TO) == "leave"

        await eventually(labelled, "leave-1 labelled")
        await bound_pod(h.kube, "leave-ours", "leave-1", "leave")
        await bound_pod(h.kube, "leave-other-group", "leave-1", "someone-else")
        await bound_pod(h.kube, "leave-plain", "leave-1", None)
        await h.kube.patch(NODE.object_path("", "leave-1"), {"metadata": {"labels": {"zone": "gone"}}})

        async def released() -> bool:
            return BELONGING_TO not in await node_labels(h.kube, "leave-1") and await pod_evicted(h.kube,
                                                                                               "leave-ours")

        await eventually(released, "label removed and the group's pod evicted")
        assert not await pod_evicted(h.kube, "leave-other-group")
        assert not await pod_evicted(h.kube, "leave-plain")
        assert await group_statuses(h.kube, "leave") == []


async def test_a_node_belongs_to_one_group_and_moves_between_groups(plane: ControlPlaneProcess) -> None:
    async with manager(plane) as h:
        await make_node(h.kube, "move-1")
        await make_group(h.kube, "move-a", nodes=["move-1"])

        async def held_by(group: str) -> bool:
            return bool((await node_labels(h.kube, "move-1")).get(BELONGING_TO) == group)

        await eventually(lambda: held_by("move-a"), "move-1 in move-a")
        await make_group(h.kube, "move-b", nodes=["move-1"])

        async def refused() -> bool:
            return await group_statuses(h.kube, "move-b") == [
                {"nodeName": "move-1", "readyStatus": "Ready", "selectionStatus": "Failed",
                 "selectionStatusReason": "node move-1 has already belonged to NodeGroup move-a"}]

        await eventually(refused, "move-b reports move-1 Failed with upstream's reason")
        assert await held_by("move-a")
        await bound_pod(h.kube, "move-pod-a", "move-1", "move-a")

        # move: take it out of move-a; move-b gets it, move-a's pod is evicted
        await h.kube.patch(NODEGROUP.object_path("", "move-a"), {"spec": {"nodes": []}})
        await eventually(lambda: held_by("move-b"), "move-1 in move-b")
        assert await pod_evicted(h.kube, "move-pod-a")

        async def succeeded() -> bool:
            statuses = await group_statuses(h.kube, "move-b")
            return bool(statuses) and statuses[0]["selectionStatus"] == "Succeeded"

        await eventually(succeeded, "move-b reports move-1 Succeeded")


async def test_deleting_a_group_unlabels_evicts_and_drops_the_finalizer(plane: ControlPlaneProcess) -> None:
    async with manager(plane) as h:
        for node in ("del-1", "del-2"):
            await make_node(h.kube, node, {"zone": "del"})
        await make_group(h.kube, "del", match_labels={"zone": "del"})

        async def labelled() -> bool:
            return all([(await node_labels(h.kube, n)).get(BELONGING_TO) == "del" for n in ("del-1", "del-2")])

        await eventually(labelled, "both nodes labelled")
        await bound_pod(h.kube, "del-pod", "del-2", "del")
        plane.kubectl("delete", "ng", "del", "--wait=false")

        async def gone() -> bool:
            try:
                await h.kube.get(NODEGROUP.object_path("", "del"))
            except KubeError as exc:
                return exc.not_found
            return False

        await eventually(gone, "group del deleted (finalizer removed)")
        for node in ("del-1", "del-2"):
            assert BELONGING_TO not in await node_labels(h.kube, node)
        assert await pod_evicted(h.kube, "del-pod")
