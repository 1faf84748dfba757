"""Real kubectl against a real `cloudcore controlplane` process; every check reads kubectl's output."""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.controlplane import ControlPlaneProcess

_counter = itertools.count()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ns(controlplane: ControlPlaneProcess, run_id: str) -> Iterator[str]:
    name = f"t{run_id}-{next(_counter)}"
    controlplane.kubectl("create", "namespace", name)
    yield name


def test_kubectl_version_is_printed_and_server_answers(controlplane: ControlPlaneProcess) -> None:
    client = controlplane.kubectl("version", "-o", "json", check=False)
    versions = json.loads(client.stdout)
    print("kubectl client:", versions["clientVersion"]["gitVersion"])
    assert versions["serverVersion"]["gitVersion"] == "v1.30.7"
    assert controlplane.kubectl("get", "--raw", "/readyz").stdout == "ok"
    assert "[+]etcd ok" in controlplane.kubectl("get", "--raw", "/readyz?verbose").stdout


def test_api_resources_lists_builtin_kinds(controlplane: ControlPlaneProcess) -> None:
    out = controlplane.kubectl("api-resources", "--no-headers").stdout
    rows = {line.split()[0]: line for line in out.splitlines()}
    for name in ("pods", "nodes", "deployments", "endpointslices", "leases", "customresourcedefinitions"):
        assert name in rows, out
    assert " po " in f" {rows['pods']} " and "Pod" in rows["pods"]


def test_system_namespaces_exist(controlplane: ControlPlaneProcess) -> None:
    out = controlplane.kubectl("get", "namespaces", "--no-headers").stdout
    names = {line.split()[0] for line in out.splitlines()}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    assert "Active" in out


CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web, tier: front}
data:
  color: blue
  size: "3"
"""


def test_apply_get_label_selector_and_patches(controlplane: ControlPlaneProcess, ns: str) -> None:
    kubectl = controlplane.kubectl
    assert "configmap/settings created" in kubectl("apply", "-n", ns, "-f", "-", input_text=CONFIGMAP).stdout
    assert "configmap/settings unchanged" in kubectl("apply", "-n", ns, "-f", "-", input_text=CONFIGMAP).stdout
    table = kubectl("get", "configmap", "settings", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "DATA", "AGE"] and table[1].split()[:2] == ["settings", "2"]
    assert kubectl("get", "cm", "-n", ns, "-l", "app=web", "-o", "name").stdout.strip() == "configmap/settings"
    assert kubectl("get", "cm", "-n", ns, "-l", "app notin (web)", "-o", "name").stdout.strip() == ""
    assert "labeled" in kubectl("label", "cm", "settings", "-n", ns, "stage=prod").stdout
    assert kubectl("get", "cm", "-n", ns, "-l", "stage=prod,tier", "-o", "name").stdout.strip() == "configmap/settings"
    kubectl("patch", "cm", "settings", "-n", ns, "--type", "merge", "-p", '{"data":{"color":"red"}}')
    kubectl("patch", "cm", "settings", "-n", ns, "-p", '{"data":{"shape":"round"}}')  # strategic (default)
    kubectl("patch", "cm", "settings", "-n", ns, "--type", "json", "-p",
            '[{"op":"remove","path":"/data/size"},{"op":"add","path":"/data/n","value":"1"}]')
    data = json.loads(kubectl("get", "cm", "settings", "-n", ns, "-o", "json").stdout)["data"]
    assert data == {"color": "red", "shape": "round", "n": "1"}


def watched_events(controlplane: ControlPlaneProcess, ns: str, name: str, count: int, extra: list[str],
                   actions: Callable[[], None]) -> list[str]:
    """Run `kubectl get cm -w --output-watch-events` while `actions` runs; the event types seen for `name`."""
    watch = subprocess.Popen(["kubectl", "--kubeconfig", str(controlplane.kubeconfig), "get", "cm", "-n", ns, "-w",
                              *extra, "--output-watch-events", "-o",
                              "custom-columns=EVENT:.type,NAME:.object.metadata.name"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert watch.stdout is not None
    def read() -> None:
        for line in watch.stdout or ():
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    try:
        time.sleep(1.0)  # let kubectl list and start watching
        actions()
        events: list[str] = []
        deadline = time.monotonic() + 20
        while len(events) < count and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.5)
                if name in line.split():
                    events.append(line.split()[0])
    finally:
        watch.terminate()
        watch.wait(timeout=5)
    return events


def test_get_watch_sees_add_modify_delete(controlplane: ControlPlaneProcess, ns: str) -> None:
    def actions() -> None:
        controlplane.kubectl("create", "configmap", "w1", "-n", ns, "--from-literal=a=1")
        controlplane.kubectl("patch", "cm", "w1", "-n", ns, "--type", "merge", "-p", '{"data":{"a":"2"}}')
        controlplane.kubectl("delete", "cm", "w1", "-n", ns)

    assert watched_events(controlplane, ns, "w1", 3, [], actions) == ["ADDED", "MODIFIED", "DELETED"]


def test_delete_prints_and_object_is_gone(controlplane: ControlPlaneProcess, ns: str) -> None:
    controlplane.kubectl("create", "configmap", "gone", "-n", ns)
    assert 'configmap "gone" deleted' in controlplane.kubectl("delete", "cm", "gone", "-n", ns).stdout
    missing = controlplane.kubectl("get", "cm", "gone", "-n", ns, check=False)
    assert missing.returncode == 1 and 'configmaps "gone" not found' in missing.stderr


def test_server_side_apply_creates_then_updates(controlplane: ControlPlaneProcess, ns: str) -> None:
    kubectl = controlplane.kubectl
    assert "serverside-applied" in kubectl("apply", "--server-side", "-n", ns, "-f", "-", input_text=CONFIGMAP).stdout
    changed = CONFIGMAP.replace("color: blue", "color: green")
    assert "serverside-applied" in kubectl("apply", "--server-side", "-n", ns, "-f", "-", input_text=changed).stdout
    assert kubectl("get", "cm", "settings", "-n", ns, "-o", "jsonpath={.data.color}").stdout == "green"


def test_explain_pods_reads_the_openapi(controlplane: ControlPlaneProcess) -> None:
    out = controlplane.kubectl("explain", "pods").stdout
    assert "KIND:" in out and "Pod" in out and "VERSION:" in out and "v1" in out
    assert "spec" in out and "status" in out
    image = controlplane.kubectl("explain", "pods.spec.containers.image").stdout
    assert "FIELD:" in image and "image" in image


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.kubeedge.io
spec:
  group: example.kubeedge.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string}
          status:
            type: object
            properties:
              phase: {type: string}
"""


def test_crd_then_custom_objects(controlplane: ControlPlaneProcess, ns: str) -> None:
    kubectl = controlplane.kubectl
    kubectl("apply", "-f", "-", input_text=CRD)
    kubectl("wait", "--for=condition=established", "crd/widgets.example.kubeedge.io", "--timeout=20s")
    widget = textwrap.dedent("""
        apiVersion: example.kubeedge.io/v1
        kind: Widget
        metadata: {name: w1}
        spec: {size: 3, color: red}
    """)
    deadline = time.monotonic() + 20
    while True:  # discovery caches refresh on a miss; the first apply right after the CRD may race
        applied = kubectl("apply", "-n", ns, "-f", "-", input_text=widget, check=False)
        if applied.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "widget.example.kubeedge.io/w1 created" in applied.stdout, applied.stderr
    table = kubectl("get", "wdg", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "AGE"] and table[1].split()[:2] == ["w1", "3"]
    bad = kubectl("apply", "-n", ns, "-f", "-", input_text=widget.replace("size: 3", "size: 0"), check=False)
    assert bad.returncode != 0 and "spec.size" in bad.stderr
    kubectl("patch", "widget", "w1", "-n", ns, "--subresource", "status", "--type", "merge",
            "-p", '{"status":{"phase":"Ready"}}')
    assert kubectl("get", "widget", "w1", "-n", ns, "-o", "jsonpath={.status.phase}").stdout == "Ready"
    strategic = kubectl("patch", "widget", "w1", "-n", ns, "-p", '{"spec":{"size":4}}', check=False)
    assert strategic.returncode != 0 and "unknown format" in strategic.stderr
    assert 'widget.example.kubeedge.io "w1" deleted' in kubectl("delete", "widget", "w1", "-n", ns).stdout


def test_label_selector_watch_sees_objects_enter_and_leave(controlplane: ControlPlaneProcess, ns: str) -> None:
    """Relabelling moves an object into and out of a selected watch: ADDED, then DELETED."""
    controlplane.kubectl("create", "configmap", "mover", "-n", ns)

    def actions() -> None:
        controlplane.kubectl("label", "cm", "mover", "-n", ns, "team=blue")
        controlplane.kubectl("label", "cm", "mover", "-n", ns, "team=red", "--overwrite")

    assert watched_events(controlplane, ns, "mover", 2, ["-l", "team=blue"], actions) == ["ADDED", "DELETED"]


def test_upstream_reliablesyncs_crds_install_and_serve(controlplane: ControlPlaneProcess, ns: str) -> None:
    crds = ROOT / "config/crds/reliablesyncs"
    assert "customresourcedefinition" in controlplane.kubectl("apply", "-f", str(crds)).stdout
    controlplane.kubectl("wait", "--for=condition=established", "crd/objectsyncs.reliablesyncs.kubeedge.io",
                         "crd/clusterobjectsyncs.reliablesyncs.kubeedge.io", "--timeout=20s")
    sync = textwrap.dedent("""
        apiVersion: reliablesyncs.kubeedge.io/v1alpha1
        kind: ObjectSync
        metadata: {name: edge-1.0b9f7f8e-23c4-4c55-8d3e-1f5a6b7c8d9e}
        spec: {objectAPIVersion: v1, objectKind: Pod, objectName: web}
    """)
    deadline = time.monotonic() + 20
    while True:  # kubectl's discovery cache may lag the new CRD by a moment
        applied = controlplane.kubectl("apply", "-n", ns, "-f", "-", input_text=sync, check=False)
        if applied.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "created" in applied.stdout, applied.stderr
    name = "edge-1.0b9f7f8e-23c4-4c55-8d3e-1f5a6b7c8d9e"
    controlplane.kubectl("patch", "objectsync", name, "-n", ns, "--subresource", "status", "--type", "merge",
                         "-p", '{"status":{"objectResourceVersion":"42"}}')
    got = controlplane.kubectl("get", "objectsync", name, "-n", ns, "-o", "jsonpath={.status.objectResourceVersion}")
    assert got.stdout == "42"
