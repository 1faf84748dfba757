"""PendingReports, sans-I/O with an injected clock: one twin report in flight per device, newer properties merged
and sent when the cloud answers (or on the resend timer), disconnects, restarts and transactions."""

from __future__ import annotations

from typing import Any

from common.message import decode
from edgecore.devicetwin.pending import PendingReports

DEV = "default/t"
KEY = f"{DEV}/twin"


def actual(value: str, edge: int) -> dict[str, Any]:
    return {"actual": {"value": value}, "actual_version": {"cloud": 0, "edge": edge}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_report_in_flight_later_updates_wait_and_merge() -> None:
    clock, pending = Clock(), PendingReports(resend_after=10)
    report = pending.put_twin(DEV, {"temp": actual("1", 1)})
    [first] = pending.due(clock())
    assert first is report and first.content["twin"] == {"temp": actual("1", 1)}
    for i in range(2, 100):  # 98 more updates while the first report travels: nothing more is sent
        pending.put_twin(DEV, {"temp": actual(str(i), i)})
        assert pending.due(clock()) == []
    pending.put_twin(DEV, {"hum": actual("50", 1)})
    assert not pending.has_unsent()  # waiting, but behind the one in flight
    clock.now = 0.5
    assert pending.ack(first.msg_id) == KEY
    assert pending.has_unsent()
    [second] = pending.due(clock())  # the latest of each twin, as one report
    assert second.content["twin"] == {"hum": actual("50", 1), "temp": actual("99", 99)}
    assert pending.ack(second.msg_id) == KEY
    assert len(pending) == 0 and pending.due(clock()) == []
    assert pending.take_dirty() == {KEY: None}


def test_unanswered_report_is_resent_with_what_waits_merged() -> None:
    clock, pending = Clock(), PendingReports(resend_after=10)
    pending.put_twin(DEV, {"temp": actual("1", 1), "hum": actual("40", 1)})
    [first] = pending.due(clock())
    pending.put_twin(DEV, {"temp": actual("2", 2)})
    clock.now = 9.9
    assert pending.due(clock()) == [] and pending.next_due() == 10.0
    clock.now = 10.0
    [again] = pending.due(clock())
    assert again.msg_id != first.msg_id
    assert again.content["twin"] == {"hum": actual("40", 1), "temp": actual("2", 2)}
    assert pending.ack(first.msg_id) is None  # the answer to the replaced report no longer counts
    assert pending.in_flight(KEY) is again
    assert pending.ack(again.msg_id) == KEY and len(pending) == 0


def test_disconnect_and_refused_send_put_the_flight_back_to_waiting() -> None:
    clock, pending = Clock(), PendingReports(resend_after=10)
    pending.put_twin(DEV, {"temp": actual("1", 1), "hum": actual("40", 1)})
    [first] = pending.due(clock())
    pending.put_twin(DEV, {"temp": actual("2", 2)})
    pending.disconnected()
    assert pending.in_flight(KEY) is None and pending.has_unsent()
    assert pending.ack(first.msg_id) is None  # an answer from before the disconnect is ignored
    [second] = pending.due(clock())
    assert second.content["twin"] == {"hum": actual("40", 1), "temp": actual("2", 2)}
    pending.unsend(second)  # EdgeHub refused it
    assert pending.unacknowledged(KEY) == {"hum": actual("40", 1), "temp": actual("2", 2)}
    [third] = pending.due(clock())
    assert third.content["twin"] == second.content["twin"]
    pending.put_state(DEV, {"state": "online"})
    [state] = pending.due(clock())
    assert state.resource == f"device/{DEV}/state/update" and f"{DEV}/state" not in pending
    pending.unsend(state)
    assert f"{DEV}/state" in pending


def test_persisted_row_is_everything_unacknowledged_and_survives_a_restart() -> None:
    clock, pending = Clock(), PendingReports(resend_after=10)
    pending.put_twin(DEV, {"temp": actual("1", 1), "hum": actual("40", 1)})
    pending.take_dirty()
    pending.due(clock())
    assert pending.take_dirty() == {}  # sending changes nothing stored
    pending.put_twin(DEV, {"temp": actual("2", 2)})
    rows = pending.take_dirty()
    assert decode(rows[KEY] or b"").content["twin"] == {"hum": actual("40", 1), "temp": actual("2", 2)}
    restored = PendingReports.restore([(KEY, rows[KEY] or b""), ("default/x/twin", b"garbage")])
    assert restored.keys() == [KEY] and restored.take_dirty() == {"default/x/twin": None}
    [sent] = restored.due(clock())
    assert sent.content["twin"] == {"hum": actual("40", 1), "temp": actual("2", 2)}


def test_rollback_undoes_changes_since_begin() -> None:
    clock, pending = Clock(), PendingReports(resend_after=10)
    pending.put_twin(DEV, {"temp": actual("1", 1)})
    [first] = pending.due(clock())
    pending.take_dirty()
    pending.begin()
    pending.put_twin(DEV, {"temp": actual("2", 2)})
    assert pending.ack(first.msg_id) == KEY
    pending.put_twin("default/new", {"temp": actual("9", 1)})
    rows = pending.take_dirty()
    assert set(rows) == {KEY, "default/new/twin"}
    pending.rollback()  # the commit failed
    assert pending.keys() == [KEY] and pending.in_flight(KEY) is first
    assert pending.unacknowledged(KEY) == {"temp": actual("1", 1)}
    assert set(pending.take_dirty()) == {KEY, "default/new/twin"}  # written again as they are now
    pending.begin()
    assert pending.ack(first.msg_id) == KEY  # the same answer, handled again, counts
    pending.commit()
    assert len(pending) == 0


def test_bounded_oldest_entry_dropped() -> None:
    pending = PendingReports(limit=2)
    for i in range(3):
        pending.put_twin(f"default/d{i}", {"temp": actual(str(i), 1)})
    assert pending.keys() == ["default/d1/twin", "default/d2/twin"] and pending.dropped == 1


def test_a_hot_device_reports_at_most_once_per_hot_interval() -> None:
    clock, pending = Clock(), PendingReports(resend_after=10, hot_interval=0.05)
    pending.put_twin(DEV, {"temp": actual("1", 1)})
    [first] = pending.due(clock())
    pending.put_twin(DEV, {"temp": actual("2", 2)})  # one update while the first travels: not hot yet
    pending.put_twin(DEV, {"temp": actual("2", 2), "hum": actual("9", 1)})  # two: the device is hot
    clock.now = 0.01
    assert pending.ack(first.msg_id) == KEY and pending.take_timer_changed()
    assert pending.has_unsent() and not pending.has_unsent(clock())
    assert pending.due(clock()) == [] and pending.next_due() == 0.05
    pending.put_twin(DEV, {"temp": actual("3", 3)})
    clock.now = 0.05
    [second] = pending.due(clock())  # the latest, once the interval has passed
    assert second.content["twin"] == {"hum": actual("9", 1), "temp": actual("3", 3)}
    pending.put_twin(DEV, {"temp": actual("4", 4)})  # one update per round trip: not delayed
    clock.now = 0.06
    assert pending.ack(second.msg_id) == KEY and not pending.take_timer_changed()
    assert [m.content["twin"] for m in pending.due(clock())] == [{"temp": actual("4", 4)}]


def test_a_disconnect_clears_the_hot_delay() -> None:
    clock, pending = Clock(), PendingReports(resend_after=10, hot_interval=0.05)
    pending.put_twin(DEV, {"temp": actual("1", 1)})
    [first] = pending.due(clock())
    for value in ("2", "3"):
        pending.put_twin(DEV, {"temp": actual(value, int(value))})
    pending.ack(first.msg_id)
    assert pending.next_due() == 0.05
    pending.disconnected()
    assert pending.next_due() is None  # nothing to wake up for while the link is down
    assert pending.has_unsent(clock()) and len(pending.due(clock())) == 1
