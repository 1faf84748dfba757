"""Retry and reconnect policies, the resend schedule and keepalive, all on a fake clock."""

from __future__ import annotations

import pytest

from common.reliable import Keepalive, ReconnectBackoff, ReconnectPolicy, ResendSchedule, RetryPolicy, Tracked


def test_retry_policy_defaults_are_upstreams_five_sends_five_seconds_apart() -> None:
    policy = RetryPolicy()
    assert (policy.ack_timeout, policy.max_sends) == (5.0, 5)


@pytest.mark.parametrize(("attempt", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (10_000, 60.0)])
def test_backoff_doubles_from_one_second_to_a_sixty_second_cap(attempt: int, delay: float) -> None:
    assert RetryPolicy().backoff(attempt) == delay


def test_backoff_jitter_hook_maps_the_delay_and_never_goes_negative() -> None:
    assert RetryPolicy(jitter=lambda d: d * 0.5).backoff(3) == 2.0
    assert RetryPolicy(jitter=lambda d: d - 100).backoff(3) == 0.0


@pytest.mark.parametrize("kwargs", [{"ack_timeout": 0}, {"max_sends": 0}, {"backoff_base": 0},
                                    {"backoff_base": 2, "backoff_cap": 1}])
def test_retry_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_backoff_attempt_starts_at_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().backoff(0)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (4, 4.0), (5, 8.0), (6, 10.0), (500, 10.0)])
def test_reconnect_ceiling_doubles_from_half_a_second_to_ten(attempt: int, ceiling: float) -> None:
    assert ReconnectPolicy().ceiling(attempt) == ceiling


def test_reconnect_delay_is_full_jitter_over_the_ceiling() -> None:
    policy = ReconnectPolicy()
    assert policy.delay(3, lambda: 0.0) == 0.0
    assert policy.delay(3, lambda: 0.5) == 1.0
    assert policy.delay(3, lambda: 0.999) == pytest.approx(1.998)


def test_reconnect_backoff_grows_with_each_failure() -> None:
    backoff = ReconnectBackoff()
    ceilings = [backoff.next_delay(float(t), lambda: 0.999) for t in range(8)]
    assert ceilings == sorted(ceilings)
    assert backoff.attempt == 8
    assert ceilings[-1] == pytest.approx(10 * 0.999)


def test_reconnect_count_resets_only_after_a_stable_connection() -> None:
    backoff = ReconnectBackoff(ReconnectPolicy(stable_after=30))
    for t in range(3):
        backoff.next_delay(float(t), lambda: 0.5)
    backoff.connected(now=10)
    backoff.next_delay(now=15, rand=lambda: 0.5)  # dropped after 5 s: still counting
    assert backoff.attempt == 4
    backoff.connected(now=20)
    assert backoff.next_delay(now=50, rand=lambda: 1.0) == 0.5  # up 30 s: back to the first step
    assert backoff.attempt == 1
    backoff.reset()
    assert backoff.attempt == 0


def test_schedule_resends_at_each_timeout_then_parks_with_backoff() -> None:
    schedule: ResendSchedule[Tracked] = ResendSchedule(RetryPolicy(max_sends=2))
    item = Tracked("m1")
    schedule.sent(item, now=0)
    assert schedule.due(4.99, room=True) is None
    assert schedule.due(5.0, room=True) == (item, False)
    schedule.sent(item, now=5)
    assert schedule.next_deadline(room=True) == 10
    assert schedule.due(10, room=True) is None  # round over: parked for backoff(1) = 1 s
    assert set(schedule.parked_by_msg_id) == {"m1"}
    assert schedule.next_deadline(room=False) is None
    assert schedule.next_deadline(room=True) == 11
    assert schedule.due(11, room=False) is None
    assert schedule.due(11, room=True) == (item, True)
    assert (item.sends, item.rounds) == (0, 1)


def test_schedule_discard_skips_parked_heap_entries_lazily() -> None:
    schedule: ResendSchedule[Tracked] = ResendSchedule(RetryPolicy(max_sends=1))
    first, second = Tracked("a"), Tracked("b")
    schedule.sent(first, now=0)
    schedule.sent(second, now=0)
    assert schedule.due(5, room=True) is None
    assert schedule.discard("a") is first
    assert schedule.discard("a") is None
    assert schedule.due(6, room=True) == (second, True)
    assert schedule.next_deadline(room=True) is None


def test_keepalive_cloud_side_expires_after_interval_of_silence() -> None:
    keepalive = Keepalive(interval=15, timeout=30, now=100)
    assert not keepalive.expired(129.9)
    keepalive.seen(120)
    assert keepalive.expires_at == 150
    assert not keepalive.expired(149)
    assert keepalive.expired(150)
    keepalive.seen(110)  # a stale timestamp never moves the deadline back
    assert keepalive.expires_at == 150


def test_keepalive_edge_side_ping_is_due_every_heartbeat() -> None:
    keepalive = Keepalive(interval=15, timeout=30, now=0)
    assert keepalive.next_ping(1) == 15
    assert keepalive.next_ping(20) == 20  # overdue: now
    keepalive.pinged(20)
    assert keepalive.next_ping(21) == 35


def test_keepalive_refuses_non_positive_times() -> None:
    with pytest.raises(ValueError):
        Keepalive(interval=0, timeout=30, now=0)
