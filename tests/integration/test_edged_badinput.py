"""Bad pod specs against the real containerd fixture: each ends in a clear status reason and a kubelet-style
Event, while a good pod on the same edged keeps Running.

Missing image, bad volumes and bad probes run pod workers with an EventRecorder that is never started, so
every event it recorded is still waiting in its queue to be read. The host-port conflict runs a whole
Edged on a module bus, with this test as its MetaManager: the events arrive as `insert`s of
`<ns>/event/<name>` and are answered as the cloud would. Pods are labelled per test and removed by
label in the Kit fixture; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.bus import ModuleBus
from common.config.edgecore import Edged as EdgedConfig
from common.constants import CLOUD_CONNECTED, RESOURCE_CLOUD_CONNECTION, EdgeModule, Group, Op
from common.hostsvc.containerd import ContainerdLayout
from common.message import Message
from common.modules import ModuleContext
from edgecore.cri import CRIClient
from edgecore.cri.types import ContainerFilter, ContainerState, PodSandboxFilter
from edgecore.edged.events import EventRecorder
from edgecore.edged.module import EdgedModule
from edgecore.edged.pods.spec import LABEL_POD_UID, PodSpec, parse_pod
from edgecore.edged.pods.status import JSON
from edgecore.edged.pods.worker import PodWorker
from tests.integration.test_edged_pods import BOUND, HOST_IP, NODE, Kit, running, running_task
from tests.integration.test_edged_pods import cri as cri
from tests.integration.test_edged_pods import kit as kit

pytestmark = pytest.mark.root

MISSING_IMAGE = "docker.io/local/not-imported:0.0"


@dataclass
class Bench:
    """Pod workers sharing one kit (status log) and one recorder (the events), each pod's statuses apart."""

    kit: Kit
    recorder: EventRecorder = field(default_factory=lambda: EventRecorder(NODE))
    statuses: dict[str, list[JSON]] = field(default_factory=dict)

    def worker(self, spec: PodSpec, objects: Any = None) -> PodWorker:
        async def on_status(_: PodSpec, status: JSON) -> None:
            self.statuses.setdefault(spec.name, []).append(status)

        return PodWorker(self.kit.cri, spec, host_ip=HOST_IP, on_status=on_status, options=self.kit.options,
                         resync=0.5, pull_timeout=10, objects=objects, events=self.recorder)

    def pod(self, name: str, **container: Any) -> dict[str, Any]:
        pod = self.kit.pod(name, ["sleep", "3600"], host_network=True)
        pod["spec"]["containers"][0].update(container)
        return pod

    def events(self, spec: PodSpec) -> list[JSON]:
        return [o.event for o in self.recorder.waiting if o.event["involvedObject"]["uid"] == spec.uid]

    async def until(self, spec: PodSpec, check: Callable[[JSON], bool]) -> JSON:
        async with asyncio.timeout(BOUND):
            while True:
                found = next((s for s in reversed(self.statuses.get(spec.name, [])) if check(s)), None)
                if found is not None:
                    return found
                await asyncio.sleep(0.05)

    async def event(self, spec: PodSpec, reason: str, text: str = "") -> JSON:
        """The pod's event with that reason (and text in its message), waiting for it at most BOUND."""
        async with asyncio.timeout(BOUND):
            while True:
                found = [e for e in self.events(spec) if e["reason"] == reason and text in e["message"]]
                if found:
                    return found[-1]
                await asyncio.sleep(0.05)


@pytest.fixture
def bench(kit: Kit) -> Bench:
    return Bench(kit)


def waiting_reason(status: JSON, name: str = "app") -> str:
    app = next(c for c in status["containerStatuses"] if c["name"] == name)
    return str(app["state"].get("waiting", {}).get("reason", ""))


@contextlib.asynccontextmanager
async def good_pod_running(bench: Bench) -> AsyncIterator[PodSpec]:
    """A healthy pod beside the bad one; it must reach Running and record Pulled/Created/Started."""
    good = parse_pod(bench.pod("good"))
    async with running_task(bench.worker(good).run()):
        await bench.until(good, running)
        yield good
        assert running(bench.statuses[good.name][-1]), "the good pod stopped running"
    reasons = [e["reason"] for e in bench.events(good)]
    assert {"Pulled", "Created", "Started"} <= set(reasons)
    assert not [e for e in bench.events(good) if e["type"] == "Warning"]


async def test_missing_image_is_err_image_pull_then_back_off_with_kubelets_events(bench: Bench) -> None:
    bad = parse_pod(bench.pod("noimage", image=MISSING_IMAGE))
    async with good_pod_running(bench), running_task(bench.worker(bad).run()):
        await bench.until(bad, lambda s: waiting_reason(s) == "ErrImagePull")
        pulled = await bench.event(bad, "Failed", f'Failed to pull image "{MISSING_IMAGE}": ')
        backoff = await bench.event(bad, "BackOff", f'Back-off pulling image "{MISSING_IMAGE}"')
        status = await bench.until(bad, lambda s: waiting_reason(s) == "ImagePullBackOff")
        await bench.event(bad, "Failed", "Error: ImagePullBackOff")
    assert status["phase"] == "Pending"
    assert pulled["type"] == "Warning" and backoff["type"] == "Normal"
    assert pulled["involvedObject"]["fieldPath"] == "spec.containers{app}"
    assert pulled["source"] == {"component": "kubelet", "host": NODE}
    assert [e["message"] for e in bench.events(bad) if e["reason"] == "Failed"][:2] == [
        pulled["message"], "Error: ErrImagePull"]
    assert await bench.kit.cri.list_containers(ContainerFilter(label_selector={LABEL_POD_UID: bad.uid})) == []


async def test_bad_volumes_are_failed_mount_events_and_a_config_error(bench: Bench, tmp_path: Path) -> None:
    async def objects(namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        return None  # nothing stored: every configMap is missing

    missing = bench.pod("nocm", volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}])
    missing["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "absent-cm"}}]
    mismatch = bench.pod("notfile", volumeMounts=[{"name": "f", "mountPath": "/f"}])
    mismatch["spec"]["volumes"] = [{"name": "f", "hostPath": {"path": str(tmp_path), "type": "File"}}]
    bad_cm, bad_type = parse_pod(missing), parse_pod(mismatch)
    async with (good_pod_running(bench), running_task(bench.worker(bad_cm, objects).run()),
                running_task(bench.worker(bad_type, objects).run())):
        cm_status = await bench.until(bad_cm, lambda s: waiting_reason(s) == "CreateContainerConfigError")
        cm_event = await bench.event(bad_cm, "FailedMount")
        type_status = await bench.until(bad_type, lambda s: waiting_reason(s) == "CreateContainerConfigError")
        type_event = await bench.event(bad_type, "FailedMount")
    assert cm_event["message"] == 'MountVolume.SetUp failed for volume "cfg" : configMap absent-cm not found'
    assert cm_event["type"] == "Warning" and "fieldPath" not in cm_event["involvedObject"]
    assert type_event["message"] == (f'MountVolume.SetUp failed for volume "f" : volume f: hostPath {tmp_path} '
                                     "is not a File")
    for status in (cm_status, type_status):
        assert status["phase"] == "Pending"
        assert "not" in status["containerStatuses"][0]["state"]["waiting"]["message"]


async def test_a_probe_that_cannot_run_is_a_config_error_with_an_event(bench: Bench, cri: CRIClient) -> None:
    named = parse_pod(bench.pod("badport", livenessProbe={"httpGet": {"port": "web", "path": "/"}}))
    none = parse_pod(bench.pod("nohandler", readinessProbe={"periodSeconds": 3}))
    async with (good_pod_running(bench), running_task(bench.worker(named).run()),
                running_task(bench.worker(none).run())):
        named_status = await bench.until(named, lambda s: waiting_reason(s) == "CreateContainerConfigError")
        named_event = await bench.event(named, "Failed")
        none_event = await bench.event(none, "Failed")
    message = "liveness probe of container app: port 'web' is not a port name container app declares"
    assert named_status["containerStatuses"][0]["state"]["waiting"]["message"] == message
    assert named_event["message"] == f"Error: {message}"
    assert none_event["message"] == ("Error: readiness probe of container app: handler missing or ambiguous: a probe "
                                     "needs exactly one of exec, httpGet or tcpSocket")
    for spec in (named, none):
        assert await cri.list_containers(ContainerFilter(label_selector={LABEL_POD_UID: spec.uid})) == []


async def test_a_failing_liveness_probe_is_unhealthy_killing_and_a_restart(bench: Bench, cri: CRIClient) -> None:
    sick = parse_pod(bench.pod("sick", livenessProbe={"exec": {"command": ["sh", "-c", "echo sick; exit 1"]},
                                                      "periodSeconds": 1, "failureThreshold": 1}))
    async with good_pod_running(bench), running_task(bench.worker(sick).run()):
        unhealthy = await bench.event(sick, "Unhealthy")
        killing = await bench.event(sick, "Killing")
        await bench.until(sick, lambda s: s["containerStatuses"][0]["restartCount"] >= 1
                          or "terminated" in s["containerStatuses"][0]["lastState"])
        backoff = await bench.event(sick, "BackOff", "Back-off restarting failed container app")
    assert unhealthy["message"] == "Liveness probe failed: sick" and unhealthy["type"] == "Warning"
    assert killing["message"] == "Container app failed liveness probe, will be restarted"
    assert backoff["type"] == "Warning"
    assert await cri.list_containers(ContainerFilter(label_selector={LABEL_POD_UID: sick.uid}))


# ---- host port conflict, through a whole Edged on a bus -------------------------------------------------


@dataclass
class FakeMeta:
    """MetaManager's side of the bus: answers Edged's requests "OK" and keeps what it sent."""

    bus: ModuleBus
    statuses: dict[str, list[JSON]] = field(default_factory=dict)
    events: list[Message] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    async def serve(self, mailbox: Any) -> None:
        while True:
            message: Message = await mailbox.get()
            if "/event/" in message.resource:
                self.events.append(message)
            elif "/podstatus/" in message.resource:
                self.statuses.setdefault(message.content["Name"], []).append(message.content["Status"])
            elif "/pod/" in message.resource and message.operation == Op.DELETE:
                self.deleted.append(message.content)
            self.bus.respond(message.response("OK"))

    async def until(self, name: str, check: Callable[[JSON], bool]) -> JSON:
        async with asyncio.timeout(BOUND):
            while True:
                found = next((s for s in reversed(self.statuses.get(name, [])) if check(s)), None)
                if found is not None:
                    return found
                await asyncio.sleep(0.05)

    async def confirmed_deleted(self, uid: str) -> None:
        async with asyncio.timeout(BOUND):
            while True:
                if uid in self.deleted:
                    return
                await asyncio.sleep(0.05)

    async def event(self, name: str, reason: str) -> Message:
        async with asyncio.timeout(BOUND):
            while True:
                found = [m for m in self.events if m.content["involvedObject"]["name"] == name
                         and m.content["reason"] == reason]
                if found:
                    return found[-1]
                await asyncio.sleep(0.05)


def _insert(pod: dict[str, Any]) -> Message:
    meta = pod["metadata"]
    return Message.new(source="edgecontroller", group=Group.RESOURCE, operation=Op.INSERT,
                       resource=f"{meta['namespace']}/pod/{meta['name']}", content=pod)


async def test_a_host_port_conflict_rejects_the_later_pod_like_kubelet_admission(
    kit: Kit, containerd: ContainerdLayout
) -> None:
    port = 20000 + int(kit.label[-4:], 16) % 20000
    first = kit.pod("holder", ["sleep", "3600"], host_network=True)
    first["spec"]["containers"][0]["ports"] = [{"containerPort": port}]  # host network: a host port
    first["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    later = kit.pod("clash", ["sleep", "3600"])
    later["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": port}]
    later["metadata"]["creationTimestamp"] = "2024-01-01T00:00:05Z"

    bus = ModuleBus()
    meta = FakeMeta(bus)
    config = EdgedConfig.model_validate({"hostnameOverride": NODE, "nodeIP": HOST_IP, "reportEvent": True})
    async with CRIClient(f"unix://{containerd.socket}") as cri:
        edged = EdgedModule(config, cri=cri, options=kit.options)
        edged_box = bus.register(EdgeModule.EDGED, Group.EDGED)
        async with (running_task(meta.serve(bus.register(EdgeModule.METAMANAGER, Group.META))),
                    running_task(edged.run(ModuleContext(bus, edged_box)))):
            await bus.send(EdgeModule.EDGED, Message.new(source="websocket", group=Group.META, operation="connect",
                                                         resource=RESOURCE_CLOUD_CONNECTION, content=CLOUD_CONNECTED))
            await bus.send(EdgeModule.EDGED, _insert(first))
            await meta.until(first["metadata"]["name"], running)
            await bus.send(EdgeModule.EDGED, _insert(later))
            rejected = await meta.until(later["metadata"]["name"], lambda s: s["phase"] == "Failed")
            event = await meta.event(later["metadata"]["name"], "NodePorts")
            await asyncio.sleep(1.5)  # a few resyncs: still nothing of the rejected pod in the runtime
            later_uid = later["metadata"]["uid"]
            assert await cri.list_pod_sandbox(PodSandboxFilter(label_selector={LABEL_POD_UID: later_uid})) == []
            (holder,) = await cri.list_containers(ContainerFilter(
                label_selector={LABEL_POD_UID: first["metadata"]["uid"]}))
            assert holder.state == ContainerState.CONTAINER_RUNNING

            deleting = {**later, "metadata": {**later["metadata"], "deletionTimestamp": "2024-01-01T00:01:00Z"}}
            await bus.send(EdgeModule.EDGED, _insert(deleting))
            await meta.confirmed_deleted(later_uid)

    message = "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
    assert (rejected["reason"], rejected["message"]) == ("NodePorts", f"Pod was rejected: {message}")
    assert "containerStatuses" not in rejected
    assert event.operation == Op.INSERT
    assert event.resource == f"ke-test/event/{event.content['metadata']['name']}"
    assert (event.content["type"], event.content["message"]) == ("Warning", message)
    assert event.content["involvedObject"]["uid"] == later_uid
    assert running(meta.statuses[first["metadata"]["name"]][-1])
