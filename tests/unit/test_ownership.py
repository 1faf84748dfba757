"""Node ownership across cloudcores: the lease decisions on fake clocks, the asyncio shell on an in-memory
Lease API, and the queue's takeover of acked versions (cloudcore/cloudhub/ownership.py, nodequeue.py)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.client import V1Lease, V1ObjectMeta
from kubernetes_asyncio.client.exceptions import ApiException

from cloudcore.cloudhub.metrics import CloudHubCollector
from cloudcore.cloudhub.ownership import (
    Action,
    LeaseBook,
    LeaseRecord,
    NodeOwnership,
    instance_identity,
    lease_name,
)
from common.constants import Op
from common.message import Message
from common.reliable import NodeQueue

ME, OTHER = "host_1_aaaa", "host_2_bbbb"


def book(rand: float = 1.0) -> LeaseBook:
    return LeaseBook(ME, duration=40.0, renew_interval=12.0, rand=lambda: rand)


def held_by(holder: str, renewed_at: float | None, rv: str = "7") -> LeaseRecord:
    return LeaseRecord(holder=holder, renewed_at=renewed_at, duration=40.0, resource_version=rv)


# -- LeaseBook: acquire ----------------------------------------------------------------------------------


def test_a_node_without_a_lease_is_created() -> None:
    assert book().plan("n1", None, now_mono=0.0, now_wall=1000.0).action is Action.CREATE


def test_a_released_or_own_lease_is_taken() -> None:
    leases = book()
    assert leases.plan("n1", held_by("", 990.0), 0.0, 1000.0).action is Action.TAKE
    assert leases.plan("n1", held_by(ME, 999.0), 0.0, 1000.0).action is Action.TAKE


def test_a_live_lease_of_another_instance_refuses_with_holder_and_time_left() -> None:
    plan = book().plan("n1", held_by(OTHER, 990.0), now_mono=0.0, now_wall=1000.0)
    assert plan.action is Action.REFUSE
    assert plan.holder == OTHER
    assert plan.remaining == pytest.approx(30.0)


def test_an_expired_lease_of_another_instance_is_taken_over() -> None:
    assert book().plan("n1", held_by(OTHER, 950.0), 0.0, 1000.0).action is Action.TAKE


def test_a_holder_whose_clock_lags_loses_the_lease_after_one_observed_duration() -> None:
    """renewTime in the future (skewed clock) never expires by the wall clock; our own observation of an
    unchanged resourceVersion for a whole duration does."""
    leases = book()
    future = held_by(OTHER, 5000.0)
    assert leases.plan("n1", future, now_mono=100.0, now_wall=1000.0).action is Action.REFUSE
    assert leases.plan("n1", future, now_mono=139.0, now_wall=1039.0).action is Action.REFUSE
    assert leases.plan("n1", future, now_mono=140.0, now_wall=1040.0).action is Action.TAKE
    renewed = held_by(OTHER, 5000.0, rv="8")  # the holder renewed: observation starts again
    assert leases.plan("n1", renewed, now_mono=141.0, now_wall=1041.0).action is Action.REFUSE


def test_continuity_no_takeover_when_nobody_wrote_since_our_last_write() -> None:
    leases = book()
    assert leases.written("n1", None, "10", now_mono=0.0) is True  # first time: load from ObjectSync
    leases.released("n1", "11")
    assert leases.written("n1", held_by("", 1.0, rv="11"), "12", now_mono=5.0) is False
    leases.released("n1", "13")
    # another instance took it (rv 14) and released it (rv 15): it served the node meanwhile
    assert leases.written("n1", held_by("", 2.0, rv="15"), "16", now_mono=9.0) is True


def test_the_spec_names_the_holder_and_duration_and_empties_it_on_release() -> None:
    spec = book().spec(ME, 1000.5, 3)
    assert (spec.holder_identity, spec.lease_duration_seconds, spec.lease_transitions) == (ME, 40, 3)
    assert spec.renew_time == datetime.fromtimestamp(1000.5, UTC)
    released = book().spec("", 1001.0, 3)
    assert released.holder_identity == "" and released.acquire_time is None


# -- LeaseBook: renew ------------------------------------------------------------------------------------


def test_held_leases_come_due_after_the_jittered_renew_interval() -> None:
    leases = book(rand=0.5)  # 12 s x (0.8 + 0.2 x 0.5) = 10.8 s
    leases.written("n1", None, "1", now_mono=0.0)
    assert leases.due(10.7) == []
    assert leases.due(10.8) == ["n1"]
    leases.renewed("n1", "2", sent_mono=10.8)
    assert leases.due(21.5) == [] and leases.due(21.6) == ["n1"]


def test_jitter_spreads_renewals_between_80_and_100_percent_of_the_interval() -> None:
    draws = itertools.cycle([0.0, 0.999])
    leases = LeaseBook(ME, 40.0, 10.0, rand=lambda: next(draws))
    leases.written("a", None, "1", 0.0)
    leases.written("b", None, "1", 0.0)
    assert leases.held["a"].due == pytest.approx(8.0)
    assert leases.held["b"].due == pytest.approx(9.998)


def test_a_lease_not_renewed_within_the_renew_deadline_is_overdue_before_it_can_expire() -> None:
    leases = book()
    leases.written("n1", None, "1", now_mono=0.0)
    leases.renew_failed("n1", now_mono=12.0)
    assert leases.due(12.5) == []
    assert leases.due(13.0) == ["n1"]  # retried a second later
    assert leases.overdue(27.9) == []
    assert leases.overdue(28.0) == ["n1"]  # 40 - 12: given up 12 s before another may take it
    assert leases.renew_deadline == 28.0


def test_a_lost_lease_is_forgotten() -> None:
    leases = book()
    leases.written("n1", None, "1", 0.0)
    leases.lost("n1")
    assert leases.due(100.0) == [] and leases.overdue(100.0) == [] and leases.next_deadline() is None


def test_renew_interval_must_be_shorter_than_the_duration() -> None:
    with pytest.raises(ValueError):
        LeaseBook(ME, 10.0, 10.0)


def test_identity_is_host_pid_random_and_unique() -> None:
    first, second = instance_identity(), instance_identity()
    assert first != second and first.count("_") >= 2


# -- NodeOwnership on an in-memory Lease API --------------------------------------------------------------


@dataclass
class FakeLeases:
    """coordination.k8s.io/v1 Leases with resourceVersion preconditions, as CoordinationV1Api methods."""

    stored: dict[str, V1Lease] = field(default_factory=dict)
    next_rv: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    writes: int = 0
    unreachable: bool = False

    async def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> V1Lease:
        if self.unreachable:
            raise OSError("connection refused")
        if name not in self.stored:
            raise ApiException(status=404, reason="Not Found")
        return self.stored[name]

    def _stamp(self, body: V1Lease) -> V1Lease:
        self.writes += 1
        meta = body.metadata
        stored = V1Lease(metadata=V1ObjectMeta(name=meta.name, namespace=meta.namespace,
                                               resource_version=str(next(self.next_rv))), spec=body.spec)
        self.stored[meta.name] = stored
        return stored

    async def create_namespaced_lease(self, namespace: str, body: V1Lease, **_: Any) -> V1Lease:
        if self.unreachable:
            raise OSError("connection refused")
        if body.metadata.name in self.stored:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._stamp(body)

    async def replace_namespaced_lease(self, name: str, namespace: str, body: V1Lease, **_: Any) -> V1Lease:
        if self.unreachable:
            raise OSError("connection refused")
        current = self.stored.get(name)
        if current is None:
            raise ApiException(status=404, reason="Not Found")
        if body.metadata.resource_version != current.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._stamp(body)


class Instance:
    def __init__(self, api: FakeLeases, identity: str, clock: list[float]) -> None:
        self.lost: list[str] = []

        async def on_lost(node: str, why: str) -> None:
            self.lost.append(node)

        self.ownership = NodeOwnership(api, "kubeedge", identity, 40.0, 12.0, on_lost,  # type: ignore[arg-type]
                                       clock=lambda: clock[0], wall_clock=lambda: 1000.0 + clock[0])


async def test_two_instances_one_node_only_one_serves_and_release_hands_over_at_once() -> None:
    api, clock = FakeLeases(), [0.0]
    a, b = Instance(api, "a", clock), Instance(api, "b", clock)
    session_a, session_b = object(), object()
    claim = await a.ownership.acquire("n1", session_a)
    assert claim.granted and claim.taken_over  # first time: read ObjectSync
    refused = await b.ownership.acquire("n1", session_b)
    assert not refused.granted and refused.holder == "a" and refused.remaining == pytest.approx(40.0)
    await a.ownership.release("n1", session_a)
    assert api.stored[lease_name("n1")].spec.holder_identity == ""
    taken = await b.ownership.acquire("n1", session_b)
    assert taken.granted and taken.taken_over
    assert api.stored[lease_name("n1")].spec.lease_transitions == 1  # a -> (released) -> b
    # a comes back to the node later: b served it meanwhile, so a must reload the acked versions
    await b.ownership.release("n1", session_b)
    again = await a.ownership.acquire("n1", object())
    assert again.granted and again.taken_over


async def test_reconnecting_to_the_same_instance_keeps_continuity() -> None:
    api, clock = FakeLeases(), [0.0]
    a = Instance(api, "a", clock)
    first = object()
    await a.ownership.acquire("n1", first)
    await a.ownership.release("n1", first)
    claim = await a.ownership.acquire("n1", object())
    assert claim.granted and not claim.taken_over


async def test_an_older_session_ending_after_a_newer_one_took_the_lease_does_not_release_it() -> None:
    api, clock = FakeLeases(), [0.0]
    a = Instance(api, "a", clock)
    old, new = object(), object()
    await a.ownership.acquire("n1", old)
    await a.ownership.acquire("n1", new)
    await a.ownership.release("n1", old)
    assert api.stored[lease_name("n1")].spec.holder_identity == "a"


async def test_a_dead_instances_lease_is_taken_after_it_expires() -> None:
    api, clock = FakeLeases(), [0.0]
    a, b = Instance(api, "a", clock), Instance(api, "b", clock)
    await a.ownership.acquire("n1", object())  # then a is killed: no renew, no release
    clock[0] = 39.0
    assert not (await b.ownership.acquire("n1", object())).granted
    clock[0] = 40.5
    assert (await b.ownership.acquire("n1", object())).granted


async def test_a_renew_conflict_drops_the_node() -> None:
    api, clock = FakeLeases(), [0.0]
    a, b = Instance(api, "a", clock), Instance(api, "b", clock)
    await a.ownership.acquire("n1", object())
    clock[0] = 41.0  # a stalled (e.g. paused) past its lease; b takes over
    assert (await b.ownership.acquire("n1", object())).granted
    await a.ownership._renew("n1", asyncio.Semaphore(1))
    assert a.lost == ["n1"] and "n1" not in a.ownership.book.held
    assert api.stored[lease_name("n1")].spec.holder_identity == "b"


async def test_renewals_write_once_per_period_and_an_unreachable_api_gives_the_lease_up_in_time() -> None:
    api, clock = FakeLeases(), [0.0]
    a = Instance(api, "a", clock)
    await a.ownership.acquire("n1", object())
    runner = asyncio.create_task(a.ownership.run())
    try:
        for step in range(1, 25):  # 24 s of fake time, real time advanced a little per step
            clock[0] = float(step)
            a.ownership._wakeup.set()
            await asyncio.sleep(0.01)
        assert 2 <= api.writes - 1 <= 3  # 24 s / (9.6..12 s)
        api.unreachable = True
        for step in range(25, 60):
            clock[0] = float(step)
            a.ownership._wakeup.set()
            await asyncio.sleep(0.01)
        assert a.lost == ["n1"]
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


# -- NodeQueue.take_over ----------------------------------------------------------------------------------


def cm(key: str, rv: int, op: str = Op.UPDATE) -> Message:
    return Message.new(source="edgecontroller", group="resource", operation=op, resource=key,
                       content={"metadata": {"name": key}}, resource_version=str(rv))


def test_take_over_drops_what_the_edge_acked_elsewhere_and_keeps_the_newer() -> None:
    queue = NodeQueue(resolve=lambda key: None, size_of=lambda message: 100)
    for key, rv in (("ns/configmap/a", 5), ("ns/configmap/b", 9), ("ns/configmap/c", 3)):
        queue.enqueue(key, cm(key, rv), rv=rv, delete=False)
    queue.enqueue("ns/configmap/d", cm("ns/configmap/d", 4, Op.DELETE), rv=4, delete=True)
    dropped = queue.take_over({"ns/configmap/a": 5, "ns/configmap/b": 7, "ns/configmap/d": 4})
    assert dropped == 1  # a@5 was acked via the other instance
    sent = []
    while (out := queue.next_message(0.0)) is not None:
        sent.append((out.key, out.message.header.resource_version))
    assert sent == [("ns/configmap/b", "9"), ("ns/configmap/c", "3"), ("ns/configmap/d", "4")]
    assert queue.acked_rv("ns/configmap/b") == 7
    # a later enqueue of an acked version is stale, a newer one goes
    assert queue.enqueue("ns/configmap/a", cm("ns/configmap/a", 5), rv=5, delete=False).value == "stale"
    assert queue.enqueue("ns/configmap/a", cm("ns/configmap/a", 6), rv=6, delete=False).value == "queued"


def test_take_over_drops_a_parked_message_the_other_instance_got_acked() -> None:
    queue = NodeQueue(resolve=lambda key: None, size_of=lambda message: 100)
    queue.enqueue("ns/configmap/a", cm("ns/configmap/a", 5), rv=5, delete=False)
    assert queue.next_message(0.0) is not None
    queue.enqueue("ns/configmap/a", cm("ns/configmap/a", 6), rv=6, delete=False)  # waits behind rv 5
    queue.disconnected()  # rv 6 takes rv 5's place at the front
    dropped = queue.take_over({"ns/configmap/a": 6})
    assert dropped == 1 and queue.next_message(1.0) is None and queue.stats.pending == 0


# -- metrics -----------------------------------------------------------------------------------------------


async def test_lease_metrics_are_exported_only_with_node_leases_on() -> None:
    api, clock = FakeLeases(), [0.0]
    a = Instance(api, "a", clock)
    await a.ownership.acquire("n1", object())
    await Instance(api, "b", clock).ownership.acquire("n1", object())  # refused
    hub = SimpleNamespace(ownership=a.ownership)
    names = {metric.name: metric.samples[0].value for metric in CloudHubCollector(hub)._node_leases()}  # type: ignore[arg-type]
    assert names == {"kubeedge_cloudhub_node_leases_held": 1, "kubeedge_cloudhub_node_lease_writes": 1,
                     "kubeedge_cloudhub_node_lease_refusals": 0}
    assert list(CloudHubCollector(SimpleNamespace(ownership=None))._node_leases()) == []  # type: ignore[arg-type]
