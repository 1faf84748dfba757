"""The edge outbox: latest per key, one in flight per key, re-sends, disconnects, rows for SQLite."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from common.constants import Op
from common.message import Message, encode
from common.reliable import EnqueueResult, Outbox, OutboxRow, Outgoing, RetryPolicy


def status(key: str, seq: int) -> Message:
    return Message.new(source="edged", group="meta", operation=Op.PATCH, resource=key, content={"seq": seq})


def seqs(batch: list[Outgoing]) -> list[tuple[str, int]]:
    return [(out.key, out.message.content["seq"]) for out in batch]


def test_put_replaces_unsent_older_and_the_key_keeps_its_place() -> None:
    outbox = Outbox()
    results = [outbox.put("a", status("a", 1)), outbox.put("b", status("b", 1)), outbox.put("a", status("a", 2))]
    assert results == [EnqueueResult.QUEUED, EnqueueResult.QUEUED, EnqueueResult.REPLACED]
    assert seqs(outbox.next_batch(0, limit=10)) == [("a", 2), ("b", 1)]


def test_next_batch_respects_limit_and_window() -> None:
    outbox = Outbox(window=3)
    for key in "abcde":
        outbox.put(key, status(key, 1))
    assert [out.key for out in outbox.next_batch(0, limit=2)] == ["a", "b"]
    assert [out.key for out in outbox.next_batch(0, limit=10)] == ["c"]
    assert outbox.next_batch(0, limit=10) == []


def test_one_in_flight_per_key_newer_waits_for_the_ack() -> None:
    outbox = Outbox()
    outbox.put("a", status("a", 1))
    (first,) = outbox.next_batch(0, limit=10)
    outbox.put("a", status("a", 2))
    assert outbox.put("a", status("a", 3)) is EnqueueResult.REPLACED
    assert outbox.next_batch(1, limit=10) == []
    assert outbox.ack(first.message.msg_id) == "a"
    assert seqs(outbox.next_batch(1, limit=10)) == [("a", 3)]


def test_resend_same_msg_id_on_timeout_then_backoff() -> None:
    outbox = Outbox(RetryPolicy(max_sends=2))
    outbox.put("a", status("a", 1))
    (first,) = outbox.next_batch(0, limit=10)
    assert outbox.next_deadline() == 5
    (again,) = outbox.next_batch(5, limit=10)
    assert (again.message.msg_id, again.attempt, again.is_resend) == (first.message.msg_id, 2, True)
    assert outbox.next_batch(10, limit=10) == []  # parked for 1 s
    assert outbox.stats.parked == 1
    (retry,) = outbox.next_batch(11, limit=10)
    assert (retry.message.msg_id, retry.attempt) == (first.message.msg_id, 3)


def test_newer_message_goes_instead_of_a_parked_one() -> None:
    outbox = Outbox(RetryPolicy(max_sends=1))
    outbox.put("a", status("a", 1))
    (old,) = outbox.next_batch(0, limit=10)
    outbox.put("a", status("a", 2))
    assert outbox.next_batch(5, limit=10) == []
    assert seqs(outbox.next_batch(6, limit=10)) == [("a", 2)]
    assert outbox.ack(old.message.msg_id) is None


def test_late_and_unknown_acks_are_ignored() -> None:
    outbox = Outbox()
    outbox.put("a", status("a", 1))
    (out,) = outbox.next_batch(0, limit=10)
    assert outbox.ack(out.message.msg_id) == "a"
    assert outbox.ack(out.message.msg_id) is None
    assert outbox.ack("nope") is None
    assert outbox.stats.acked == 1


def test_disconnect_returns_in_flight_first_in_order_with_msg_ids() -> None:
    outbox = Outbox()
    for key in "abc":
        outbox.put(key, status(key, 1))
    written = outbox.next_batch(0, limit=2)
    outbox.put("a", status("a", 2))  # waits behind a's unacked message, then takes its place
    outbox.disconnected()
    again = outbox.next_batch(1, limit=10)
    assert seqs(again) == [("a", 2), ("b", 1), ("c", 1)]
    assert again[1].message.msg_id == written[1].message.msg_id
    assert [out.is_resend for out in again] == [False, True, False]


def test_bound_drops_the_longest_waiting_unsent_message() -> None:
    outbox = Outbox(max_entries=2)
    outbox.put("a", status("a", 1))
    (in_flight,) = outbox.next_batch(0, limit=1)
    outbox.put("b", status("b", 1))
    outbox.put("c", status("c", 1))
    assert outbox.stats.dropped == 1
    assert seqs(outbox.next_batch(0, limit=10)) == [("c", 1)]
    assert outbox.ack(in_flight.message.msg_id) == "a"


def test_row_of_is_the_newest_message_of_a_key_and_dropped_keys_are_reported_once() -> None:
    outbox = Outbox(max_entries=2)
    outbox.put("a", status("a", 1))
    (in_flight,) = outbox.next_batch(0, limit=1)
    newer = status("a", 2)
    outbox.put("a", newer)
    row = outbox.row_of("a")
    assert row is not None and (row.msg_id, row.message, row.attempt) == (newer.msg_id, encode(newer), 0)
    outbox.put("b", status("b", 1))
    assert outbox.take_dropped() == ["b"]  # the newest unsent key goes: "a" has one in flight and one waiting
    assert outbox.take_dropped() == []
    assert outbox.row_of("b") is None
    outbox.ack(in_flight.message.msg_id)
    row = outbox.row_of("a")
    assert row is not None and row.msg_id == newer.msg_id
    (sent,) = outbox.next_batch(1, limit=1)
    outbox.ack(sent.message.msg_id)
    assert outbox.row_of("a") is None


def test_rows_hold_the_newest_message_per_key_in_send_order() -> None:
    outbox = Outbox()
    for key in "abc":
        outbox.put(key, status(key, 1))
    written = outbox.next_batch(0, limit=2)
    outbox.put("b", status("b", 2))
    rows = outbox.to_rows()
    assert [(row.key, row.attempt) for row in rows] == [("a", 1), ("b", 0), ("c", 0)]
    assert rows[0] == OutboxRow("a", written[0].message.msg_id, encode(written[0].message), 1)

    restored = Outbox.from_rows(rows)
    batch = restored.next_batch(100, limit=10)
    assert seqs(batch) == [("a", 1), ("b", 2), ("c", 1)]
    assert (batch[0].message.msg_id, batch[0].attempt, batch[0].is_resend) == (written[0].message.msg_id, 2, True)
    assert restored.to_rows()[0].attempt == 2


def test_from_rows_refuses_a_row_whose_msg_id_disagrees() -> None:
    row = OutboxRow("a", "other-id", encode(status("a", 1)), 0)
    with pytest.raises(ValueError, match="msg_id"):
        Outbox.from_rows([row])


def test_stats_count_sends_resends_and_replacements() -> None:
    outbox = Outbox()
    outbox.put("a", status("a", 1))
    outbox.put("a", status("a", 2))
    outbox.next_batch(0, limit=10)
    outbox.next_batch(5, limit=10)
    stats = outbox.stats
    assert (stats.sent, stats.resent, stats.replaced, stats.in_flight, stats.pending) == (1, 1, 1, 1, 0)


KEYS = ("node", "pod-a", "pod-b")
Item = TypeVar("Item")


def pass_on(line: deque[Item], fate: str, arrive: Callable[[Item], object]) -> None:
    if line and fate == "deliver":
        arrive(line.popleft())
    elif line and fate == "drop":
        line.popleft()
    elif line:
        line.appendleft(line[0])


class EdgeToCloudModel(RuleBasedStateMachine):
    """Edge puts status snapshots; a lossy FIFO link; the cloud keeps the newest per key and ACKs.

    Edgecore may restart from `to_rows` at any point. After the link heals and the clock runs, the
    cloud holds the last snapshot put for every key, and each key's snapshots arrived in order.
    """

    @initialize()
    def start(self) -> None:
        self.now = 0.0
        self.last_seq = 0
        self.latest_put: dict[str, int] = {}
        self.outbox = Outbox(RetryPolicy(max_sends=2), window=2)
        self.downlink: deque[Message] = deque()
        self.uplink: deque[str] = deque()
        self.cloud: dict[str, int] = {}
        self.received: defaultdict[str, list[int]] = defaultdict(list)

    @rule(key=st.sampled_from(KEYS))
    def put(self, key: str) -> None:
        self.last_seq += 1
        self.latest_put[key] = self.last_seq
        self.outbox.put(key, status(key, self.last_seq))

    @rule(limit=st.integers(1, 3))
    def send(self, limit: int) -> None:
        self.downlink.extend(out.message for out in self.outbox.next_batch(self.now, limit))

    @rule(uplink=st.booleans(), fate=st.sampled_from(["deliver", "deliver", "drop", "duplicate"]))
    def transmit(self, uplink: bool, fate: str) -> None:
        """Deliver, drop or duplicate the head of one direction's line."""
        if uplink:
            pass_on(self.uplink, fate, self.outbox.ack)
        else:
            pass_on(self.downlink, fate, self._arrive)

    @rule(seconds=st.sampled_from([1.0, 5.0, 30.0, 61.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(restart_edgecore=st.booleans())
    def connection_lost(self, restart_edgecore: bool) -> None:
        self.downlink.clear()
        self.uplink.clear()
        if restart_edgecore:
            self.outbox = Outbox.from_rows(self.outbox.to_rows(), RetryPolicy(max_sends=2), window=2)
        else:
            self.outbox.disconnected()

    @rule()
    def settle(self) -> None:
        for _ in range(1000):
            while self.downlink or self.uplink:
                self.transmit(uplink=False, fate="deliver")
                self.transmit(uplink=True, fate="deliver")
            self.send(limit=10)
            stats = self.outbox.stats
            if not (self.downlink or stats.pending or stats.in_flight or stats.parked):
                break
            deadline = self.outbox.next_deadline()
            if not self.downlink and deadline is not None:
                self.now = max(self.now, deadline)
        assert self.cloud == self.latest_put

    def _arrive(self, message: Message) -> None:
        key, seq = message.resource, message.content["seq"]
        assert not self.received[key] or seq >= self.received[key][-1], "per-key order broken"
        self.received[key].append(seq)
        self.cloud[key] = max(seq, self.cloud.get(key, 0))
        self.uplink.append(message.msg_id)

    def teardown(self) -> None:
        if hasattr(self, "outbox"):
            self.settle()


TestEdgeToCloudConverges = EdgeToCloudModel.TestCase
TestEdgeToCloudConverges.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
