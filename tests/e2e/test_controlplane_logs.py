"""`kubectl logs` through a real `cloudcore controlplane` to a fake kubelet: pods/log is relayed like
kube-apiserver relays it (query passed through, client certificate, streaming, kube's error messages).

The fake kubelet is an aiohttp HTTPS server in a thread with its own event loop, trusting the control
plane's CA for client certificates (as a kubelet's --client-ca-file does). It serves canned lines per
container, honours tailLines/previous/timestamps/limitBytes, and with follow=true streams a line every
0.1 s (container `app`) or stays silent (other containers) until its client disconnects.
"""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from common.pki import create_ca, issue_server_cert
from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.mosquitto import free_port
from tests.fixtures.paths import require_binary

NS = "logs"
WAIT = 10.0  # bound for every wait on the fake kubelet and on kubectl's streamed output
FOLLOW_TICKS = 600  # a followed log ends by itself after 60 s at the latest
LINES = {name: [f"{name} line {i}" for i in range(1, 6)] for name in ("setup", "app", "sidecar")}


@dataclass(frozen=True)
class Seen:
    """One request the fake kubelet answered."""

    path: str
    query: dict[str, str]
    client_cn: str | None


class FakeKubelet:
    """`/containerLogs/{ns}/{pod}/{container}` over HTTPS on 127.0.0.1, served from a background thread."""

    def __init__(self, client_ca: Path, workdir: Path) -> None:
        serving = issue_server_cert(create_ca("fake-kubelet-ca"), "fake-kubelet", ip_addresses=["127.0.0.1"])
        cert, key = workdir / "kubelet.crt", workdir / "kubelet.key"
        serving.write(cert, key)
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        self._tls.load_verify_locations(client_ca)
        self._tls.verify_mode = ssl.CERT_OPTIONAL
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.seen: queue.Queue[Seen] = queue.Queue()
        self.follows_ended: queue.Queue[str] = queue.Queue()  # container of each followed log whose client left
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="fake-kubelet", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(WAIT):
            raise RuntimeError(f"fake kubelet not serving within {WAIT} s")
        if self._failure is not None:
            raise RuntimeError("fake kubelet failed to start") from self._failure

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "fake kubelet did not stop"

    def take(self) -> Seen:
        return self.seen.get(timeout=WAIT)

    def drain(self) -> None:
        for pending in (self.seen, self.follows_ended):
            while not pending.empty():
                pending.get_nowait()

    async def _serve(self) -> None:
        self._loop, stop = asyncio.get_running_loop(), asyncio.Event()
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        # a silent followed log learns of its client leaving only by being cancelled
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        try:
            await runner.setup()
            await web.SockSite(runner, self._socket, ssl_context=self._tls).start()
            self._stop = stop
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        pod, container = request.match_info["pod"], request.match_info["container"]
        query = dict(request.query)
        transport = request.transport
        self.seen.put(Seen(request.path, query, _common_name(transport.get_extra_info("peercert") if transport
                                                             else None)))
        previous = query.get("previous") == "true"
        if previous and container == "sidecar":  # what a kubelet answers for a container that never restarted
            return web.Response(status=400, text=f'previous terminated container "{container}" in pod "{pod}" '
                                                 "not found")
        lines = [f"previous {line}" if previous else line for line in LINES[container]]
        if "tailLines" in query:
            tail = int(query["tailLines"])
            lines = lines[len(lines) - tail:] if tail else []
        if query.get("timestamps") == "true":
            lines = [f"2024-05-01T08:00:0{i}.000000000Z {line}" for i, line in enumerate(lines)]
        body = "".join(f"{line}\n" for line in lines).encode()
        if "limitBytes" in query:
            body = body[:int(query["limitBytes"])]
        if query.get("follow") != "true":
            return web.Response(body=body, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(body)
        try:
            for tick in range(1, FOLLOW_TICKS):
                await asyncio.sleep(0.1)
                if container == "app":
                    await response.write(f"follow line {tick}\n".encode())
        except ConnectionError:
            pass
        finally:
            self.follows_ended.put(container)
        return response


def _common_name(peercert: Any) -> str | None:
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    """A control plane of its own: no scheduler to bind the unscheduled pod, no nodes of other tests."""
    instance = ControlPlaneProcess(tmp_path_factory.mktemp("logs-controlplane"))
    instance.start("--no-controllers")
    yield instance
    assert instance.stop() == 0


@pytest.fixture(scope="module")
def kubelet(plane: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(plane.data_dir / "pki" / "ca.crt", tmp_path_factory.mktemp("fake-kubelet"))
    fake.start()
    yield fake
    fake.stop()


@dataclass(frozen=True)
class Cluster:
    plane: ControlPlaneProcess
    kubelet: FakeKubelet
    dead_port: int  # the kubelet port of node `edge-down`, where nothing listens


def _node(plane: ControlPlaneProcess, name: str, port: int) -> None:
    plane.kubectl("apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "Node",
                                                              "metadata": {"name": name}}))
    status = {"status": {"addresses": [{"type": "Hostname", "address": name},
                                       {"type": "InternalIP", "address": "127.0.0.1"}],
                         "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}
    plane.kubectl("patch", "node", name, "--subresource", "status", "--type", "merge", "-p", json.dumps(status))


def _pod(plane: ControlPlaneProcess, name: str, node: str | None, containers: list[str],
         init: list[str] | None = None) -> None:
    spec: dict[str, Any] = {"containers": [{"name": c, "image": "busybox"} for c in containers]}
    if init:
        spec["initContainers"] = [{"name": c, "image": "busybox"} for c in init]
    if node:
        spec["nodeName"] = node
    plane.kubectl("apply", "-n", NS, "-f", "-", input_text=json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))


@pytest.fixture(scope="module")
def cluster(plane: ControlPlaneProcess, kubelet: FakeKubelet) -> Cluster:
    plane.kubectl("create", "namespace", NS)
    dead_port = free_port()
    _node(plane, "edge-a", kubelet.port)
    _node(plane, "edge-down", dead_port)
    _pod(plane, "web", "edge-a", ["app"])
    _pod(plane, "multi", "edge-a", ["app", "sidecar"], init=["setup"])
    _pod(plane, "pending", None, ["app"])
    _pod(plane, "down", "edge-down", ["app"])
    _pod(plane, "ghost", "no-such-node", ["app"])
    return Cluster(plane, kubelet, dead_port)


@pytest.fixture(autouse=True)
def _fresh_records(cluster: Cluster) -> None:
    cluster.kubelet.drain()


def _logs(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.plane.kubectl("logs", "-n", NS, *args, check=check, timeout=30)


def _text(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def test_logs_are_relayed_with_the_control_planes_client_certificate(cluster: Cluster) -> None:
    assert _logs(cluster, "web").stdout == _text(LINES["app"])
    seen = cluster.kubelet.take()
    assert seen == Seen(f"/containerLogs/{NS}/web/app", {}, "kube-apiserver-kubelet-client")


def test_container_flag_picks_the_container(cluster: Cluster) -> None:
    assert _logs(cluster, "multi", "-c", "sidecar").stdout == _text(LINES["sidecar"])
    assert cluster.kubelet.take().path == f"/containerLogs/{NS}/multi/sidecar"
    assert _logs(cluster, "multi", "-c", "setup").stdout == _text(LINES["setup"])  # init containers too
    assert cluster.kubelet.take().path == f"/containerLogs/{NS}/multi/setup"


def test_tail_previous_and_timestamps_reach_the_kubelet(cluster: Cluster) -> None:
    tail = _logs(cluster, "web", "--tail=2").stdout
    assert tail == _text(LINES["app"][-2:]) and len(tail.splitlines()) == 2
    assert cluster.kubelet.take().query == {"tailLines": "2"}
    assert _logs(cluster, "web", "--previous").stdout == _text(f"previous {line}" for line in LINES["app"])
    assert cluster.kubelet.take().query == {"previous": "true"}
    stamped = _logs(cluster, "web", "--timestamps").stdout.splitlines()
    assert stamped[0] == "2024-05-01T08:00:00.000000000Z app line 1" and len(stamped) == 5
    assert cluster.kubelet.take().query == {"timestamps": "true"}


def test_since_and_limit_bytes_reach_the_kubelet(cluster: Cluster) -> None:
    assert _logs(cluster, "web", "--since=1h", "--limit-bytes=13").stdout == _text(LINES["app"])[:13]
    assert cluster.kubelet.take().query == {"sinceSeconds": "3600", "limitBytes": "13"}
    _logs(cluster, "web", "--since-time=2024-05-01T10:00:00+02:00")
    assert cluster.kubelet.take().query == {"sinceTime": "2024-05-01T08:00:00Z"}  # in UTC, as kube sends it


def _follow(cluster: Cluster, *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """`kubectl logs -f`, with its stdout lines arriving on a queue (read with a timeout)."""
    proc = subprocess.Popen([require_binary("kubectl"), "--kubeconfig", str(cluster.plane.kubeconfig), "logs",
                             "-f", "-n", NS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, name="kubectl-logs-f", daemon=True).start()
    return proc, lines


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=WAIT)


def test_follow_streams_lines_as_they_come_and_ends_with_the_client(cluster: Cluster) -> None:
    proc, lines = _follow(cluster, "web")
    try:
        got = [lines.get(timeout=WAIT) for _ in range(len(LINES["app"]) + 3)]
    finally:
        _stop(proc)
    assert got == [*LINES["app"], "follow line 1", "follow line 2", "follow line 3"]
    assert cluster.kubelet.take().query == {"follow": "true"}
    assert cluster.kubelet.follows_ended.get(timeout=WAIT) == "app"


def test_follow_of_a_silent_log_ends_when_the_client_leaves(cluster: Cluster) -> None:
    """Nothing is written to notice the disconnect by: the control plane must see it on its own."""
    proc, lines = _follow(cluster, "multi", "-c", "sidecar")
    try:
        got = [lines.get(timeout=WAIT) for _ in LINES["sidecar"]]
    finally:
        _stop(proc)
    assert got == LINES["sidecar"]
    assert cluster.kubelet.follows_ended.get(timeout=WAIT) == "sidecar"


def test_response_is_chunked_plain_text(cluster: Cluster) -> None:
    pki = cluster.plane.data_dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    with urllib.request.urlopen(f"{cluster.plane.url}/api/v1/namespaces/{NS}/pods/web/log", context=context,
                                timeout=WAIT) as response:
        assert response.headers["Content-Type"] == "text/plain"
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.read().decode() == _text(LINES["app"])


def test_container_must_be_named_and_valid(cluster: Cluster) -> None:
    raw = cluster.plane.kubectl("get", "--raw", f"/api/v1/namespaces/{NS}/pods/multi/log", check=False)
    assert raw.returncode != 0
    assert ("Error from server (BadRequest): a container name must be specified for pod multi, choose one of: "
            "[setup app sidecar]") in raw.stderr
    raw = cluster.plane.kubectl("get", "--raw", f"/api/v1/namespaces/{NS}/pods/multi/log?container=nope",
                                check=False)
    assert raw.returncode != 0
    assert "Error from server (BadRequest): container nope is not valid for pod multi" in raw.stderr


def test_invalid_options_are_refused(cluster: Cluster) -> None:
    raw = cluster.plane.kubectl("get", "--raw", f"/api/v1/namespaces/{NS}/pods/web/log?tailLines=-1", check=False)
    assert raw.returncode != 0
    assert ('PodLogOptions "web" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0'
            in raw.stderr)


def test_unscheduled_pod(cluster: Cluster) -> None:
    result = _logs(cluster, "pending", check=False)
    assert result.returncode != 0
    assert "Error from server (BadRequest): pod pending does not have a host assigned" in result.stderr


def test_missing_node(cluster: Cluster) -> None:
    result = _logs(cluster, "ghost", check=False)
    assert result.returncode != 0
    assert 'Error from server (NotFound): nodes "no-such-node" not found' in result.stderr


def test_unreachable_kubelet_names_the_url_and_the_error(cluster: Cluster) -> None:
    result = _logs(cluster, "down", check=False)
    assert result.returncode != 0
    port = cluster.dead_port
    assert (f'Error from server: Get "https://127.0.0.1:{port}/containerLogs/{NS}/down/app": dial tcp '
            f"127.0.0.1:{port}: connect: connection refused") in result.stderr


def test_kubelet_refusal_is_passed_through(cluster: Cluster) -> None:
    result = _logs(cluster, "multi", "-c", "sidecar", "--previous", check=False)
    assert result.returncode != 0
    assert ('Error from server (BadRequest): previous terminated container "sidecar" in pod "multi" not found'
            in result.stderr)
    assert cluster.kubelet.take().query == {"previous": "true"}


def test_discovery_lists_pods_log(cluster: Cluster) -> None:
    resources = json.loads(cluster.plane.kubectl("get", "--raw", "/api/v1").stdout)["resources"]
    log = next(r for r in resources if r["name"] == "pods/log")
    assert log["verbs"] == ["get"] and log["kind"] == "Pod" and log["namespaced"] is True
    names = [line.split()[0] for line in cluster.plane.kubectl("api-resources", "--no-headers").stdout.splitlines()]
    assert "pods" in names and not any("/" in name for name in names)
