"""Node groups end to end with two real edge nodes on this host (tests/fixtures/two_edges.py): one control plane
and one cloudcore; edgecore A on the session's containerd, edgecore B on a private one.

NodeGroups `hangzhou` (A) and `beijing` (B); the demo's EdgeApplication (examples/nodegroups/hostname-app.yaml,
here with 2 replicas in hangzhou) makes one Deployment per group and a range-nodegroup Service. Checked: each
group's pods run only on its node (Running in the cloud, answering HTTP with their hostname and region, the
beijing copy on the re-tagged image); each node's MetaServer lists only its own group's endpoints; moving node B
to hangzhou and back moves its pods and its endpoints within 10 s each way (timed from the moment the
NodeGroup edits are accepted); deleting the beijing NodeGroup removes B's label and evicts its pods; deleting
the EdgeApplication removes every object it made, the pods and their containers.

The demo (examples/nodegroups/demo) runs here too, next to a scripts/quickstart whose paths and ports are moved
to scratch (as tests/e2e/test_quickstart.py does): up, move, move back, down, and down again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from cloudcore.controllermanager.keys import BELONGING_TO, LAST_CONTAINED, SERVICE_TOPOLOGY
from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF
from tests.fixtures.controlplane import ROOT
from tests.fixtures.edge_rig import wait
from tests.fixtures.mosquitto import free_port
from tests.fixtures.paths import require_binary, require_root
from tests.fixtures.two_edges import BUSYBOX_ALT_REF, TwoEdges, import_alt_busybox, private_containerd, two_edges

pytestmark = pytest.mark.timeout(420)

APP: Final = "hostname-app"
MOVE_DEADLINE: Final = 10.0
STEP: Final = 90.0
EAPP_FILE: Final = ROOT / "examples/nodegroups/hostname-app.yaml"

Endpoints = list[tuple[str, str]]


@pytest.fixture
def containerd_b(state_dir: Path, run_id: str, containerd: ContainerdLayout) -> Iterator[ContainerdLayout]:
    with private_containerd(state_dir / "containerd-b", f"{run_id}b", state_dir / "images", avoid=containerd) as b:
        yield b


def nodegroup(name: str, nodes: list[str]) -> str:
    return json.dumps({"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup", "metadata": {"name": name},
                       "spec": {"nodes": nodes}})


def set_members(env: TwoEdges, group: str, nodes: list[str]) -> None:
    env.plane.kubectl("patch", "nodegroup", group, "--type=merge", "-p", json.dumps({"spec": {"nodes": nodes}}))


def edge_application(namespace: str) -> str:
    """The demo's EdgeApplication in `namespace`, 2 replicas in hangzhou."""
    app = yaml.safe_load(EAPP_FILE.read_text())
    app["metadata"]["namespace"] = namespace
    for manifest in app["spec"]["workloadTemplate"]["manifests"]:
        manifest["metadata"]["namespace"] = namespace
    (hangzhou,) = [t for t in app["spec"]["workloadScope"]["targetNodeGroups"] if t["name"] == "hangzhou"]
    hangzhou["overriders"]["replicas"] = 2
    return json.dumps(app)


def pods(env: TwoEdges, namespace: str) -> list[dict[str, Any]]:
    return list(env.kubectl_json("get", "pods", "-n", namespace, "-l", f"app={APP}").get("items", []))


def group_of(pod: dict[str, Any]) -> str:
    return str((pod["spec"].get("nodeSelector") or {}).get(BELONGING_TO, ""))


def running(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
    return (pod["status"].get("phase") == "Running" and conditions.get("Ready") == "True"
            and "deletionTimestamp" not in pod["metadata"] and bool(pod["status"].get("podIP")))


def placement(env: TwoEdges, namespace: str) -> dict[str, list[str]]:
    """group -> sorted nodeNames of its Running pods ('' for a pod not bound); non-running pods as '?<node>'."""
    env.check_alive()
    out: dict[str, list[str]] = {}
    for pod in pods(env, namespace):
        node = pod["spec"].get("nodeName", "")
        out.setdefault(group_of(pod), []).append(node if running(pod) else f"?{node}")
    return {group: sorted(nodes) for group, nodes in out.items()}


def local_endpoints(env: TwoEdges, namespace: str, nodes: set[str]) -> Endpoints:
    """(podIP, nodeName) of the Running pods on `nodes`, as an EndpointSlice lists them."""
    return sorted((p["status"]["podIP"], p["spec"]["nodeName"]) for p in pods(env, namespace)
                  if running(p) and p["spec"].get("nodeName") in nodes)


def node_group(env: TwoEdges, node: str) -> str | None:
    group = env.kubectl_json("get", "node", node).get("metadata", {}).get("labels", {}).get(BELONGING_TO)
    return None if group is None else str(group)


def timed(check: Callable[[], bool], what: str, timeout: float) -> float:
    """Seconds until `check` holds, polled every 0.1 s; AssertionError after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def answer(ip: str) -> str:
    """What the pod at `ip` serves on :8080 ('' while it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as response:
            return str(response.read().decode().strip())
    except OSError:
        return ""


def test_groups_place_pods_filter_endpoints_follow_moves_and_clean_up(
        tmp_path: Path, state_dir: Path, containerd: ContainerdLayout, containerd_b: ContainerdLayout, run_id: str,
        record_property: Callable[[str, object], None]) -> None:
    import_alt_busybox(containerd, state_dir / "images")  # beijing's Tag override; B's containerd has it already
    node_a, node_b, ns = f"hz-{run_id}", f"bj-{run_id}", f"groups-{run_id}"
    with two_edges(tmp_path, containerd, node_a, containerd_b, node_b) as env:
        kubectl = env.plane.kubectl
        kubectl("create", "namespace", ns)
        kubectl("apply", "-f", "-", input_text=nodegroup("hangzhou", [node_a]))
        kubectl("apply", "-f", "-", input_text=nodegroup("beijing", [node_b]))
        wait(lambda: node_group(env, node_a) == "hangzhou" and node_group(env, node_b) == "beijing",
             "both nodes labelled", timeout=STEP)
        kubectl("apply", "-f", "-", input_text=edge_application(ns))

        # each group's pods on its own node only, Running in the cloud
        want = {"hangzhou": [node_a, node_a], "beijing": [node_b]}
        wait(lambda: placement(env, ns) == want, f"placement {want}", timeout=STEP)
        service = env.kubectl_json("get", "service", APP, "-n", ns)
        assert service["metadata"]["annotations"][SERVICE_TOPOLOGY] == "range-nodegroup"
        served = {}  # pod IP -> what it must answer: its hostname (the pod name) and its group's REGION
        for pod in pods(env, ns):
            region, image = group_of(pod), pod["spec"]["containers"][0]["image"]
            assert image == (BUSYBOX_ALT_REF if region == "beijing" else BUSYBOX_REF)
            served[pod["status"]["podIP"]] = f"{pod['metadata']['name']} {region}"
        wait(lambda: all(answer(ip) == text for ip, text in served.items()), f"pods answer {served}", timeout=10)

        # each node's MetaServer lists only the endpoints in its own group
        in_a, in_b = local_endpoints(env, ns, {node_a}), local_endpoints(env, ns, {node_b})
        assert len(in_a) == 2 and len(in_b) == 1
        wait(lambda: env.edge_endpoints(node_a, ns, APP) == in_a, f"{node_a}'s MetaServer lists {in_a}", timeout=STEP)
        wait(lambda: env.edge_endpoints(node_b, ns, APP) == in_b, f"{node_b}'s MetaServer lists {in_b}", timeout=STEP)

        # node B moves to hangzhou: its beijing pod is evicted (the copy stays Pending: beijing has no node
        # left), and B's MetaServer now lists hangzhou's endpoints, which are all on A
        set_members(env, "beijing", [])
        set_members(env, "hangzhou", [node_a, node_b])

        def moved_to_hangzhou() -> bool:
            return (node_group(env, node_b) == "hangzhou"
                    and all(p["spec"].get("nodeName") != node_b for p in pods(env, ns))
                    and env.edge_endpoints(node_b, ns, APP) == in_a
                    and env.edge_endpoints(node_a, ns, APP) == in_a)

        there = timed(moved_to_hangzhou, f"{node_b}'s pods and endpoints moved to hangzhou", MOVE_DEADLINE)
        pending = {"hangzhou": [node_a, node_a], "beijing": ["?"]}  # beijing's copy waits for a node
        wait(lambda: placement(env, ns) == pending, f"placement {pending}", timeout=10)

        # and back to beijing: the Pending beijing pod lands on B, and B lists only it again
        set_members(env, "hangzhou", [node_a])
        set_members(env, "beijing", [node_b])

        def back_in_beijing() -> bool:
            if placement(env, ns) != want:
                return False
            mine = local_endpoints(env, ns, {node_b})
            return (node_group(env, node_b) == "beijing" and env.edge_endpoints(node_b, ns, APP) == mine
                    and env.edge_endpoints(node_a, ns, APP) == in_a)

        back = timed(back_in_beijing, f"{node_b}'s pods and endpoints back in beijing", MOVE_DEADLINE)
        print(f"\nmove times: {node_b} to hangzhou {there:.2f} s, back to beijing {back:.2f} s")
        record_property("move_to_hangzhou_s", round(there, 2))
        record_property("move_back_to_beijing_s", round(back, 2))

        # deleting the beijing NodeGroup: B loses its label, its pods are evicted (and their containers go)
        kubectl("delete", "nodegroup", "beijing", "--timeout=60s")
        wait(lambda: node_group(env, node_b) is None, f"{node_b}'s label removed", timeout=STEP)
        wait(lambda: all(p["spec"].get("nodeName") != node_b for p in pods(env, ns)), f"no pod left on {node_b}",
             timeout=STEP)
        wait(lambda: not env.b.containers(APP), f"no sandbox or container left on {node_b}", timeout=STEP)
        assert node_group(env, node_a) == "hangzhou"

        # deleting the EdgeApplication removes everything it made, the pods and their containers
        app = env.kubectl_json("get", "edgeapplication", APP, "-n", ns)
        made = json.loads(app["metadata"]["annotations"][LAST_CONTAINED])
        assert {(r["kind"], r["name"]) for r in made} >= {("Deployment", f"{APP}-hangzhou"), ("Service", APP)}
        kubectl("delete", "edgeapplication", APP, "-n", ns, "--timeout=60s")

        def gone(ref: dict[str, str]) -> bool:
            found = kubectl("get", ref["kind"].lower(), ref["name"], "-n", ref.get("namespace") or ns,
                            "--ignore-not-found", "-o", "name", check=False)
            return found.returncode == 0 and not found.stdout.strip()

        wait(lambda: all(gone(ref) for ref in made), f"every object it made deleted: {made}", timeout=STEP)
        wait(lambda: not pods(env, ns), "every pod of the app deleted", timeout=STEP)
        wait(lambda: not env.a.containers(APP), f"no sandbox or container left on {node_a}", timeout=STEP)
        leftovers = kubectl("get", "deployments,replicasets,services,endpointslices", "-n", ns, "-o", "name").stdout
        assert not leftovers.strip(), leftovers


def script(path: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(path), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{path.name} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def listing(out: str, node: str) -> str:
    """The demo's block for `node`: from its 'node <name> (group ...)' line to its '->' summary."""
    found = re.search(rf"^node {re.escape(node)} \(group (\S+)\):.*?^  -> (.*?)$", out, re.MULTILINE | re.DOTALL)
    assert found, f"no listing of {node} in:\n{out}"
    return f"{found.group(1)}: {found.group(2)}"


def test_the_demo_runs_next_to_the_quickstart_and_cleans_up(state_dir: Path, run_id: str) -> None:
    require_root("the demo")
    for binary in ("containerd", "runc", "ctr", "mosquitto", "kubectl"):
        require_binary(binary)
    base = state_dir / "ngdemo"
    node_a, node_b = f"dqa-{run_id}", f"dqb-{run_id}"
    env = {"KE_ETC": str(base / "etc"), "KE_VAR": str(base / "var"), "KE_LOGS": str(base / "log"),
           "KE_RUN": str(base / "run"), "KE_CTD_TAG": f"d{run_id}", "KE_NODE_NAME": node_a,
           "KE_EDGE2_NAME": node_b, "KE_EDGE2_CTD_TAG": f"d{run_id}b"}
    for name in ("MQTT", "APISERVER", "CLOUDHUB", "CLOUDHUB_HTTPS", "STREAM", "TUNNEL", "METASERVER",
                 "MONITOR", "EDGE_MONITOR", "EDGE2_METASERVER", "EDGE2_MONITOR"):
        env[f"KE_{name}_PORT"] = str(free_port())
    quickstart, demo = ROOT / "scripts/quickstart", ROOT / "examples/nodegroups/demo"
    kubeconfig = base / "etc/admin.kubeconfig"
    try:
        script(quickstart, env)
        try:
            up = script(demo, env)
            assert listing(up, node_a) == "hangzhou: 3 endpoint(s), all in this node's own group", up
            assert listing(up, node_b) == "beijing: 1 endpoint(s), all in this node's own group", up
            assert "docker.io/local/busybox:1.1" in up and f"{node_b}" in up, up
            moved = script(demo, env, "move")
            assert listing(moved, node_b) == "hangzhou: 3 endpoint(s), all in this node's own group", moved
            back = script(demo, env, "move", "beijing")
            assert listing(back, node_b) == "beijing: 1 endpoint(s), all in this node's own group", back
        finally:
            script(demo, env, "down")
        script(demo, env, "down")  # a second down is harmless
        nodes = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "name"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.split()
        assert nodes == [f"node/{node_a}"]
        left = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "pods,nodegroups,eapp", "-A",
                               "-o", "name"], capture_output=True, text=True, timeout=30, check=True).stdout.split()
        assert [x for x in left if "hello-edge" not in x] == [], left
        assert not (base / "run/edgecore-b.pid").exists() and not (base / "var/edge-b").exists()
    finally:
        script(quickstart, env, "down")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"ked{run_id}" not in links  # both containerds' bridges (ked<id> and ked<id>b)
