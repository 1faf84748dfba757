"""The sans-I/O probe state machine, probe parsing and port resolution: no sockets, no sleeps, a given clock."""

from __future__ import annotations

from typing import Any

import pytest

from edgecore.edged.pods.probes import ContainerProbes, Health, Kind, ProbeError, check_probes, resolve_port
from edgecore.edged.pods.spec import ContainerSpec, Probe, parse_pod

T0 = 1_000_000.0  # the container started then


def app(**probes: Any) -> ContainerSpec:
    spec = parse_pod({"metadata": {"uid": "u", "name": "p"}, "spec": {"containers": [{
        "name": "app", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}], **probes}]}})
    return spec.containers[0]


def exec_probe(**timing: int) -> dict[str, Any]:
    return {"exec": {"command": ["true"]}, **timing}


def run(probes: ContainerProbes, kind: Kind, outcomes: str, start: float, period: float) -> list[bool]:
    """Record one check per character ('+' success, '-' failure), `period` apart; the changes they made."""
    return [probes.record(kind, c == "+", start + i * period, "boom") for i, c in enumerate(outcomes)]


def test_parse_probe_with_kubelet_defaults() -> None:
    probe = app(livenessProbe={"httpGet": {"port": "http", "path": "healthz", "scheme": "https",
                                           "httpHeaders": [{"name": "X-A", "value": "1"}]}}).liveness
    assert probe == Probe(handler="httpGet", port="http", path="/healthz", scheme="HTTPS", headers=(("X-A", "1"),),
                          initial_delay=0, period=10, timeout=1, success_threshold=1, failure_threshold=3)
    assert app(readinessProbe={"tcpSocket": {"port": "8080"}, "periodSeconds": 0}).readiness == Probe(
        handler="tcpSocket", port=8080, period=1)
    assert app().liveness is None and not app().probed
    assert app(startupProbe={"exec": {"command": ["true"]}, "grpc": {"port": 1}}).startup == Probe(handler="")


def test_named_ports_resolve_from_the_container_ports() -> None:
    container = app()
    assert resolve_port(Probe(handler="tcpSocket", port="http"), container) == 8080
    assert resolve_port(Probe(handler="tcpSocket", port=9000), container) == 9000
    with pytest.raises(ProbeError, match="'web' is not a port name"):
        resolve_port(Probe(handler="tcpSocket", port="web"), container)
    with pytest.raises(ProbeError, match="not a valid port"):
        resolve_port(Probe(handler="tcpSocket", port=70000), container)


@pytest.mark.parametrize(("probes", "problem"), [
    ({"livenessProbe": {"httpGet": {"port": "web"}}}, "liveness probe of container app: port 'web'"),
    ({"readinessProbe": {"grpc": {"port": 9000}}}, "readiness probe of container app: handler grpc"),
    ({"startupProbe": {"periodSeconds": 3}}, "startup probe of container app: handler missing"),
    ({"livenessProbe": {"exec": {}}}, "liveness probe of container app: exec needs a command"),
])
def test_probes_that_can_never_run_are_refused_before_the_start(probes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProbeError, match=problem):
        check_probes(app(**probes))


def test_runnable_probes_pass_the_check() -> None:
    check_probes(app(livenessProbe={"httpGet": {"port": "http"}}, readinessProbe={"tcpSocket": {"port": 1}},
                     startupProbe=exec_probe()))


def test_without_probes_a_container_is_started_and_ready_and_nothing_runs() -> None:
    probes = ContainerProbes(app(), T0)
    assert probes.health == Health(started=True, ready=True)
    assert probes.next_at() is None and probes.due(T0 + 100) == []


def test_readiness_starts_unready_waits_its_initial_delay_then_runs_every_period() -> None:
    probes = ContainerProbes(app(readinessProbe=exec_probe(initialDelaySeconds=5, periodSeconds=7)), T0)
    assert probes.health == Health(started=True, ready=False)
    assert probes.next_at() == T0 + 5
    assert probes.due(T0 + 4.9) == []
    assert probes.due(T0 + 5) == [Kind.READINESS]
    assert probes.record(Kind.READINESS, True, T0 + 5)  # successThreshold 1: ready at once
    assert probes.ready and probes.next_at() == T0 + 12


def test_thresholds_need_consecutive_results() -> None:
    probes = ContainerProbes(app(readinessProbe=exec_probe(successThreshold=2, failureThreshold=2)), T0)
    assert run(probes, Kind.READINESS, "+-++", T0, 10) == [False, False, False, True]  # the '-' broke the run
    assert probes.ready
    assert run(probes, Kind.READINESS, "-+--", T0 + 40, 10) == [False, False, False, True]
    assert not probes.ready and not probes.failed  # readiness failing never kills


def test_liveness_kills_after_failure_threshold_then_stops_probing() -> None:
    probes = ContainerProbes(app(livenessProbe=exec_probe(periodSeconds=2)), T0)
    assert probes.health == Health(started=True, ready=True)  # liveness starts as success
    assert run(probes, Kind.LIVENESS, "--+--", T0, 2) == [False] * 4 + [False]
    assert not probes.failed
    assert probes.record(Kind.LIVENESS, False, T0 + 10, "exit 1")
    assert probes.failed == "Container app failed liveness probe: exit 1"
    assert not probes.ready and probes.next_at() is None and probes.due(T0 + 1000) == []


def test_startup_gates_liveness_and_readiness_until_it_succeeds() -> None:
    probes = ContainerProbes(app(startupProbe=exec_probe(periodSeconds=1, failureThreshold=30),
                                 livenessProbe=exec_probe(periodSeconds=5),
                                 readinessProbe=exec_probe(initialDelaySeconds=2, periodSeconds=5)), T0)
    assert probes.health == Health(started=False, ready=False)
    assert probes.due(T0 + 10) == [Kind.STARTUP]
    assert not probes.record(Kind.STARTUP, False, T0 + 10)
    assert probes.record(Kind.STARTUP, True, T0 + 11)
    assert probes.health == Health(started=True, ready=False)
    assert probes.due(T0 + 11) == [Kind.LIVENESS, Kind.READINESS]  # their delays have passed: at once
    assert probes.record(Kind.READINESS, True, T0 + 11)
    assert probes.health == Health(started=True, ready=True)
    assert Kind.STARTUP not in probes.due(T0 + 100)  # startup is done for this instance


def test_startup_failure_kills_too() -> None:
    probes = ContainerProbes(app(startupProbe=exec_probe(failureThreshold=2), livenessProbe=exec_probe()), T0)
    assert run(probes, Kind.STARTUP, "--", T0, 10) == [False, True]
    assert probes.failed.startswith("Container app failed startup probe")
    assert probes.next_at() is None


def test_next_at_is_the_earliest_enabled_probe() -> None:
    probes = ContainerProbes(app(livenessProbe=exec_probe(periodSeconds=10),
                                 readinessProbe=exec_probe(periodSeconds=3)), T0)
    probes.record(Kind.LIVENESS, True, T0)
    probes.record(Kind.READINESS, True, T0)
    assert probes.next_at() == T0 + 3
    assert probes.due(T0 + 3) == [Kind.READINESS]
