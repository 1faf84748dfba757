"""Bad pod specs seen from the cloud: real control plane, cloudcore and edgecore (reportEvent on) processes,
edged on the `containerd` fixture, and the real kubectl. A pod whose image is missing shows kubelet's pull events in
`kubectl get events --field-selector involvedObject.name=<pod>`; a pod asking for a host port another pod
on the node holds is rejected (Failed, NodePorts) with its event; the good pod keeps Running throughout."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF
from tests.fixtures.edge_rig import EdgeRig, wait

pytestmark = pytest.mark.timeout(240)

MISSING_IMAGE = "docker.io/local/not-imported:0.0"


class EventRig(EdgeRig):
    """The shared rig, its edgecore.yaml with upstream's `modules.edged.reportEvent: true` (false by default)."""

    def _write_edge_config(self, token: str) -> None:
        super()._write_edge_config(token)
        config = yaml.safe_load(self.edge.config.read_text())
        config["modules"]["edged"]["reportEvent"] = True
        self.edge.config.write_text(yaml.safe_dump(config))


@contextlib.contextmanager
def event_rig(root: Path, containerd: ContainerdLayout, node: str) -> Iterator[EdgeRig]:
    rig = EventRig(root, containerd, node)
    try:
        rig.start()
        wait(rig.node_ready, "edge node Ready")
        yield rig
    finally:
        rig.stop()


def pod(name: str, node: str, image: str = BUSYBOX_REF, **container: Any) -> str:
    # spec.nodeName: bound at creation, as kubelet's admission sees pods the scheduler did not filter
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                       "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                                "containers": [{"name": "app", "image": image, "command": ["sleep", "3600"],
                                                **container}]}})


def pod_status(rig: EdgeRig, name: str) -> dict[str, Any]:
    found = rig.plane.kubectl("get", "pod", name, "-o", "json", check=False)
    return dict(json.loads(found.stdout)["status"]) if found.returncode == 0 else {}


def events_of(rig: EdgeRig, name: str) -> list[dict[str, Any]]:
    listed = rig.plane.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return list(json.loads(listed.stdout)["items"])


def sandboxes_and_containers(rig: EdgeRig, name: str) -> list[str]:
    """What containerd holds of the pod (kubelet's pod-name label)."""
    return subprocess.run(["ctr", "--address", str(rig.containerd.socket), "-n", "k8s.io", "containers", "ls", "-q",
                           f'labels."io.kubernetes.pod.name"=={name}'],
                          capture_output=True, text=True, timeout=20, check=True).stdout.split()


def waiting_reason(status: dict[str, Any]) -> str:
    states = [c.get("state", {}) for c in status.get("containerStatuses") or []]
    return str(states[0].get("waiting", {}).get("reason", "")) if states else ""


def test_missing_image_and_port_conflict_show_in_kubectl_events_while_the_good_pod_runs(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
    node = f"edge-events-{run_id}"
    good, noimage, clash = f"good-{run_id}", f"noimage-{run_id}", f"clash-{run_id}"
    port = 30000 + int(run_id[-4:], 16) % 20000  # run_id ends in hex digits
    with event_rig(tmp_path, containerd, node) as rig:
        rig.plane.kubectl("apply", "-f", "-", input_text=pod(good, node, ports=[{"containerPort": 80,
                                                                                  "hostPort": port}]))
        wait(lambda: pod_status(rig, good).get("phase") == "Running", "good pod Running")
        rig.plane.kubectl("apply", "-f", "-", input_text=pod(noimage, node, image=MISSING_IMAGE))
        rig.plane.kubectl("apply", "-f", "-", input_text=pod(clash, node, ports=[{"containerPort": 80,
                                                                                  "hostPort": port}]))

        def pull_failed() -> dict[str, Any] | None:
            return next((e for e in events_of(rig, noimage) if e["reason"] == "Failed"
                         and e["message"].startswith(f'Failed to pull image "{MISSING_IMAGE}"')), None)

        pulled = wait(pull_failed, "the missing image's Failed event in the cloud")
        assert pulled["type"] == "Warning" and pulled["source"] == {"component": "kubelet", "host": node}
        assert pulled["involvedObject"]["kind"] == "Pod" and pulled["involvedObject"]["fieldPath"] == \
            "spec.containers{app}"
        table = rig.plane.kubectl("get", "events", "--field-selector", f"involvedObject.name={noimage}").stdout
        assert "Failed to pull image" in table and "Warning" in table
        status = wait(lambda: (s := pod_status(rig, noimage)) and waiting_reason(s) in ("ErrImagePull",
                                                                                          "ImagePullBackOff") and s,
                      "missing image pod waiting with ErrImagePull")
        assert status["phase"] == "Pending"

        rejected = wait(lambda: (s := pod_status(rig, clash)).get("phase") == "Failed" and s,
                        "the conflicting pod rejected")
        assert rejected["reason"] == "NodePorts"
        assert rejected["message"].startswith("Pod was rejected: Predicate NodePorts failed")
        (event,) = wait(lambda: [e for e in events_of(rig, clash) if e["reason"] == "NodePorts"],
                        "the NodePorts event in the cloud")
        assert event["type"] == "Warning"
        assert sandboxes_and_containers(rig, clash) == [], "the rejected pod got a sandbox"

        assert pod_status(rig, good).get("phase") == "Running"
        assert {e["reason"] for e in events_of(rig, good)} >= {"Pulled", "Created", "Started"}
        assert len(sandboxes_and_containers(rig, good)) == 2

        # all three go, the rejected one too: the cloud's objects once the edge confirmed, nothing in containerd
        rig.plane.kubectl("delete", "pod", good, noimage, clash, "--wait=false")
        wait(lambda: not any(pod_status(rig, name) for name in (good, noimage, clash)), "pods deleted", timeout=60)
        wait(lambda: not any(sandboxes_and_containers(rig, name) for name in (good, noimage)),
             "nothing left in containerd", timeout=30)
