"""MetaServer serving kinds the node does not sync, end to end: a real control plane, cloudcore with its
dynamicController and edgecore, each its own process. kubectl and the official Python client against the
edge's MetaServer resolve deployments and namespaces through the cloud's discovery, list them cloud-first,
watch them (the node subscribes; cloudcore streams the changes), and keep reading them from the edge's
cache once cloudcore is gone; when it is back, the edge renews its subscriptions. A Secret no pod on the
node uses is not readable there."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from tests.e2e.test_metaserver_restart import Rig, cloud_and_edge, wait_for
from tests.fixtures.paths import require_binary

STEP = 30.0  # bound of each wait on the edge


def deployment(name: str) -> str:
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "dyn"},
                       "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},  # no pods to run
                                "template": {"metadata": {"labels": {"app": name}},
                                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})


def edge_url(rig: Rig) -> str:
    return str(rig.api.api_client.configuration.host)


def kubectl_argv(rig: Rig, tmp_path: Path, *args: str, cache: str = "kubectl-cache") -> list[str]:
    kubeconfig = tmp_path / "empty.kubeconfig"
    kubeconfig.touch()
    return [require_binary("kubectl"), "--server", edge_url(rig), "--kubeconfig", str(kubeconfig),
            "--cache-dir", str(tmp_path / cache), "--request-timeout", "25s", *args]


def edge_kubectl(rig: Rig, tmp_path: Path, *args: str,
                 cache: str = "kubectl-cache") -> subprocess.CompletedProcess[str]:
    return subprocess.run(kubectl_argv(rig, tmp_path, *args, cache=cache), capture_output=True, text=True,
                          timeout=STEP + 10, check=False)


def names(rig: Rig, tmp_path: Path, *args: str, cache: str = "kubectl-cache") -> list[str]:
    done = edge_kubectl(rig, tmp_path, "get", *args, "-o", "name", cache=cache)
    return done.stdout.split() if done.returncode == 0 else []


def test_deployments_through_the_cloud_then_from_the_edge_cache(tmp_path: Path) -> None:
    with cloud_and_edge(tmp_path) as rig:
        plane, edge = rig.plane, rig.edge
        plane.kubectl("create", "namespace", "dyn")
        plane.kubectl("apply", "-f", "-", input_text=deployment("one"))
        plane.kubectl("create", "secret", "generic", "lonely", "-n", "dyn", "--from-literal=k=v")
        edge.wait_log('"cloud discovery fetched"', timeout=STEP)
        wait_for(lambda: names(rig, tmp_path, "deployments", "-n", "dyn") == ["deployment.apps/one"],
                 "deployment one listed through the edge", STEP)
        assert names(rig, tmp_path, "namespace", "dyn") == ["namespace/dyn"]  # cluster-scoped

        apps = kubernetes.client.AppsV1Api(rig.api.api_client)  # the official client, same MetaServer
        listed = apps.list_namespaced_deployment("dyn", _request_timeout=STEP)
        assert [d.metadata.name for d in listed.items] == ["one"] and listed.items[0].spec.replicas == 0

        watch = subprocess.Popen(kubectl_argv(rig, tmp_path, "get", "deployments", "-n", "dyn", "-w",
                                              "--output-watch-events", "--request-timeout", "0"),
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            lines = watch_lines(watch)
            assert [lines.get(timeout=STEP).split()[:2] for _ in range(2)] == [["EVENT", "NAME"], ["ADDED", "one"]]
            wait_for(lambda: rig.cloud.log_count('"subscribed"') >= 1, "the node subscribed to deployments", STEP)
            plane.kubectl("apply", "-f", "-", input_text=deployment("two"))
            assert first_event_of(lines, "two") == "ADDED"  # (the deployment controller may touch "one" first)
        finally:
            watch.kill()
            watch.wait(10)

        # a Secret no pod on this node uses: not on the node, and the cloud does not hand it out either
        done = edge_kubectl(rig, tmp_path, "get", "secret", "lonely", "-n", "dyn")
        assert done.returncode == 1 and 'secrets "lonely" not found' in done.stderr
        with pytest.raises(ApiException) as hidden:
            rig.api.read_namespaced_secret("lonely", "dyn", _request_timeout=STEP)
        assert hidden.value.status == 404

        disconnects = edge.log_count('"disconnected from cloudcore"')
        rig.cloud.stop()
        edge.wait_log('"disconnected from cloudcore"', count=disconnects + 1, timeout=STEP)
        # a fresh kubectl cache: discovery too is answered from the edge's copy
        assert names(rig, tmp_path, "deployments", "-n", "dyn", cache="offline-cache") == [
            "deployment.apps/one", "deployment.apps/two"]
        assert [d.metadata.name for d in apps.list_namespaced_deployment("dyn", _request_timeout=STEP).items] == [
            "one", "two"]
        done = edge_kubectl(rig, tmp_path, "get", "deployments", "-n", "elsewhere", cache="offline-cache")
        assert done.returncode == 1 and "offline" in done.stderr and "no cached copy" in done.stderr

        # a watch opened offline; the cloud changes meanwhile; on reconnecting the edge renews its subscription
        # and catches up (the delete made while it was away included), and the watch sees it all
        watch = subprocess.Popen(kubectl_argv(rig, tmp_path, "get", "deployments", "-n", "dyn", "-w",
                                              "--output-watch-events", "--request-timeout", "0"),
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            lines = watch_lines(watch)
            assert [lines.get(timeout=STEP).split()[:2] for _ in range(3)] == [
                ["EVENT", "NAME"], ["ADDED", "one"], ["ADDED", "two"]]
            plane.kubectl("delete", "deployment", "one", "-n", "dyn")
            connects = edge.log_count('"connected to cloudcore"')
            rig.cloud.start()
            edge.wait_log('"connected to cloudcore"', count=connects + 1, timeout=60)
            assert first_event_of(lines, "one") == "DELETED"
            plane.kubectl("apply", "-f", "-", input_text=deployment("three"))
            assert first_event_of(lines, "three") == "ADDED"
        finally:
            watch.kill()
            watch.wait(10)


def first_event_of(lines: queue.Queue[str], name: str) -> str:
    deadline = time.monotonic() + STEP
    while True:
        fields = lines.get(timeout=max(deadline - time.monotonic(), 0.1)).split()
        if fields[1:2] == [name]:
            return fields[0]


def watch_lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's output lines, read by a thread (the test waits on the queue with a timeout); the thread
    ends with the process's output."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    return lines
