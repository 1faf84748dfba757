"""Edged volumes, env from objects, resources and securityContext against the real containerd fixture.

Reuses test_edged_pods' Kit (pods labelled per test, removed by label in the fixture, bounded waits);
configMaps and secrets come from a real MetaStore (SQLite), as MetaManager stores them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgecore.cri import CRIClient
from edgecore.cri.types import ContainerFilter, PodSandboxFilter
from edgecore.edged.pods.configs import RuntimeOptions
from edgecore.edged.pods.spec import LABEL_POD_UID, PodSpec, parse_pod
from edgecore.edged.pods.status import JSON
from edgecore.edged.pods.volumes import pod_dir
from edgecore.edged.pods.worker import PodWorker
from edgecore.metamanager.store import MetaChange, MetaStore
from tests.integration.test_edged_pods import BOUND, HOST_IP, Kit, running, running_task
from tests.integration.test_edged_pods import cri as cri
from tests.integration.test_edged_pods import kit as kit

pytestmark = pytest.mark.root


@dataclasses.dataclass
class VolumeKit:
    kit: Kit
    store: MetaStore
    root: Path
    version: int = 0

    async def put(self, kind: str, name: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj = {"metadata": {"name": name, "namespace": "ke-test"}, **obj}
        await self.store.apply([MetaChange(f"ke-test/{kind}/{name}", kind, orjson.dumps(obj).decode(), self.version)])

    def worker(self, spec: PodSpec) -> PodWorker:
        async def on_status(_: PodSpec, status: JSON) -> None:
            self.kit.statuses.append(status)

        async def on_deleted(deleted: PodSpec) -> None:
            self.kit.deleted.append(deleted.uid)

        async def objects(namespace: str, kind: str, name: str) -> dict[str, Any] | None:
            value = await self.store.get(f"{namespace}/{kind}/{name}")
            return orjson.loads(value) if value else None

        return PodWorker(self.kit.cri, spec, host_ip=HOST_IP, on_status=on_status, on_deleted=on_deleted,
                         options=self.kit.options, resync=0.5, pull_timeout=10, objects=objects)

    def pod(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        pod = self.kit.pod(name, ["sleep", "3600"], host_network=True)
        pod["spec"]["containers"][0].update(spec.pop("container", {}))
        pod["spec"].update(spec)
        return pod


@pytest.fixture
async def vkit(kit: Kit, tmp_path: Path) -> AsyncIterator[VolumeKit]:
    root = tmp_path / "kubelet"
    kit.options = RuntimeOptions(log_root=tmp_path / "pods", root_dir=root)
    store = await MetaStore.open(tmp_path / "edge.db")
    try:
        yield VolumeKit(kit=kit, store=store, root=root)
    finally:
        await store.close()


async def _container_id(cri: CRIClient, uid: str) -> str:
    (container,) = await cri.list_containers(ContainerFilter(label_selector={LABEL_POD_UID: uid}))
    return container.id


async def _sh(cri: CRIClient, container_id: str, script: str) -> str:
    result = await cri.exec_sync(container_id, ["sh", "-c", script])
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


async def test_configmap_secret_emptydir_hostpath_env_and_cleanup(vkit: VolumeKit, tmp_path: Path) -> None:
    host = tmp_path / "host-share"
    host.mkdir()
    (host / "from-host.txt").write_text("host-data\n")
    await vkit.put("configmap", "app-config", {"data": {"greeting": "hello-cm", "mode": "prod"}})
    await vkit.put("secret", "app-secret", {"data": {"password": base64.b64encode(b"s3cr3t").decode()}})
    spec = parse_pod(vkit.pod("vol", {
        "volumes": [
            {"name": "cfg", "configMap": {"name": "app-config"}},
            {"name": "sec", "secret": {"secretName": "app-secret", "defaultMode": 0o400}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "share", "hostPath": {"path": str(host), "type": "Directory"}},
            {"name": "made", "hostPath": {"path": str(tmp_path / "made"), "type": "DirectoryOrCreate"}},
            {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        ],
        "container": {
            "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"},
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "share", "mountPath": "/share", "readOnly": True},
                {"name": "made", "mountPath": "/made"}, {"name": "info", "mountPath": "/etc/info"},
                {"name": "cfg", "mountPath": "/greeting.txt", "subPath": "greeting"},
            ],
            "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "password"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "envFrom": [{"configMapRef": {"name": "app-config"}, "prefix": "CM_"}],
        },
    }))
    worker = vkit.worker(spec)
    async with running_task(worker.run()) as task:
        await vkit.kit.until(running)
        cid = await _container_id(vkit.kit.cri, spec.uid)
        out = await _sh(vkit.kit.cri, cid, "cat /etc/cfg/greeting /etc/cfg/mode /etc/sec/password; echo;"
                        " cat /share/from-host.txt /etc/info/name /greeting.txt; echo;"
                        " echo $GREETING $PASSWORD $POD_NAME $NODE $CM_mode;"
                        " echo data > /scratch/f && cat /scratch/f; stat -L -c %a /etc/sec/password;"
                        " touch /share/x 2>/dev/null && echo rw || echo ro;"
                        " touch /etc/cfg/x 2>/dev/null || echo cfg-ro")
        assert out.splitlines() == [
            "hello-cmprods3cr3t", "host-data", f"{spec.name}hello-cm",
            f"hello-cm s3cr3t {spec.name} edge-test prod", "data", "400", "ro", "cfg-ro"]
        volumes = pod_dir(vkit.root, spec.uid) / "volumes"
        assert (volumes / "kubernetes.io~empty-dir/scratch/f").read_text() == "data\n"
        assert (tmp_path / "made").is_dir()

        # A changed configMap reaches the running container (atomic ..data swap, within a few re-syncs).
        await vkit.put("configmap", "app-config", {"data": {"greeting": "hello-again", "mode": "prod"}})
        async with asyncio.timeout(BOUND):
            while True:
                if await _sh(vkit.kit.cri, cid, "cat /etc/cfg/greeting") == "hello-again":
                    break
                await asyncio.sleep(0.2)

        worker.update(dataclasses.replace(spec, deleting=True))
        async with asyncio.timeout(BOUND):
            await task
    assert not pod_dir(vkit.root, spec.uid).exists(), "the pod's volume directories survived its deletion"
    assert (host / "from-host.txt").exists(), "hostPath contents must survive the pod"
    assert await vkit.kit.leftovers() == ([], [])


async def test_missing_configmap_waits_with_config_error_then_starts(vkit: VolumeKit) -> None:
    name = f"late-{uuid.uuid4().hex[:6]}"
    spec = parse_pod(vkit.pod("late", {
        "volumes": [{"name": "cfg", "configMap": {"name": name}}],
        "container": {"volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]},
    }))
    async with running_task(vkit.worker(spec).run()):
        status = await vkit.kit.until(lambda s: s["containerStatuses"][0]["state"].get("waiting", {}).get("reason")
                                      == "CreateContainerConfigError")
        assert name in status["containerStatuses"][0]["state"]["waiting"]["message"]
        assert status["phase"] == "Pending"
        await vkit.put("configmap", name, {"data": {"k": "v"}})
        await vkit.kit.until(running)  # retried after the back-off (10 s), no crash
        cid = await _container_id(vkit.kit.cri, spec.uid)
        assert await _sh(vkit.kit.cri, cid, "cat /etc/cfg/k") == "v"


async def test_memory_limit_cpu_and_run_as_user_reach_the_container(vkit: VolumeKit) -> None:
    spec = parse_pod(vkit.pod("res", {
        "securityContext": {"runAsUser": 1000, "runAsGroup": 2000},
        "container": {"resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}},
                      "securityContext": {"readOnlyRootFilesystem": True}},
    }))
    async with running_task(vkit.worker(spec).run()):
        await vkit.kit.until(running)
        cid = await _container_id(vkit.kit.cri, spec.uid)
        out = await _sh(vkit.kit.cri, cid, "id -u; id -g; touch /rootfs-file 2>/dev/null && echo rw || echo ro")
        assert out.split() == ["1000", "2000", "ro"]
        # runtime.md: without a cgroup_parent containerd puts the container at /k8s.io/<id> in each hierarchy.
        cgroup = Path("/sys/fs/cgroup")
        assert (cgroup / "memory/k8s.io" / cid / "memory.limit_in_bytes").read_text().strip() == str(64 * 2**20)
        assert (cgroup / "cpu/k8s.io" / cid / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cgroup / "cpu/k8s.io" / cid / "cpu.shares").read_text().strip() == "256"
        inside = await _sh(vkit.kit.cri, cid, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert inside.strip() == str(64 * 2**20)


async def test_bad_volume_is_a_clear_reason_not_a_crash(vkit: VolumeKit, tmp_path: Path) -> None:
    spec = parse_pod(vkit.pod("badvol", {
        "volumes": [{"name": "f", "hostPath": {"path": str(tmp_path / "absent"), "type": "File"}}],
        "container": {"volumeMounts": [{"name": "f", "mountPath": "/f"}]},
    }))
    async with running_task(vkit.worker(spec).run()):
        status = await vkit.kit.until(lambda s: s["containerStatuses"][0]["state"].get("waiting", {}).get("reason")
                                      == "CreateContainerConfigError")
    assert "does not exist" in status["containerStatuses"][0]["state"]["waiting"]["message"]
    sandboxes = await vkit.kit.cri.list_pod_sandbox(PodSandboxFilter(label_selector={LABEL_POD_UID: spec.uid}))
    assert sandboxes  # the sandbox runs; only the container waits
