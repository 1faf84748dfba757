"""The sans-I/O pod planner, spec parsing and status: no containerd, fixed clock values."""

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
from edgecore.edged.pods.spec import PodSpec, PodSpecError, parse_pod
from edgecore.edged.pods.status import pod_status

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
