"""CloudHub's per-node reliable queue: dedup, staleness, collapse, ACKs, resends, bounds, on a fake clock."""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from common.constants import Op
from common.message import Message
from common.reliable import Acked, Advanced, EnqueueResult, NodeQueue, Outgoing, Resolved, RetryPolicy

QUEUED, REPLACED, STALE = EnqueueResult.QUEUED, EnqueueResult.REPLACED, EnqueueResult.STALE
COLLAPSED, FULL_KEY_ONLY = EnqueueResult.COLLAPSED, EnqueueResult.FULL_KEY_ONLY


def pod(key: str, rv: int | None, op: str = Op.UPDATE) -> Message:
    return Message.new(source="edgecontroller", group="resource", operation=op, resource=key,
                       content={"metadata": {"name": key}}, resource_version="" if rv is None else str(rv))


def make_queue(resolve: Callable[[str], Resolved | None] | None = None, policy: RetryPolicy | None = None,
               **options: int) -> NodeQueue:
    return NodeQueue(resolve=resolve or (lambda key: None), policy=policy, size_of=lambda message: 100, **options)


def put(queue: NodeQueue, key: str, rv: int | None, *, delete: bool = False) -> EnqueueResult:
    return queue.enqueue(key, pod(key, rv, Op.DELETE if delete else Op.UPDATE), rv=rv, delete=delete)


def drain(queue: NodeQueue, now: float = 0.0) -> list[Outgoing]:
    sent = []
    while (out := queue.next_message(now)) is not None:
        sent.append(out)
    return sent


def rvs(sent: list[Outgoing]) -> list[tuple[str, str]]:
    return [(out.key, out.message.header.resource_version) for out in sent]


def ack_all(queue: NodeQueue, sent: list[Outgoing], now: float = 0.0) -> None:
    for out in sent:
        queue.ack(out.message.msg_id, now)


def acked_insert(queue: NodeQueue, key: str, rv: int) -> None:
    put(queue, key, rv)
    ack_all(queue, drain(queue))


# -- enqueue rules -----------------------------------------------------------------------------------


def test_newer_rv_replaces_unsent_older_and_the_key_keeps_its_place() -> None:
    queue = make_queue()
    assert [put(queue, "a", 1), put(queue, "b", 1), put(queue, "a", 2)] == [QUEUED, QUEUED, REPLACED]
    assert rvs(drain(queue)) == [("a", "2"), ("b", "1")]


@pytest.mark.parametrize(("state", "rv", "result"), [
    ("pending", 4, STALE), ("pending", 5, STALE), ("pending", 6, REPLACED),
    ("in_flight", 5, STALE), ("in_flight", 6, QUEUED),
    ("acked", 4, STALE), ("acked", 5, STALE), ("acked", 6, QUEUED),
    ("loaded", 5, STALE), ("loaded", 6, QUEUED),
])
def test_message_not_newer_than_pending_in_flight_or_acked_is_stale(state: str, rv: int, result: EnqueueResult) -> None:
    queue = make_queue()
    if state == "loaded":
        queue.load_acked({"a": 5})
    else:
        put(queue, "a", 5)
    if state in ("in_flight", "acked"):
        (out,) = drain(queue)
        if state == "acked":
            queue.ack(out.message.msg_id, 0)
    assert put(queue, "a", rv) is result
    assert queue.stats.stale == (result is STALE)


def test_message_without_rv_replaces_whatever_is_pending() -> None:
    queue = make_queue()
    put(queue, "a", 5)
    assert put(queue, "a", None) is REPLACED
    assert rvs(drain(queue)) == [("a", "")]


def test_delete_of_an_unsent_insert_the_edge_never_acked_collapses_both() -> None:
    queue = make_queue()
    put(queue, "a", 1)
    assert put(queue, "a", 2, delete=True) is COLLAPSED
    assert drain(queue) == []
    assert queue.stats.collapsed == 1


@pytest.mark.parametrize("history", ["acked", "in_flight", "written_then_disconnected", "unknown_key"])
def test_delete_is_sent_when_the_edge_may_hold_the_object(history: str) -> None:
    queue = make_queue()
    if history == "acked":
        acked_insert(queue, "a", 1)
        put(queue, "a", 2)  # unsent update of an acked object: the delete replaces it
    elif history == "in_flight":
        put(queue, "a", 1)
        first = drain(queue)
    elif history == "written_then_disconnected":
        put(queue, "a", 1)
        drain(queue)
        queue.disconnected()
    assert put(queue, "a", 3, delete=True) in (QUEUED, REPLACED)
    if history == "in_flight":
        assert drain(queue) == []  # waits behind the insert
        ack_all(queue, first)
    (out,) = drain(queue)
    assert (out.message.operation, out.key) == (Op.DELETE, "a")


@pytest.mark.parametrize("how", ["replaced_after_disconnect", "took_the_place_of_an_unacked_one"])
def test_unsent_update_remembers_an_earlier_write_of_the_key(how: str) -> None:
    queue = make_queue()
    put(queue, "a", 1)
    drain(queue)  # the edge may store rv 1 and its ACK may be lost
    if how == "replaced_after_disconnect":
        queue.disconnected()
        assert put(queue, "a", 2) is REPLACED
    else:
        put(queue, "a", 2)
        queue.disconnected()
    assert put(queue, "a", 3, delete=True) is REPLACED  # not COLLAPSED: the edge may hold the object
    assert [out.message.operation for out in drain(queue)] == [Op.DELETE]


def test_second_delete_of_a_key_is_stale() -> None:
    queue = make_queue()
    acked_insert(queue, "a", 1)
    put(queue, "a", 2, delete=True)
    assert put(queue, "a", 3, delete=True) is STALE
    drain(queue)
    assert put(queue, "a", 4, delete=True) is STALE  # in flight now


def test_recreated_object_replaces_a_pending_delete() -> None:
    queue = make_queue()
    acked_insert(queue, "a", 1)
    put(queue, "a", 2, delete=True)
    assert put(queue, "a", 2) is STALE
    assert put(queue, "a", 3) is REPLACED
    assert rvs(drain(queue)) == [("a", "3")]


def test_acked_delete_forgets_the_key_and_tells_the_shell() -> None:
    queue = make_queue()
    acked_insert(queue, "a", 5)
    assert queue.acked_rv("a") == 5
    put(queue, "a", 6, delete=True)
    (out,) = drain(queue)
    acked = queue.ack(out.message.msg_id, 0)
    assert acked is not None
    assert (acked.key, acked.rv, acked.delete) == ("a", 6, True)
    assert queue.acked_rv("a") is None
    assert queue.stats.acked_keys == 0


def test_load_acked_suppresses_old_rvs_after_a_restart() -> None:
    queue = make_queue()
    queue.load_acked({"a": 10, "b": 10})
    assert [put(queue, "a", 10), put(queue, "b", 11), put(queue, "c", 1)] == [STALE, QUEUED, QUEUED]
    assert rvs(drain(queue)) == [("b", "11"), ("c", "1")]


# -- sending, ACKs, resends --------------------------------------------------------------------------


def test_one_message_per_key_in_flight_keeps_per_key_order() -> None:
    queue = make_queue()
    put(queue, "a", 1)
    (first,) = drain(queue)
    assert put(queue, "a", 2) is QUEUED
    assert put(queue, "a", 3) is REPLACED  # the waiting one is replaced, the in-flight one is not
    put(queue, "b", 1)
    assert rvs(drain(queue)) == [("b", "1")]
    ack_all(queue, [first])
    assert rvs(drain(queue)) == [("a", "3")]


def test_window_bounds_messages_in_flight() -> None:
    queue = make_queue(window=2)
    for key in "abc":
        put(queue, key, 1)
    first = drain(queue)
    assert [out.key for out in first] == ["a", "b"]
    assert queue.stats.in_flight == 2
    queue.ack(first[0].message.msg_id, 0)
    assert [out.key for out in drain(queue)] == ["c"]


def test_resend_same_msg_id_at_exactly_the_ack_timeout() -> None:
    queue = make_queue()
    put(queue, "a", 1)
    (first,) = drain(queue, now=100)
    assert queue.next_deadline() == 105
    assert queue.next_message(104.999) is None
    again = queue.next_message(105)
    assert again is not None
    assert (again.message.msg_id, again.attempt, again.is_resend) == (first.message.msg_id, 2, True)
    assert queue.next_deadline() == 110
    assert queue.stats.resent == 1


def test_max_sends_then_backoff_then_retry_with_same_msg_id() -> None:
    queue = make_queue()
    put(queue, "a", 1)
    writes = [queue.next_message(float(t)) for t in (0, 5, 10, 15, 20)]
    assert [w.attempt for w in writes if w] == [1, 2, 3, 4, 5]
    assert queue.next_message(25) is None  # round over: parked for 1 s
    assert queue.stats.parked == 1
    assert queue.next_deadline() == 26
    retry = queue.next_message(26)
    assert retry is not None
    assert (retry.message.msg_id, retry.attempt) == (writes[0].message.msg_id if writes[0] else "", 6)
    for t in (31, 36, 41, 46):
        assert queue.next_message(t) is not None
    assert queue.next_message(51) is None
    assert queue.next_deadline() == 53  # second back-off: 2 s


def test_newer_message_goes_instead_of_a_parked_one_after_backoff() -> None:
    queue = make_queue(policy=RetryPolicy(max_sends=1))
    put(queue, "a", 1)
    (old,) = drain(queue)
    put(queue, "a", 2)
    assert queue.next_message(5) is None
    out = queue.next_message(6)
    assert out is not None
    assert (out.message.header.resource_version, out.attempt) == ("2", 1)
    assert queue.ack(old.message.msg_id, 6) is None  # superseded: a late ACK changes nothing


def test_parked_message_acked_late_still_counts() -> None:
    queue = make_queue(policy=RetryPolicy(max_sends=1))
    put(queue, "a", 1)
    (out,) = drain(queue)
    queue.next_message(5)
    assert queue.stats.parked == 1
    assert queue.ack(out.message.msg_id, 5.5) is not None
    assert queue.acked_rv("a") == 1
    assert queue.next_message(100) is None


def test_late_repeated_and_unknown_acks_are_ignored() -> None:
    queue = make_queue()
    put(queue, "a", 1)
    (out,) = drain(queue)
    assert queue.ack(out.message.msg_id, 1) is not None
    assert queue.ack(out.message.msg_id, 2) is None
    assert queue.ack("no-such-id", 2) is None
    assert queue.stats.acked == 1
    assert queue.stats.last_ack_rtt == 1


def test_disconnect_returns_in_flight_to_pending_in_order() -> None:
    queue = make_queue()
    for key in "abc":
        put(queue, key, 1)
    written = drain(queue)
    put(queue, "d", 1)
    queue.disconnected()
    assert queue.stats.in_flight == 0
    again = drain(queue, now=1)
    assert [out.key for out in again] == ["a", "b", "c", "d"]
    assert [out.message.msg_id for out in again[:3]] == [out.message.msg_id for out in written]
    assert [out.is_resend for out in again] == [True, True, True, False]


def test_disconnect_lets_a_waiting_newer_message_take_the_unacked_ones_place() -> None:
    queue = make_queue()
    put(queue, "a", 1)
    put(queue, "b", 1)
    drain(queue)
    put(queue, "a", 2)
    queue.disconnected()
    assert rvs(drain(queue)) == [("a", "2"), ("b", "1")]


def test_ack_arriving_after_disconnect_still_counts() -> None:
    queue = make_queue()
    put(queue, "a", 1)
    (out,) = drain(queue)
    queue.disconnected()
    assert queue.ack(out.message.msg_id, 1) is not None
    assert drain(queue) == []


def test_no_ack_lane_is_sent_once_before_pending_and_dropped_on_disconnect() -> None:
    queue = make_queue(max_no_ack=2)
    put(queue, "a", 1)
    for n in range(3):
        queue.enqueue(f"q{n}", pod(f"q{n}", None, Op.RESPONSE), rv=None, delete=False, needs_ack=False)
    assert queue.stats.dropped_no_ack == 1
    sent = drain(queue)
    assert [out.key for out in sent] == ["q1", "q2", "a"]
    assert [out.key for out in drain(queue, now=5)] == ["a"]  # after a timeout only "a" comes back
    queue.enqueue("q3", pod("q3", None, Op.RESPONSE), rv=None, delete=False, needs_ack=False)
    queue.disconnected()
    assert [out.key for out in drain(queue, now=6)] == ["a"]


def test_next_deadline_is_none_when_idle_and_ignores_backoff_without_room() -> None:
    queue = make_queue(window=1, policy=RetryPolicy(max_sends=1))
    assert queue.next_deadline() is None
    put(queue, "a", 1)
    drain(queue)
    assert queue.next_message(5) is None  # parked until 6
    put(queue, "b", 1)
    (b,) = drain(queue, now=5)
    assert queue.next_deadline() == 10  # "a" is due at 6 but the window is full
    queue.ack(b.message.msg_id, 5)
    assert queue.next_deadline() == 6


# -- memory bound ------------------------------------------------------------------------------------


def current(cloud: dict[str, int]) -> Callable[[str], Resolved | None]:
    def resolve(key: str) -> Resolved | None:
        return (pod(key, cloud[key]), cloud[key], False) if key in cloud else None
    return resolve


def test_bound_keeps_keys_drops_oldest_content_and_resolves_at_send_time() -> None:
    cloud = {"a": 7, "b": 1, "c": 1}
    queue = make_queue(resolve=current(cloud), max_entries=2)
    assert [put(queue, "a", 1), put(queue, "b", 1), put(queue, "c", 1)] == [QUEUED, QUEUED, FULL_KEY_ONLY]
    assert queue.stats.dropped_contents == 1
    assert queue.stats.pending == 3
    sent = drain(queue)
    assert rvs(sent) == [("a", "7"), ("b", "1"), ("c", "1")]  # "a" came back from the resolver
    acked = queue.ack(sent[0].message.msg_id, 0)
    assert acked is not None
    assert acked.rv == 7


def test_byte_bound_counts_content_with_the_callers_size() -> None:
    queue = make_queue(resolve=current({"a": 1}), max_bytes=250)
    put(queue, "a", 1)
    put(queue, "b", 1)
    assert queue.stats.held_bytes == 200
    assert put(queue, "c", 1) is FULL_KEY_ONLY
    assert queue.stats.held_bytes == 200


@pytest.mark.parametrize(("resolved_rv", "sent"), [(None, []), (3, []), (4, [("a", "4")])])
def test_resolved_marker_is_skipped_when_gone_or_not_newer_than_acked(resolved_rv: int | None,
                                                                     sent: list[tuple[str, str]]) -> None:
    cloud = {} if resolved_rv is None else {"a": resolved_rv}
    queue = make_queue(resolve=current(cloud), max_entries=0)
    queue.load_acked({"a": 3})
    assert put(queue, "a", 4) is FULL_KEY_ONLY
    assert rvs(drain(queue)) == sent


def test_delete_of_a_dropped_unsent_insert_still_collapses() -> None:
    queue = make_queue(max_entries=0)
    put(queue, "a", 1)
    assert put(queue, "a", 2, delete=True) is COLLAPSED


def test_parked_content_is_reclaimed_by_the_bound() -> None:
    cloud = {"a": 1}
    queue = make_queue(resolve=current(cloud), max_entries=1, policy=RetryPolicy(max_sends=1))
    put(queue, "a", 1)
    (first,) = drain(queue)
    assert queue.next_message(5) is None  # parked: content now reclaimable
    put(queue, "b", 1)
    assert queue.stats.dropped_contents == 1
    retry = queue.next_message(6)
    assert retry is not None
    assert retry.message.msg_id != first.message.msg_id  # resolved afresh


def test_stats_count_every_outcome() -> None:
    queue = make_queue()
    put(queue, "a", 1)
    put(queue, "a", 2)
    put(queue, "a", 1)
    put(queue, "b", 1)
    put(queue, "b", 2, delete=True)
    out = drain(queue)
    queue.next_message(5)
    queue.ack(out[0].message.msg_id, 6)
    stats = queue.stats
    assert (stats.sent, stats.resent, stats.replaced, stats.stale, stats.collapsed, stats.acked) == (1, 1, 1, 1, 1, 1)
    assert (stats.pending, stats.in_flight, stats.parked, stats.acked_keys) == (0, 0, 0, 1)


# -- whole-system properties -------------------------------------------------------------------------


def test_partition_heals_with_one_message_per_changed_key() -> None:
    queue = make_queue()
    keys = [f"default/pod/p{i}" for i in range(500)]
    for key in keys:
        put(queue, key, 1)
    ack_all(queue, drain(queue)[:300])
    drain(queue)  # the rest is in flight when the link breaks
    queue.disconnected()
    for rv in (2, 3, 4):
        for key in keys:
            put(queue, key, rv)
    sent: list[Outgoing] = []
    while batch := drain(queue, now=1):
        sent += batch
        ack_all(queue, batch, now=1)
    assert len(sent) == len(keys)
    assert {out.message.header.resource_version for out in sent} == {"4"}


KEYS = ("a", "b")
Item = TypeVar("Item")


def pass_on(line: deque[Item], fate: str, count: int, arrive: Callable[[Item], None]) -> None:
    if fate == "deliver":
        for _ in range(min(count, len(line))):
            arrive(line.popleft())
    elif line and fate == "drop":
        line.popleft()
    elif line:
        line.appendleft(line[0])


class CloudEdgeModel(RuleBasedStateMachine):
    """Cloud objects, a NodeQueue, a lossy FIFO link (drop, duplicate, delay) and an idempotent edge.

    A connection is FIFO like a WebSocket; what is on the wire when it breaks is lost. The edge applies
    by RV and ACKs after storing; ACKs go back through their own lossy FIFO. The shell's part is
    modelled too: ObjectSync (acked RVs, a key recorded at RV 0 when first accepted), restarts that
    reload it and replay the informer, and a resolver backed by the cloud state.
    """

    window = 2
    max_entries = 10_000

    @initialize()
    def start(self) -> None:
        self.now = 0.0
        self.last_rv = 0
        self.cloud: dict[str, tuple[int, bool]] = {}  # key -> (rv, exists)
        self.object_sync: dict[str, int] = {}
        self.downlink: deque[Message] = deque()
        self.uplink: deque[str] = deque()
        self.edge: dict[str, int] = {}
        self.received_rvs: defaultdict[str, list[int]] = defaultdict(list)
        self.no_ack_writes: Counter[str] = Counter()
        self.queue = self._new_queue()

    def _new_queue(self) -> NodeQueue:
        # two sends per round, so back-off and re-send paths come up often; unit tests use the defaults
        return NodeQueue(resolve=self._resolve, size_of=lambda message: 100, policy=RetryPolicy(max_sends=2),
                         window=self.window, max_entries=self.max_entries)

    def _resolve(self, key: str) -> Resolved | None:
        if key not in self.cloud:
            return None
        rv, exists = self.cloud[key]
        return pod(key, rv, Op.UPDATE if exists else Op.DELETE), rv, not exists

    def _offer(self, key: str, rv: int, exists: bool) -> EnqueueResult:
        result = self.queue.enqueue(key, pod(key, rv, Op.UPDATE if exists else Op.DELETE), rv=rv, delete=not exists)
        if result not in (STALE, COLLAPSED):
            self.object_sync.setdefault(key, 0)
        return result

    @rule(key=st.sampled_from(KEYS), change=st.sampled_from(["update", "delete", "query_reply"]))
    def change(self, key: str, change: str) -> None:
        self.last_rv += 1
        if change == "query_reply":
            reply_key = f"reply-{self.last_rv}"
            self.queue.enqueue(reply_key, pod(reply_key, None, Op.RESPONSE), rv=None, delete=False, needs_ack=False)
            return
        exists = not (change == "delete" and self.cloud.get(key, (0, False))[1])
        self.cloud[key] = (self.last_rv, exists)
        assert self._offer(key, self.last_rv, exists) is not STALE

    @rule(count=st.integers(1, 4))
    def send(self, count: int) -> None:
        for _ in range(count):
            out = self.queue.next_message(self.now)
            if out is None:
                return
            if out.key.startswith("reply-"):
                self.no_ack_writes[out.key] += 1
                assert self.no_ack_writes[out.key] == 1, "no-ACK message written twice"
            else:
                self.downlink.append(out.message)

    @rule(uplink=st.booleans(), fate=st.sampled_from(["deliver", "deliver", "drop", "duplicate"]),
          count=st.integers(1, 4))
    def transmit(self, uplink: bool, fate: str, count: int) -> None:
        """Deliver `count` messages (or ACKs) in order, or drop or duplicate the head of the line."""
        if uplink:
            pass_on(self.uplink, fate, count, self._ack)
        else:
            pass_on(self.downlink, fate, count, self._apply_at_edge)

    @rule(seconds=st.sampled_from([0.5, 1.0, 4.9, 5.0, 30.0, 61.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(restart_cloudcore=st.booleans(), arrived=st.integers(0, 3))
    def connection_lost(self, restart_cloudcore: bool, arrived: int) -> None:
        """The first `arrived` messages on the wire still reach the edge, the rest and every ACK are lost.

        A restarted cloudcore rebuilds its queue from ObjectSync and replays its informer.
        """
        self.transmit(uplink=False, fate="deliver", count=arrived)
        self.downlink.clear()
        self.uplink.clear()
        if not restart_cloudcore:
            self.queue.disconnected()
            return
        self.queue = self._new_queue()
        self.queue.load_acked(self.object_sync)
        for key, (rv, exists) in self.cloud.items():
            if exists or key in self.object_sync:
                self._offer(key, rv, exists)

    def _apply_at_edge(self, message: Message) -> None:
        key, rv = message.resource, int(message.header.resource_version)
        assert not self.received_rvs[key] or rv >= self.received_rvs[key][-1], "per-key RV order broken"
        self.received_rvs[key].append(rv)
        if message.operation == Op.DELETE:
            self.edge.pop(key, None)
        elif rv > self.edge.get(key, 0):
            self.edge[key] = rv
        self.uplink.append(message.msg_id)

    def _ack(self, msg_id: str) -> None:
        acked = self.queue.ack(msg_id, self.now)
        if acked is None:
            return
        if acked.delete:
            self.object_sync.pop(acked.key, None)
        elif acked.rv is not None:
            self.object_sync[acked.key] = acked.rv

    @rule()
    def settle(self) -> None:
        """Heal the link and run the clock mid-run: a divergence shows before later changes mask it."""
        self._heal()
        self._assert_edge_matches_cloud()

    def teardown(self) -> None:
        if hasattr(self, "queue"):
            self.settle()

    def _assert_edge_matches_cloud(self) -> None:
        expected = {key: rv for key, (rv, exists) in self.cloud.items() if exists}
        assert self.edge == expected

    def _heal(self) -> None:
        """A perfect link and a running clock until the queue has nothing left to do."""
        for _ in range(1000):
            while self.downlink or self.uplink:
                self.transmit(uplink=False, fate="deliver", count=len(self.downlink))
                self.transmit(uplink=True, fate="deliver", count=len(self.uplink))
            self.send(self.queue.window + 1)
            stats = self.queue.stats
            if not (self.downlink or stats.pending or stats.in_flight or stats.parked):
                return
            deadline = self.queue.next_deadline()
            if not self.downlink and deadline is not None:
                self.now = max(self.now, deadline)
        raise AssertionError(f"queue never drained: {self.queue.stats}")


class TightlyBoundedCloudEdgeModel(CloudEdgeModel):
    """The same system with a queue that can hold one message's content: dirty markers everywhere."""

    max_entries = 1


TestCloudEdgeConverges = CloudEdgeModel.TestCase
TestCloudEdgeConverges.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestBoundedCloudEdgeConverges = TightlyBoundedCloudEdgeModel.TestCase
TestBoundedCloudEdgeConverges.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)


def test_advance_takes_an_update_the_edge_has_without_sending_it_when_nothing_newer_is_on_the_way() -> None:
    queue = make_queue()
    assert queue.advance("p", 5) is Advanced.NO  # never sent: the edge may not have it at all
    put(queue, "p", 5)
    assert queue.advance("p", 6) is Advanced.NO  # version 5 is not written yet: 6 replaces it as usual
    sent = drain(queue)
    assert queue.advance("p", 6) is Advanced.ON_ACK  # 5 is in flight: its ACK stands for 6
    assert drain(queue) == [] and queue.acked_rv("p") is None
    (acked,) = [queue.ack(out.message.msg_id, 0.0) for out in sent]
    assert acked == Acked("p", 6, False) and queue.acked_rv("p") == 6  # what ObjectSync records
    assert queue.advance("p", 6) is Advanced.NO  # not newer than what the edge acked
    assert queue.advance("p", 7) is Advanced.NOW
    assert queue.acked_rv("p") == 7 and queue.stats.advanced == 2
    assert put(queue, "p", 7) is STALE  # the same version offered again is not sent
    assert drain(queue) == []
    assert put(queue, "p", 8) is QUEUED  # a newer one is
    assert rvs(drain(queue)) == [("p", "8")]


def test_advance_of_a_key_with_a_message_waiting_or_a_delete_in_flight_is_refused() -> None:
    queue = make_queue()
    put(queue, "p", 5)
    drain(queue)
    put(queue, "p", 6)  # waits behind 5
    assert queue.advance("p", 7) is Advanced.NO
    put(queue, "d", 1)
    ack_all(queue, drain(queue))
    put(queue, "d", 2, delete=True)
    drain(queue)
    assert queue.advance("d", 3) is Advanced.NO


def test_an_advanced_message_resent_after_a_reconnect_still_acknowledges_the_newer_version() -> None:
    queue = make_queue()
    put(queue, "p", 5)
    drain(queue)
    assert queue.advance("p", 6) is Advanced.ON_ACK
    queue.disconnected()
    (again,) = drain(queue)
    assert again.message.header.resource_version == "5"  # the content sent is still version 5
    assert queue.ack(again.message.msg_id, 0.0) == Acked("p", 6, False)
