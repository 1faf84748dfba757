"""Edged's event recorder: kubelet-shaped Events, dedup/aggregation/spam filter with an injected clock,
the bounded queue that never blocks, and the sender's rate limit, retries and connection gate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from common.config.edgecore import Edged as EdgedConfig
from common.constants import Op
from edgecore.edged.events import (
    COMBINED_PREFIX,
    MAX_TRIES,
    NORMAL,
    WARNING,
    Deliver,
    EventCorrelator,
    EventRecorder,
    ObjectRef,
    Outgoing,
    TokenBucket,
    pod_ref,
)
from edgecore.edged.module import EdgedModule
from edgecore.edged.pods.spec import PodSpec, parse_pod

T0 = 1_700_000_000.0


def spec() -> PodSpec:
    return parse_pod({
        "metadata": {"uid": "u-1", "name": "web", "namespace": "shop", "resourceVersion": "42"},
        "spec": {"containers": [{"name": "app", "image": "i"}], "initContainers": [{"name": "setup", "image": "i"}]},
    })


def ref(name: str = "web", field_path: str = "") -> ObjectRef:
    return ObjectRef(kind="Pod", namespace="shop", name=name, uid=f"uid-{name}", field_path=field_path)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_event_is_shaped_like_kubelets() -> None:
    pod = spec()
    out = EventCorrelator("edge-1").correlate(pod_ref(pod, "app"), WARNING, "Failed",
                                              'Failed to pull image "x": not found', T0)
    assert out is not None and out.operation == Op.INSERT
    event = out.event
    assert event["metadata"] == {"name": f"web.{int(T0 * 1e9):x}", "namespace": "shop"}
    assert event["involvedObject"] == {"kind": "Pod", "namespace": "shop", "name": "web", "uid": "u-1",
                                       "apiVersion": "v1", "resourceVersion": "42", "fieldPath": "spec.containers{app}"}
    assert (event["reason"], event["type"], event["count"]) == ("Failed", "Warning", 1)
    assert event["source"] == {"component": "kubelet", "host": "edge-1"}
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2023-11-14T22:13:20Z"
    assert (event["apiVersion"], event["kind"]) == ("v1", "Event")


def test_field_paths_name_init_containers_and_the_pod_itself() -> None:
    pod = spec()
    assert pod_ref(pod, "setup").field_path == "spec.initContainers{setup}"
    assert pod_ref(pod).field_path == "" and "fieldPath" not in pod_ref(pod).as_json()


def test_identical_events_become_one_with_a_count_and_the_latest_time() -> None:
    correlator = EventCorrelator("edge-1")
    first = correlator.correlate(ref(), WARNING, "BackOff", "Back-off restarting failed container", T0)
    again = correlator.correlate(ref(), WARNING, "BackOff", "Back-off restarting failed container", T0 + 70)
    assert first is not None and again is not None
    assert again.name == first.name and again.operation == Op.UPDATE and again.count == 2
    assert again.event["firstTimestamp"] == first.event["firstTimestamp"]
    assert again.event["lastTimestamp"] == "2023-11-14T22:14:30Z"


def test_events_differing_in_message_reason_type_or_container_are_separate() -> None:
    correlator = EventCorrelator("edge-1")
    names = {
        out.name for out in (
            correlator.correlate(ref(), WARNING, "Failed", "a", T0),
            correlator.correlate(ref(), WARNING, "Failed", "b", T0),
            correlator.correlate(ref(), NORMAL, "Failed", "a", T0),
            correlator.correlate(ref(), WARNING, "Other", "a", T0),
            correlator.correlate(ref(field_path="spec.containers{x}"), WARNING, "Failed", "a", T0),
        ) if out is not None}
    assert len(names) == 5


def test_the_dedup_cache_is_a_bounded_lru() -> None:
    correlator = EventCorrelator("edge-1", cache_size=2)
    first = correlator.correlate(ref("a"), NORMAL, "Started", "s", T0)
    correlator.correlate(ref("b"), NORMAL, "Started", "s", T0)
    correlator.correlate(ref("a"), NORMAL, "Started", "s", T0 + 1)  # a is recent again
    correlator.correlate(ref("c"), NORMAL, "Started", "s", T0 + 2)  # evicts b
    a = correlator.correlate(ref("a"), NORMAL, "Started", "s", T0 + 3)
    b = correlator.correlate(ref("b"), NORMAL, "Started", "s", T0 + 4)
    assert a is not None and first is not None and (a.name, a.count) == (first.name, 3)
    assert b is not None and (b.operation, b.count) == (Op.INSERT, 1)


def test_many_distinct_messages_for_one_reason_are_combined() -> None:
    correlator = EventCorrelator("edge-1", similar_limit=3)
    outs = [correlator.correlate(ref(), WARNING, "Unhealthy", f"probe failed: {n}", T0 + n) for n in range(6)]
    assert [o.event["message"] for o in outs[:3] if o] == [f"probe failed: {n}" for n in range(3)]
    combined = [o for o in outs[3:] if o]
    assert all(o.event["message"].startswith(COMBINED_PREFIX) for o in combined)
    # once combined the distinct messages differ, so each is its own event; later repeats count up
    again = correlator.correlate(ref(), WARNING, "Unhealthy", "probe failed: 5", T0 + 7)
    assert again is not None and again.name == combined[-1].name and again.count == 2
    # after the window the messages are told apart again
    later = correlator.correlate(ref(), WARNING, "Unhealthy", "probe failed: 9", T0 + 7 + 601)
    assert later is not None and later.event["message"] == "probe failed: 9"


def test_the_spam_filter_lets_a_burst_through_then_one_per_refill() -> None:
    correlator = EventCorrelator("edge-1", spam_burst=3, spam_refill=300)
    outs = [correlator.correlate(ref(), WARNING, "Unhealthy", "x", T0 + n) for n in range(5)]
    assert [o.count if o else None for o in outs] == [1, 2, 3, None, None]
    assert correlator.spam_dropped == 2
    assert correlator.correlate(ref(), WARNING, "Unhealthy", "x", T0 + 299) is None
    allowed = correlator.correlate(ref(), WARNING, "Unhealthy", "x", T0 + 310)
    assert allowed is not None and allowed.count == 4
    # another object (or reason) has its own bucket
    assert correlator.correlate(ref("other"), WARNING, "Unhealthy", "x", T0 + 310) is not None
    assert correlator.correlate(ref(), NORMAL, "Killing", "x", T0 + 310) is not None


def test_long_messages_are_cut() -> None:
    out = EventCorrelator("edge-1").correlate(ref(), WARNING, "Failed", "x" * 5000, T0)
    assert out is not None and len(out.event["message"]) == 1024 and out.event["message"].endswith("...")


def test_token_bucket() -> None:
    bucket = TokenBucket(2.0, 2, 0.0)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    assert bucket.delay(0.0) == pytest.approx(0.5)
    assert bucket.delay(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) and not bucket.take(0.5)
    unlimited = TokenBucket(0, 1, 0.0)
    assert all(unlimited.take(0.0) for _ in range(100)) and unlimited.delay(0.0) == 0


# ---- the recorder's queue -----------------------------------------------------------------------------


def test_a_repeat_waiting_to_be_sent_replaces_it_and_stays_an_insert() -> None:
    clock = Clock()
    recorder = EventRecorder("edge-1", clock=clock)
    recorder.record(ref(), WARNING, "BackOff", "m")
    clock.now += 5
    recorder.record(ref(), WARNING, "BackOff", "m")
    (waiting,) = recorder.waiting
    assert (waiting.operation, waiting.count) == (Op.INSERT, 2)
    assert waiting.event["lastTimestamp"] != waiting.event["firstTimestamp"]


def test_a_full_queue_drops_new_events_and_counts_them_without_blocking() -> None:
    recorder = EventRecorder("edge-1", queue_limit=2, clock=Clock())
    for name in ("a", "b", "c", "d"):
        recorder.record(ref(name), NORMAL, "Started", "s")
    assert [o.event["involvedObject"]["name"] for o in recorder.waiting] == ["a", "b"]
    assert recorder.stats.dropped_full == 2 and recorder.stats.recorded == 4
    recorder.record(ref("a"), NORMAL, "Started", "s")  # a repeat of a waiting one still counts
    assert recorder.waiting[0].count == 2


# ---- the sender -----------------------------------------------------------------------------------------


async def _run_until(recorder: EventRecorder, deliver: Deliver, ready: asyncio.Event,
                     done: Callable[[], bool]) -> None:
    task = asyncio.create_task(recorder.run(deliver, ready))
    try:
        await poll(done)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def poll(done: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while True:
            if done():
                return
            await asyncio.sleep(0.01)


async def test_events_wait_for_the_connection_then_go_in_order() -> None:
    sent: list[Outgoing] = []

    async def deliver(outgoing: Outgoing) -> bool:
        sent.append(outgoing)
        return True

    recorder = EventRecorder("edge-1", clock=Clock())
    ready = asyncio.Event()
    for name in ("a", "b", "c"):
        recorder.record(ref(name), NORMAL, "Started", "s")
    task = asyncio.create_task(recorder.run(deliver, ready))
    await asyncio.sleep(0.05)
    assert sent == []  # not connected
    ready.set()
    try:
        await poll(lambda: len(sent) == 3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [o.event["involvedObject"]["name"] for o in sent] == ["a", "b", "c"]
    assert recorder.stats.sent == 3 and recorder.waiting == []


async def test_sending_is_rate_limited() -> None:
    sent: list[float] = []
    loop = asyncio.get_running_loop()

    async def deliver(_: Outgoing) -> bool:
        sent.append(loop.time())
        return True

    recorder = EventRecorder("edge-1", qps=20, burst=2, clock=Clock())
    for n in range(6):
        recorder.record(ref(f"p{n}"), NORMAL, "Started", "s")
    ready = asyncio.Event()
    ready.set()
    await _run_until(recorder, deliver, ready, lambda: len(sent) == 6)
    # 2 at once, then one per 50 ms: the last no sooner than 4 intervals after the first
    assert sent[-1] - sent[0] >= 0.19


async def test_a_failed_delivery_is_tried_again_then_dropped() -> None:
    tries: list[int] = []

    async def deliver(outgoing: Outgoing) -> bool:
        tries.append(outgoing.count)
        return False

    recorder = EventRecorder("edge-1", clock=Clock(), retry_pause=0.001)
    recorder.record(ref(), WARNING, "Failed", "x")
    ready = asyncio.Event()
    ready.set()
    await _run_until(recorder, deliver, ready, lambda: recorder.stats.dropped_tries == 1)
    assert len(tries) == MAX_TRIES and recorder.waiting == []


async def test_a_failing_sink_does_not_end_the_sender() -> None:
    calls: list[str] = []

    async def deliver(outgoing: Outgoing) -> bool:
        calls.append(outgoing.name)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return True

    recorder = EventRecorder("edge-1", clock=Clock(), retry_pause=0.001)
    recorder.record(ref(), WARNING, "Failed", "x")
    ready = asyncio.Event()
    ready.set()
    await _run_until(recorder, deliver, ready, lambda: recorder.stats.sent == 1)
    assert len(calls) == 2


def test_events_are_recorded_only_with_upstreams_report_event_on() -> None:
    def edged(**more: object) -> EdgedModule:
        return EdgedModule(EdgedConfig.model_validate({"hostnameOverride": "edge-1", "nodeIP": "192.0.2.9", **more}))

    assert edged().events is None  # upstream's default: reportEvent false
    recorder = edged(reportEvent=True, tailoredKubeletConfig={"eventRecordQPS": 7, "eventBurst": 9}).events
    assert recorder is not None and recorder.correlator.host == "edge-1"
