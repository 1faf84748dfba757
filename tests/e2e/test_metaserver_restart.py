"""MetaServer in a real edgecore process, fed by a real cloud (control plane + cloudcore with its
dynamicController): a client of the edge's API lists pods, watches, loses edgecore to a restart, and
resumes its watch from the resourceVersion it had; when the cloud goes away the edge keeps serving
reads and refuses writes; while connected a write reaches the API server."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
import yaml
from kubernetes import watch as kwatch
from kubernetes.client.rest import ApiException

from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.daemons import Daemon
from tests.fixtures.mosquitto import free_port

NODE = "edge-ms"
EDGE_LABEL = "node-role.kubernetes.io/edge"


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def edge_api(port: int) -> kubernetes.client.CoreV1Api:
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))


def pod_names(api: kubernetes.client.CoreV1Api) -> set[str]:
    try:
        return {p.metadata.name for p in api.list_namespaced_pod("default", _request_timeout=5).items}
    except (ApiException, OSError):
        return set()  # edgecore is (re)starting


def pod_manifest(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                                       "labels": {"app": "ms"}},
                       "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "busybox:1.36"}]}})


def watch_events(api: kubernetes.client.CoreV1Api, rv: str, seconds: int = 2) -> list[tuple[str, str, str]]:
    stream = kwatch.Watch().stream(api.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=seconds,
                                   _request_timeout=seconds + 10)
    return [(e["type"], e["object"].metadata.name, e["object"].metadata.resource_version) for e in stream]


def write_configs(tmp_path: Path, plane: ControlPlaneProcess, ports: dict[str, int], token: str) -> None:
    (tmp_path / "cloudcore.yaml").write_text(yaml.safe_dump({
        "kubeAPIConfig": {"kubeConfig": str(plane.kubeconfig)},
        "modules": {"cloudHub": {
            "advertiseAddress": ["127.0.0.1"], "keepaliveInterval": 5,
            "tlsCAFile": str(tmp_path / "cloud/ca.crt"), "tlsCAKeyFile": str(tmp_path / "cloud/ca.key"),
            "tlsCertFile": str(tmp_path / "cloud/server.crt"), "tlsPrivateKeyFile": str(tmp_path / "cloud/server.key"),
            "unixsocket": {"address": f"unix://{tmp_path}/kubeedge.sock"},
            "websocket": {"address": "127.0.0.1", "port": ports["ws"]},
            "https": {"address": "127.0.0.1", "port": ports["https"]}},
            "dynamicController": {"enable": True}}}))
    (tmp_path / "edgecore.yaml").write_text(yaml.safe_dump({
        "database": {"dataSource": str(tmp_path / "edge/edgecore.db")},
        "modules": {
            "edged": {"enable": False, "hostnameOverride": NODE},  # the test creates the Node; no pods run
            "metaManager": {"metaServer": {"enable": True, "server": f"127.0.0.1:{ports['metaserver']}"}},
            "edgeHub": {
                "heartbeat": 1, "token": token, "httpServer": f"https://127.0.0.1:{ports['https']}",
                "tlsCaFile": str(tmp_path / "edge/ca/rootCA.crt"),
                "tlsCertFile": str(tmp_path / "edge/certs/server.crt"),
                "tlsPrivateKeyFile": str(tmp_path / "edge/certs/server.key"),
                "websocket": {"enable": True, "server": f"127.0.0.1:{ports['ws']}"},
                "quic": {"enable": False, "server": "127.0.0.1:1"}}}}))


@dataclass
class Rig:
    plane: ControlPlaneProcess
    cloud: Daemon
    edge: Daemon
    api: kubernetes.client.CoreV1Api


@contextlib.contextmanager
def cloud_and_edge(tmp_path: Path) -> Iterator[Rig]:
    """Control plane, cloudcore and edgecore (MetaServer on a free port), the edge connected."""
    plane = ControlPlaneProcess(tmp_path / "cp")
    ports = {"ws": free_port(), "https": free_port(), "metaserver": free_port()}
    cloud = Daemon("cloudcore", tmp_path / "cloudcore.yaml", tmp_path / "cloudcore.log")
    edge = Daemon("edgecore", tmp_path / "edgecore.yaml", tmp_path / "edgecore.log")
    try:
        plane.start()
        write_configs(tmp_path, plane, ports, "")
        cloud.start()
        cloud.wait_log('"websocket server listening"')
        plane.kubectl("apply", "-f", "-", input_text=json.dumps({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {EDGE_LABEL: ""}}}))
        token = base64.b64decode(plane.kubectl("get", "secret", "tokensecret", "-n", "kubeedge", "-o",
                                               "jsonpath={.data.tokendata}").stdout).decode()
        write_configs(tmp_path, plane, ports, token)
        edge.start()
        edge.wait_log('"metaserver listening"')
        edge.wait_log('"connected to cloudcore"', timeout=60)
        yield Rig(plane, cloud, edge, edge_api(ports["metaserver"]))
    finally:
        edge.stop()
        cloud.stop()
        plane.stop()


def test_a_watch_resumes_across_an_edgecore_restart_and_reads_outlive_the_cloud(tmp_path: Path) -> None:
    with cloud_and_edge(tmp_path) as rig:
        plane, cloud, edge, api = rig.plane, rig.cloud, rig.edge, rig.api
        for name in ("a", "b"):
            plane.kubectl("apply", "-f", "-", input_text=pod_manifest(name))
        wait_for(lambda: pod_names(api) == {"a", "b"}, "pods a and b at the edge")
        listed = api.list_namespaced_pod("default")
        start_rv = listed.metadata.resource_version
        assert [p.spec.node_name for p in listed.items] == [NODE, NODE]

        plane.kubectl("delete", "pod", "a", "--grace-period=0", "--force")  # no kubelet to finish a graceful one
        wait_for(lambda: pod_names(api) == {"b"}, "pod a gone at the edge")
        seen = watch_events(api, start_rv)
        assert [(t, n) for t, n, _ in seen] == [("DELETED", "a")]
        last_rv = seen[-1][2]

        edge.stop()  # the cloud keeps changing while the edge is down
        plane.kubectl("apply", "-f", "-", input_text=pod_manifest("c"))
        edge.start()
        edge.wait_log('"connected to cloudcore"', count=2, timeout=60)
        wait_for(lambda: pod_names(api) == {"b", "c"}, "pod c at the edge after the restart")
        assert [(t, n) for t, n, _ in watch_events(api, last_rv)] == [("ADDED", "c")]
        # the log outlived the process: from the first list, the delete is still there
        assert [(t, n) for t, n, _ in watch_events(api, start_rv)] == [("DELETED", "a"), ("ADDED", "c")]

        disconnects = edge.log_count('"disconnected from cloudcore"')
        cloud.stop()
        edge.wait_log('"disconnected from cloudcore"', count=disconnects + 1)
        assert pod_names(api) == {"b", "c"}  # served from SQLite without the cloud
        assert [(t, n) for t, n, _ in watch_events(api, last_rv, 1)] == [("ADDED", "c")]
        with pytest.raises(ApiException) as refused:
            api.delete_namespaced_pod("b", "default", _request_timeout=5)
        assert refused.value.status == 503 and "the cloud is unreachable" in str(refused.value.body)


def test_a_write_through_the_edge_reaches_the_api_server(tmp_path: Path) -> None:
    with cloud_and_edge(tmp_path) as rig:
        patched = rig.api.patch_node(NODE, {"metadata": {"labels": {"metaserver": "wrote-this"}}},
                                     _request_timeout=15)
        assert patched.metadata.labels["metaserver"] == "wrote-this"
        labels = rig.plane.kubectl("get", "node", NODE, "-o", "jsonpath={.metadata.labels.metaserver}").stdout
        assert labels == "wrote-this"
