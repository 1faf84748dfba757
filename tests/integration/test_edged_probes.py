"""Probes, init containers, QoS and OOM kills of Edged's pod workers against the real containerd fixture.

Reuses test_edged_pods' Kit (pods labelled per test, removed by label in the fixture, bounded waits).
Outcomes are asserted on both sides: what the runtime holds (ListContainers / ContainerStatus) and the
pod status the worker reports. Several workers run with a long resync, so a status change that shows up
quickly can only have come from a probe waking the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from common.pki import create_ca, issue_server_cert
from edgecore.cri import CRIClient
from edgecore.cri.types import Container, ContainerFilter, ContainerState
from edgecore.edged.pods.configs import RuntimeOptions
from edgecore.edged.pods.spec import LABEL_CONTAINER_NAME, LABEL_POD_UID, PodSpec, parse_pod
from edgecore.edged.pods.status import JSON
from edgecore.edged.pods.worker import PodWorker
from tests.integration.test_edged_pods import BOUND, HOST_IP, Kit, running, running_task
from tests.integration.test_edged_pods import cri as cri
from tests.integration.test_edged_pods import kit as kit

pytestmark = pytest.mark.root

RESTART_BOUND = 60.0  # a liveness kill, its grace period and the 10 s back-off on a loaded machine
SLOW_RESYNC = 30.0  # longer than any wait below that expects a probe's verdict


@pytest.fixture
def pkit(kit: Kit, tmp_path: Path) -> Kit:
    kit.options = RuntimeOptions(log_root=tmp_path / "pods", root_dir=tmp_path / "kubelet")
    return kit


def make_pod(kit: Kit, name: str, command: list[str], *, host_network: bool = False, policy: str = "Always",
             **container: Any) -> dict[str, Any]:
    pod = kit.pod(name, command, host_network=host_network, policy=policy)
    pod["spec"]["containers"][0].update(container)
    return pod


def worker(kit: Kit, spec: PodSpec, resync: float) -> PodWorker:
    async def on_status(_: PodSpec, status: JSON) -> None:
        kit.statuses.append(status)

    return PodWorker(kit.cri, spec, host_ip=HOST_IP, on_status=on_status, options=kit.options, resync=resync,
                     pull_timeout=10)


def app_status(status: JSON, name: str = "app") -> JSON:
    return next(c for c in status["containerStatuses"] if c["name"] == name)


def conditions(status: JSON) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


async def until(kit: Kit, check: Callable[[JSON], bool], bound: float = BOUND) -> JSON:
    """The latest reported status that passes `check`, waiting at most `bound` seconds."""
    async with asyncio.timeout(bound):
        while True:
            found = next((s for s in reversed(kit.statuses) if check(s)), None)
            if found is not None:
                return found
            await asyncio.sleep(0.05)


async def containers(cri: CRIClient, uid: str) -> list[Container]:
    return await cri.list_containers(ContainerFilter(label_selector={LABEL_POD_UID: uid}))


async def running_id(cri: CRIClient, uid: str, name: str = "app") -> str:
    """The id of the running instance of container `name`, once there is one."""
    async with asyncio.timeout(BOUND):
        while True:
            found = [c.id for c in await containers(cri, uid)
                     if c.labels[LABEL_CONTAINER_NAME] == name and c.state == ContainerState.CONTAINER_RUNNING]
            if found:
                return found[0]
            await asyncio.sleep(0.1)


# ---- readiness, liveness, startup ------------------------------------------------------------------------


async def test_exec_readiness_follows_the_check_and_wakes_the_worker(pkit: Kit, cri: CRIClient) -> None:
    probe = {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1}
    spec = parse_pod(make_pod(pkit, "ready", ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 3600"],
                              readinessProbe=probe))
    async with running_task(worker(pkit, spec, SLOW_RESYNC).run()):
        unready = await until(pkit, lambda s: "running" in app_status(s)["state"])
        assert (app_status(unready)["ready"], app_status(unready)["started"]) == (False, True)
        assert conditions(unready)["Ready"] == "False"
        ready = await until(pkit, running, bound=15)  # a probe's wake-up, not the 30 s resync
        assert conditions(ready)["ContainersReady"] == "True"

        container_id = await running_id(cri, spec.uid)
        await cri.exec_sync(container_id, ["rm", "/tmp/ready"])
        count = len(pkit.statuses)
        again = await until(pkit, lambda s: pkit.statuses.index(s) >= count and not app_status(s)["ready"], bound=15)
        assert conditions(again)["Ready"] == "False"
        assert "running" in app_status(again)["state"] and app_status(again)["restartCount"] == 0
    (container,) = await containers(cri, spec.uid)
    assert container.state == ContainerState.CONTAINER_RUNNING  # readiness never restarts


async def test_failed_liveness_kills_and_restarts_the_container(pkit: Kit, cri: CRIClient) -> None:
    probe = {"exec": {"command": ["test", "-f", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}
    spec = parse_pod(make_pod(pkit, "live", ["sh", "-c", "touch /tmp/healthy; exec sleep 3600"],
                              livenessProbe=probe))
    async with running_task(worker(pkit, spec, 1.0).run()):
        await until(pkit, running)
        first = await running_id(cri, spec.uid)
        await cri.exec_sync(first, ["rm", "/tmp/healthy"])
        restarted = await until(pkit, lambda s: app_status(s)["restartCount"] == 1 and running(s),
                                bound=RESTART_BOUND)
    app = app_status(restarted)
    terminated = app["lastState"]["terminated"]
    assert terminated["containerID"] == f"containerd://{first}"
    assert terminated["exitCode"] == 137  # sleep as PID 1 ignores SIGTERM: killed after the grace period
    assert terminated["message"].startswith("Container app failed liveness probe")
    by_id = {c.id: c for c in await containers(cri, spec.uid)}
    assert by_id[first].state == ContainerState.CONTAINER_EXITED
    assert app["containerID"] == f"containerd://{next(i for i, c in by_id.items() if i != first)}"
    new = (await cri.container_status(app["containerID"].removeprefix("containerd://")))
    assert new.state == ContainerState.CONTAINER_RUNNING and new.metadata is not None and new.metadata.attempt == 1


async def test_startup_probe_gates_the_others_until_it_succeeds(pkit: Kit, cri: CRIClient) -> None:
    spec = parse_pod(make_pod(
        pkit, "startup", ["sh", "-c", "sleep 3; touch /tmp/up; exec sleep 3600"],
        startupProbe={"exec": {"command": ["test", "-f", "/tmp/up"]}, "periodSeconds": 1, "failureThreshold": 30},
        # Would kill the container within 2 s if it ran before the startup probe succeeded.
        livenessProbe={"exec": {"command": ["test", "-f", "/tmp/up"]}, "periodSeconds": 1, "failureThreshold": 1},
        readinessProbe={"exec": {"command": ["true"]}, "periodSeconds": 1}))
    async with running_task(worker(pkit, spec, SLOW_RESYNC).run()):
        early = await until(pkit, lambda s: "running" in app_status(s)["state"])
        assert (app_status(early)["started"], app_status(early)["ready"]) == (False, False)
        ready = await until(pkit, running, bound=20)
    assert app_status(ready)["started"] and app_status(ready)["restartCount"] == 0
    (container,) = await containers(cri, spec.uid)
    assert container.state == ContainerState.CONTAINER_RUNNING


async def test_http_and_tcp_probes_against_the_pod_ip(pkit: Kit, cri: CRIClient) -> None:
    server = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"
    pod = make_pod(pkit, "http", ["sh", "-c", server], ports=[{"name": "http", "containerPort": 8080}],
                   readinessProbe={"httpGet": {"port": "http", "path": "/index.html"}, "periodSeconds": 1},
                   livenessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1})
    # A second container in the same network namespace whose readiness asks the server for a missing page.
    pod["spec"]["containers"].append({"name": "side", "image": pod["spec"]["containers"][0]["image"],
                                      "command": ["sleep", "3600"],
                                      "readinessProbe": {"httpGet": {"port": 8080, "path": "/missing"},
                                                         "periodSeconds": 1}})
    spec = parse_pod(pod)
    async with running_task(worker(pkit, spec, SLOW_RESYNC).run()):
        status = await until(pkit, lambda s: app_status(s)["ready"], bound=20)
        await asyncio.sleep(3)  # several failed checks of `side`, and of nothing else
        status = pkit.statuses[-1]
    assert app_status(status)["ready"] and not app_status(status, "side")["ready"]
    assert app_status(status)["restartCount"] == 0  # the tcpSocket liveness probe passes
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["message"]) == ("False", "containers with unready status: [side]")
    assert {c.state for c in await containers(cri, spec.uid)} == {ContainerState.CONTAINER_RUNNING}


@contextlib.asynccontextmanager
async def https_server(tmp_path: Path, seen: list[bytes]) -> AsyncIterator[int]:
    """An HTTPS server on the host IP answering 200 with a self-signed certificate; its port."""
    pair = issue_server_cert(create_ca(), ip_addresses=[HOST_IP])
    pair.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, HOST_IP, 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_https_probe_of_a_host_network_pod_goes_to_the_host_ip_with_headers(
    pkit: Kit, tmp_path: Path
) -> None:
    seen: list[bytes] = []
    async with https_server(tmp_path, seen) as port:
        probe = {"httpGet": {"port": port, "path": "/healthz", "scheme": "HTTPS",
                             "httpHeaders": [{"name": "X-Probe", "value": "edge"}]}, "periodSeconds": 1}
        spec = parse_pod(make_pod(pkit, "https", ["sleep", "3600"], host_network=True, readinessProbe=probe))
        async with running_task(worker(pkit, spec, SLOW_RESYNC).run()):
            await until(pkit, running, bound=20)
    request = seen[0].decode()
    assert request.startswith("GET /healthz HTTP/1.1\r\n")
    assert f"Host: {HOST_IP}:{port}\r\n" in request and "X-Probe: edge\r\n" in request
    assert "User-Agent: kube-probe/" in request


async def test_a_probe_that_cannot_run_is_a_clear_waiting_reason_and_other_pods_run(
    pkit: Kit, cri: CRIClient
) -> None:
    bad = parse_pod(make_pod(pkit, "badprobe", ["sleep", "3600"], host_network=True,
                             livenessProbe={"httpGet": {"port": "web"}}))
    good = parse_pod(make_pod(pkit, "goodprobe", ["sleep", "3600"], host_network=True,
                              readinessProbe={"tcpSocket": {"port": 1}, "periodSeconds": 1}))  # nothing listens
    async with running_task(worker(pkit, bad, 0.5).run()), running_task(worker(pkit, good, 0.5).run()):
        refused = await until(pkit, lambda s: app_status(s)["state"].get("waiting", {}).get("reason")
                              == "CreateContainerConfigError")
        other = await until(pkit, lambda s: s is not refused and "running" in app_status(s)["state"])
    message = app_status(refused)["state"]["waiting"]["message"]
    assert message == "liveness probe of container app: port 'web' is not a port name container app declares"
    assert refused["phase"] == "Pending"
    assert await containers(cri, bad.uid) == []
    assert not app_status(other)["ready"] and other["phase"] == "Running"


# ---- init containers --------------------------------------------------------------------------------------


def init_pod(kit: Kit, name: str, inits: list[tuple[str, str]], *, policy: str = "Always") -> dict[str, Any]:
    pod = make_pod(kit, name, ["sh", "-c", "cat /work/log; exec sleep 3600"], policy=policy, host_network=True,
                   volumeMounts=[{"name": "work", "mountPath": "/work"}])
    image = pod["spec"]["containers"][0]["image"]
    pod["spec"]["volumes"] = [{"name": "work", "emptyDir": {}}]
    pod["spec"]["initContainers"] = [{"name": n, "image": image, "command": ["sh", "-c", script],
                                      "volumeMounts": [{"name": "work", "mountPath": "/work"}]}
                                     for n, script in inits]
    return pod


async def test_init_containers_run_in_order_before_the_app_and_not_again_after_a_restart(
    pkit: Kit, cri: CRIClient
) -> None:
    spec = parse_pod(init_pod(pkit, "init", [("one", "sleep 1; echo one >> /work/log"),
                                             ("two", "echo two >> /work/log")]))
    async with running_task(worker(pkit, spec, 0.5).run()):
        status = await until(pkit, running)
    pending = next(s for s in pkit.statuses if s["phase"] == "Pending")
    assert conditions(pending)["Initialized"] == "False"
    assert app_status(pending)["state"]["waiting"]["reason"] == "PodInitializing"
    assert conditions(status)["Initialized"] == "True"
    assert [(s["name"], s["ready"], s["state"]["terminated"]["reason"]) for s in status["initContainerStatuses"]] == [
        ("one", True, "Completed"), ("two", True, "Completed")]

    by_name = {c.labels[LABEL_CONTAINER_NAME]: await cri.container_status(c.id)
               for c in await containers(cri, spec.uid)}
    assert by_name["one"].finished_at <= by_name["two"].started_at
    assert by_name["two"].finished_at <= by_name["app"].started_at
    app_id = app_status(status)["containerID"].removeprefix("containerd://")
    assert (await cri.exec_sync(app_id, ["cat", "/work/log"])).stdout == b"one\ntwo\n"

    # edgecore restarted: a new worker finds the init containers completed and runs nothing again.
    pkit.statuses.clear()
    async with running_task(worker(pkit, spec, 0.5).run()):
        adopted = await until(pkit, running)
        await asyncio.sleep(1.5)  # a few rounds
    assert {c.labels[LABEL_CONTAINER_NAME]: c.id for c in await containers(cri, spec.uid)} == {
        name: status.id for name, status in by_name.items()}
    assert [s["restartCount"] for s in adopted["initContainerStatuses"]] == [0, 0]


async def test_a_failing_init_container_is_restarted_until_it_succeeds(pkit: Kit, cri: CRIClient) -> None:
    flaky = "test -f /work/tried && echo ok >> /work/log || { touch /work/tried; exit 1; }"
    spec = parse_pod(init_pod(pkit, "initretry", [("flaky", flaky)], policy="OnFailure"))
    async with running_task(worker(pkit, spec, 0.5).run()):
        backoff = await until(pkit, lambda s: s["initContainerStatuses"][0]["state"].get("waiting", {}).get("reason")
                              == "CrashLoopBackOff")
        status = await until(pkit, running, bound=RESTART_BOUND)
    assert backoff["phase"] == "Pending"
    assert backoff["initContainerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1
    (init,) = status["initContainerStatuses"]
    assert (init["restartCount"], init["state"]["terminated"]["exitCode"]) == (1, 0)
    names = sorted(c.labels[LABEL_CONTAINER_NAME] for c in await containers(cri, spec.uid))
    assert names == ["app", "flaky"]  # the failed attempt was removed, the completed one kept


async def test_a_failed_init_container_under_never_fails_the_pod(pkit: Kit, cri: CRIClient) -> None:
    spec = parse_pod(init_pod(pkit, "initfail", [("broken", "exit 2")], policy="Never"))
    async with running_task(worker(pkit, spec, 0.5).run()):
        status = await until(pkit, lambda s: s["phase"] == "Failed")
        await asyncio.sleep(1.5)  # a few more rounds start nothing
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 2
    assert app_status(status)["state"]["waiting"]["reason"] == "PodInitializing"
    assert conditions(status)["Initialized"] == "False"
    (only,) = await containers(cri, spec.uid)
    assert only.labels[LABEL_CONTAINER_NAME] == "broken" and only.state == ContainerState.CONTAINER_EXITED


# ---- QoS and OOM -----------------------------------------------------------------------------------------


async def test_qos_class_is_reported(pkit: Kit) -> None:
    spec = parse_pod(make_pod(pkit, "qos", ["sleep", "3600"], host_network=True,
                              resources={"limits": {"cpu": "100m", "memory": "32Mi"}}))
    async with running_task(worker(pkit, spec, 0.5).run()):
        status = await until(pkit, running)
    assert status["qosClass"] == "Guaranteed"


async def test_an_oom_killed_container_says_so(pkit: Kit, cri: CRIClient) -> None:
    # dd reads into a 64 MiB buffer: far above the 8 MiB limit, so the kernel's OOM killer ends it.
    spec = parse_pod(make_pod(pkit, "oom", ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                              host_network=True, policy="Never", resources={"limits": {"memory": "8Mi"}}))
    async with running_task(worker(pkit, spec, 0.5).run()):
        status = await until(pkit, lambda s: s["phase"] == "Failed")
    terminated = app_status(status)["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    assert status["qosClass"] == "Burstable"
    (container,) = await containers(cri, spec.uid)
    runtime = await cri.container_status(container.id)
    assert (runtime.reason, runtime.exit_code) == ("OOMKilled", 137)
