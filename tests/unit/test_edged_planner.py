"""The sans-I/O pod planner, spec parsing and status (init containers, probe health, QoS): no containerd, fixed
clock values."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edgecore.edged.pods.planner import (
    KillSandbox,
    Observed,
    ObservedContainer,
    ObservedSandbox,
    RemoveContainer,
    RunSandbox,
    RunState,
    StartContainer,
    StopContainer,
    Waiting,
    backoff_delay,
    plan,
)
from edgecore.edged.pods.probes import Health
from edgecore.edged.pods.spec import PodSpec, PodSpecError, parse_pod
from edgecore.edged.pods.status import pod_status, qos_class

NOW = 1_000_000.0


def pod(policy: str = "Always", **spec: Any) -> PodSpec:
    return parse_pod({
        "metadata": {"uid": "u1", "name": "web", "namespace": "ns", "labels": {"app": "web"}},
        "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 7, "nodeName": "edge-1",
                 "containers": [{"name": "app", "image": "docker.io/local/busybox:1.0", "command": ["sh"],
                                 "args": ["-c", "sleep 1"], "env": [{"name": "A", "value": "1"},
                                                                    {"name": "B", "valueFrom": {}}],
                                 "workingDir": "/tmp", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
                 **spec},
    })


SANDBOX = ObservedSandbox(id="sb", ready=True, ip="10.88.0.5")


def container(state: RunState = RunState.RUNNING, *, attempt: int = 0, exit_code: int = 0, finished: float = 0.0,
              cid: str = "c0", name: str = "app", sandbox: str = "sb") -> ObservedContainer:
    return ObservedContainer(id=cid, name=name, sandbox_id=sandbox, attempt=attempt, state=state,
                             exit_code=exit_code, started_at=NOW - 100, finished_at=finished)


def test_parse_pod_reads_what_edged_runs() -> None:
    spec = pod()
    assert (spec.uid, spec.key, spec.node_name, spec.grace_seconds, spec.restart_policy) == (
        "u1", "ns/web", "edge-1", 7, "Always")
    app = spec.containers[0]
    assert app.env == (("A", "1"),)  # literal values only; valueFrom entries are resolved at container start
    assert (app.command, app.args, app.working_dir, app.ports[0].host_port) == (("sh",), ("-c", "sleep 1"), "/tmp",
                                                                                8080)
    assert parse_pod({"metadata": {"uid": "u", "name": "n"}, "spec": {"containers": [{"name": "a", "image": "i"}]}}
                     ).grace_seconds == 30


@pytest.mark.parametrize("bad", [
    {"metadata": {"name": "n"}, "spec": {"containers": [{"name": "a", "image": "i"}]}},
    {"metadata": {"uid": "u", "name": "n"}, "spec": {"containers": []}},
    {"metadata": {"uid": "u", "name": "n"}, "spec": {"containers": [{"name": "a"}]}},
    {"metadata": {"uid": "u", "name": "n"}, "spec": {"restartPolicy": "Sometimes",
                                                      "containers": [{"name": "a", "image": "i"}]}},
    "not a pod",
])
def test_parse_pod_refuses_what_cannot_run(bad: object) -> None:
    with pytest.raises(PodSpecError):
        parse_pod(bad)


def test_a_new_pod_gets_a_sandbox_then_its_containers() -> None:
    assert plan(pod(), Observed(), NOW).actions == [RunSandbox(0), StartContainer("app", 0)]


def test_a_running_pod_needs_nothing_so_adoption_restarts_nothing() -> None:
    result = plan(pod(), Observed(sandboxes=(SANDBOX,), containers=(container(),)), NOW)
    assert (result.actions, result.waiting, result.finished) == ([], {}, False)


def test_a_lost_sandbox_is_replaced_and_its_containers_count_as_restarted() -> None:
    observed = Observed(sandboxes=(ObservedSandbox(id="old", ready=False, attempt=2),),
                        containers=(container(RunState.EXITED, attempt=4, sandbox="old"),))
    assert plan(pod(), observed, NOW).actions == [KillSandbox("old"), RunSandbox(3), StartContainer("app", 5)]


def test_a_container_created_but_never_started_is_replaced() -> None:
    observed = Observed(sandboxes=(SANDBOX,), containers=(container(RunState.CREATED, attempt=1),))
    assert plan(pod(), observed, NOW).actions == [RemoveContainer("c0"), StartContainer("app", 1)]


@pytest.mark.parametrize(("policy", "exit_code", "restarts"), [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False), ("OnFailure", 2, True),
    ("Never", 0, False), ("Never", 1, False),
])
def test_restart_policy(policy: str, exit_code: int, restarts: bool) -> None:
    exited = container(RunState.EXITED, exit_code=exit_code, finished=NOW - 3600)
    result = plan(pod(policy), Observed(sandboxes=(SANDBOX,), containers=(exited,)), NOW)
    assert result.actions == ([StartContainer("app", 1)] if restarts else [])


def test_backoff_doubles_from_10s_to_5min() -> None:
    assert [backoff_delay(n) for n in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert backoff_delay(1000) == 300


def test_a_crashing_container_waits_out_its_backoff() -> None:
    exited = container(RunState.EXITED, attempt=2, exit_code=1, finished=NOW - 5)  # next is attempt 3: 40 s
    observed = Observed(sandboxes=(SANDBOX,), containers=(exited,))
    early = plan(pod(), observed, NOW)
    assert early.actions == []
    assert early.waiting["app"].reason == "CrashLoopBackOff"
    assert early.wake_at == NOW + 35
    assert plan(pod(), observed, NOW + 35).actions == [StartContainer("app", 3)]


def test_older_exited_instances_are_removed_the_latest_kept() -> None:
    observed = Observed(sandboxes=(SANDBOX,), containers=(
        container(RunState.EXITED, attempt=0, cid="old", exit_code=1, finished=NOW - 50),
        container(RunState.RUNNING, attempt=1, cid="new")))
    assert plan(pod(), observed, NOW).actions == [RemoveContainer("old")]


def test_containers_no_longer_in_the_spec_go() -> None:
    observed = Observed(sandboxes=(SANDBOX,), containers=(container(), container(cid="x", name="gone")))
    assert plan(pod(), observed, NOW).actions == [StopContainer("x", 7), RemoveContainer("x")]


def test_a_completed_pod_is_not_run_again() -> None:
    done = Observed(sandboxes=(ObservedSandbox(id="sb", ready=False),),
                    containers=(container(RunState.EXITED, exit_code=0, finished=NOW - 1),))
    assert plan(pod("OnFailure"), done, NOW).actions == []


def test_deletion_stops_with_the_grace_period_then_removes_the_sandbox() -> None:
    deleting = dataclasses.replace(pod(), deleting=True)
    observed = Observed(sandboxes=(SANDBOX,), containers=(container(),))
    assert plan(deleting, observed, NOW).actions == [StopContainer("c0", 7), KillSandbox("sb")]
    assert plan(deleting, Observed(), NOW).finished
    assert plan(None, observed, NOW).actions == [StopContainer("c0", 0), KillSandbox("sb")]


def _status(policy: str, *containers: ObservedContainer, waiting: dict[str, Waiting] | None = None,
            sandbox: ObservedSandbox = SANDBOX) -> dict[str, Any]:
    observed = Observed(sandboxes=(sandbox,), containers=containers)
    return pod_status(pod(policy), observed, waiting or {}, "192.0.2.2", NOW)


def test_status_of_a_running_pod() -> None:
    status = _status("Always", container(attempt=2))
    assert status["phase"] == "Running"
    assert (status["podIP"], status["hostIP"]) == ("10.88.0.5", "192.0.2.2")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    (app,) = status["containerStatuses"]
    assert (app["ready"], app["restartCount"], app["containerID"]) == (True, 2, "containerd://c0")
    assert "running" in app["state"]


@pytest.mark.parametrize(("policy", "exit_code", "phase"), [
    ("Never", 0, "Succeeded"), ("Never", 3, "Failed"), ("OnFailure", 0, "Succeeded"),
])
def test_status_of_a_finished_pod(policy: str, exit_code: int, phase: str) -> None:
    status = _status(policy, container(RunState.EXITED, exit_code=exit_code, finished=NOW))
    assert status["phase"] == phase
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == exit_code
    assert terminated["reason"] == ("Completed" if exit_code == 0 else "Error")


def test_status_in_crash_loop_keeps_the_last_exit() -> None:
    status = _status("Always", container(RunState.EXITED, attempt=1, exit_code=2, finished=NOW),
                     waiting={"app": Waiting(reason="CrashLoopBackOff")})
    app = status["containerStatuses"][0]
    assert status["phase"] == "Running"  # restarting counts as stopped, and Always keeps it Running
    assert app["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert app["lastState"]["terminated"]["exitCode"] == 2


def test_status_of_a_missing_image() -> None:
    status = _status("Always", waiting={"app": Waiting(reason="ErrImagePull", message="not found")})
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"


def test_host_network_pod_ip_is_the_host_ip() -> None:
    spec = dataclasses.replace(pod(), host_network=True)
    status = pod_status(spec, Observed(sandboxes=(ObservedSandbox(id="sb", ready=True),)), {}, "192.0.2.2", NOW)
    assert status["podIP"] == "192.0.2.2"


# ---- probes: a failed liveness/startup probe stops the instance; status follows the probes -------------


def test_an_unhealthy_container_is_stopped_then_restarted_per_policy() -> None:
    observed = Observed(sandboxes=(SANDBOX,), containers=(container(),))
    assert plan(pod(), observed, NOW, {"c0": "failed liveness probe"}).actions == [StopContainer("c0", 7)]
    assert plan(pod(), observed, NOW, {"other": "x"}).actions == []
    killed = Observed(sandboxes=(SANDBOX,), containers=(container(RunState.EXITED, exit_code=137, finished=NOW - 10),))
    assert plan(pod(), killed, NOW, {"c0": "failed liveness probe"}).actions == [StartContainer("app", 1)]
    assert plan(pod("Never"), killed, NOW).actions == []


def test_status_follows_the_probes_health_and_carries_the_kill_message() -> None:
    observed = Observed(sandboxes=(SANDBOX,), containers=(
        container(RunState.EXITED, attempt=0, cid="old", exit_code=137, finished=NOW - 5),
        container(attempt=1, cid="new")))
    status = pod_status(pod(), observed, {}, "192.0.2.2", NOW, health={"new": Health(started=True, ready=False)},
                        messages={"old": "Container app failed liveness probe: boom"})
    (app,) = status["containerStatuses"]
    assert (app["started"], app["ready"], app["restartCount"]) == (True, False, 1)
    assert app["lastState"]["terminated"]["message"] == "Container app failed liveness probe: boom"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == conditions["ContainersReady"]["status"] == "False"
    assert conditions["Ready"]["message"] == "containers with unready status: [app]"
    assert status["phase"] == "Running"


def test_the_runtime_reason_passes_through_so_oom_kills_show() -> None:
    oom = dataclasses.replace(container(RunState.EXITED, exit_code=137, finished=NOW), reason="OOMKilled")
    assert _status("Never", oom)["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    crash = _status("Always", oom, waiting={"app": Waiting(reason="CrashLoopBackOff")})
    assert crash["containerStatuses"][0]["lastState"]["terminated"]["reason"] == "OOMKilled"


# ---- init containers -----------------------------------------------------------------------------------


def init_pod(policy: str = "Always") -> PodSpec:
    inits = [{"name": n, "image": "docker.io/local/busybox:1.0", "command": ["true"]} for n in ("one", "two")]
    return pod(policy, initContainers=inits)


def test_init_containers_run_one_by_one_before_the_app() -> None:
    spec = init_pod()
    assert plan(spec, Observed(), NOW).actions == [RunSandbox(0), StartContainer("one", 0)]
    first = container(RunState.RUNNING, cid="i1", name="one")
    assert plan(spec, Observed(sandboxes=(SANDBOX,), containers=(first,)), NOW).actions == []
    done = container(RunState.EXITED, cid="i1", name="one", finished=NOW - 1)
    assert plan(spec, Observed(sandboxes=(SANDBOX,), containers=(done,)), NOW).actions == [StartContainer("two", 0)]
    both = (done, container(RunState.EXITED, cid="i2", name="two", finished=NOW - 1))
    assert plan(spec, Observed(sandboxes=(SANDBOX,), containers=both), NOW).actions == [StartContainer("app", 0)]
    # Completed init containers are not run again (a restarted edgecore sees them in the runtime).
    assert plan(spec, Observed(sandboxes=(SANDBOX,), containers=(*both, container())), NOW).actions == []


def test_a_failed_init_container_is_restarted_with_backoff_and_blocks_the_app() -> None:
    failed = container(RunState.EXITED, cid="i1", name="one", exit_code=1, finished=NOW - 1)
    early = plan(init_pod("OnFailure"), Observed(sandboxes=(SANDBOX,), containers=(failed,)), NOW)
    assert early.actions == [] and early.waiting["one"].reason == "CrashLoopBackOff"
    late = plan(init_pod("Always"), Observed(sandboxes=(SANDBOX,), containers=(failed,)), NOW + 60)
    assert late.actions == [StartContainer("one", 1)]


def test_a_failed_init_container_under_never_fails_the_pod() -> None:
    failed = container(RunState.EXITED, cid="i1", name="one", exit_code=1, finished=NOW - 1)
    observed = Observed(sandboxes=(SANDBOX,), containers=(failed,))
    assert plan(init_pod("Never"), observed, NOW + 3600).actions == []
    stopped = dataclasses.replace(observed, sandboxes=(ObservedSandbox(id="sb", ready=False),))
    assert plan(init_pod("Never"), stopped, NOW).actions == []  # not run again in a new sandbox either
    status = pod_status(init_pod("Never"), observed, {}, "192.0.2.2", NOW)
    assert status["phase"] == "Failed"
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_status_while_initializing() -> None:
    running = container(RunState.RUNNING, cid="i1", name="one")
    status = pod_status(init_pod(), Observed(sandboxes=(SANDBOX,), containers=(running,)), {}, "192.0.2.2", NOW)
    assert status["phase"] == "Pending"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Initialized"]["status"] == "False"
    assert conditions["Initialized"]["message"] == "containers with incomplete status: [one two]"
    one, two = status["initContainerStatuses"]
    assert "running" in one["state"] and (one["ready"], one["started"]) == (False, True)
    assert two["state"]["waiting"]["reason"] == "PodInitializing"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"


def test_status_once_initialized() -> None:
    inits = (container(RunState.EXITED, cid="i1", name="one", finished=NOW - 2),
             container(RunState.EXITED, cid="i2", name="two", finished=NOW - 1))
    status = pod_status(init_pod(), Observed(sandboxes=(SANDBOX,), containers=(*inits, container())), {},
                        "192.0.2.2", NOW)
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    assert [(s["ready"], s["state"]["terminated"]["reason"]) for s in status["initContainerStatuses"]] == [
        (True, "Completed"), (True, "Completed")]


# ---- QoS class -----------------------------------------------------------------------------------------


def _resources(limits: dict[str, str] | None = None, requests: dict[str, str] | None = None) -> dict[str, Any]:
    return {"limits": limits or {}, "requests": requests or {}}


@pytest.mark.parametrize(("app", "init", "qos"), [
    ({}, None, "BestEffort"),
    (_resources({"cpu": "500m", "memory": "64Mi"}), None, "Guaranteed"),
    (_resources({"cpu": "0.5", "memory": "64Mi"}, {"cpu": "500m", "memory": "67108864"}), None, "Guaranteed"),
    (_resources({"cpu": "500m", "memory": "64Mi"}, {"cpu": "100m"}), None, "Burstable"),
    (_resources({"memory": "64Mi"}), None, "Burstable"),
    (_resources(requests={"cpu": "100m"}), None, "Burstable"),
    (_resources({"cpu": "1", "memory": "1Gi"}), {}, "Burstable"),  # the init container has no limits
    (_resources({"cpu": "1", "memory": "1Gi"}), _resources({"cpu": "1", "memory": "1Gi"}), "Guaranteed"),
    ({}, _resources(requests={"memory": "1Mi"}), "Burstable"),
    (_resources(requests={"cpu": "0"}), None, "BestEffort"),
    (_resources({"cpu": "lots"}), None, "BestEffort"),
])
def test_qos_class_as_kubernetes_computes_it(app: dict[str, Any], init: dict[str, Any] | None, qos: str) -> None:
    containers = [{"name": "app", "image": "i", "resources": app}]
    inits = [] if init is None else [{"name": "init", "image": "i", "resources": init}]
    spec = parse_pod({"metadata": {"uid": "u", "name": "n"}, "spec": {"containers": containers,
                                                                       "initContainers": inits}})
    assert qos_class(spec) == qos
    assert pod_status(spec, Observed(), {}, "", NOW)["qosClass"] == qos
