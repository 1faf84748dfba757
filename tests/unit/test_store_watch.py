"""The watch cache without SQLite: resume, live delivery, 410s, overflow, scoping."""

from __future__ import annotations

import asyncio

import pytest

from cloudcore.controlplane.store.types import (
    EventType,
    Key,
    StoredObject,
    TooOldError,
    WatcherClosedError,
    WatchEvent,
)
from cloudcore.controlplane.store.watch import WatchCache, Watcher


def event(rv: int, name: str = "p", namespace: str = "default", gr: str = "pods",
          kind: EventType = EventType.MODIFIED) -> WatchEvent:
    raw = b'{"metadata":{"resourceVersion":"%d"}}' % rv
    return WatchEvent(kind, StoredObject(Key(gr, namespace, name), rv, raw, "", {}, {}))


def publish_range(cache: WatchCache, first: int, last: int) -> None:
    cache.publish([event(rv) for rv in range(first, last + 1)])


async def drain(watcher: Watcher) -> list[int]:
    revisions: list[int] = []
    while (got := await watcher.next(0)) is not None:
        revisions.append(got.rv)
    return revisions


async def test_resume_replays_events_after_the_revision_then_continues_live() -> None:
    cache = WatchCache()
    publish_range(cache, 1, 10)
    watcher = cache.watch("pods", None, 4)
    publish_range(cache, 11, 12)
    assert await drain(watcher) == list(range(5, 13))
    assert watcher.rv == 12


async def test_writes_interleaved_with_a_slow_replay_give_no_gap_and_no_duplicate() -> None:
    cache = WatchCache()
    publish_range(cache, 1, 100)
    watcher = cache.watch("pods", None, 50)
    seen: list[int] = []
    next_rv = 101
    # The consumer reads the replay one event at a time while batches keep being published.
    for _ in range(60):
        got = await watcher.next(0)
        if got is not None:
            seen.append(got.rv)
        if next_rv <= 199:
            publish_range(cache, next_rv, next_rv + 2)
            next_rv += 3
    seen += await drain(watcher)
    assert seen == list(range(51, next_rv))


async def test_from_now_delivers_only_later_events() -> None:
    cache = WatchCache()
    publish_range(cache, 1, 5)
    for since in (None, 0):
        watcher = cache.watch("pods", None, since)
        assert watcher.rv == 5
        assert await watcher.next(0) is None
    publish_range(cache, 6, 6)
    assert [w.rv for w in [await watcher.next(0)] if w is not None] == [6]


async def test_resume_at_the_current_revision_is_allowed_and_empty() -> None:
    cache = WatchCache()
    publish_range(cache, 1, 3)
    watcher = cache.watch("pods", None, 3)
    assert await watcher.next(0) is None


def test_resume_from_an_evicted_revision_is_too_old() -> None:
    cache = WatchCache(capacity=10)
    publish_range(cache, 1, 25)
    assert cache.oldest_rv == 15
    assert len(cache) == 10
    with pytest.raises(TooOldError) as caught:
        cache.watch("pods", None, 14)
    assert (caught.value.requested, caught.value.oldest) == (14, 15)
    cache.watch("pods", None, 15)  # every event after 15 is still here


def test_resume_from_below_the_compaction_floor_is_too_old() -> None:
    cache = WatchCache()
    publish_range(cache, 1, 20)
    cache.trim(12)
    assert cache.oldest_rv == 12
    with pytest.raises(TooOldError):
        cache.watch("pods", None, 11)
    cache.watch("pods", None, 12)


def test_resume_from_a_revision_the_store_never_had_is_refused() -> None:
    cache = WatchCache()
    publish_range(cache, 1, 3)
    with pytest.raises(TooOldError):
        cache.watch("pods", None, 4)


def test_eviction_keeps_an_unbroken_range_across_bulk_drops() -> None:
    cache = WatchCache(capacity=100)
    for first in range(1, 20_001, 50):
        publish_range(cache, first, first + 49)
    assert cache.oldest_rv == 19_900
    assert len(cache) == 100
    replayed = cache.watch("pods", None, 19_900)
    assert replayed.pending() == 100


async def test_overflow_closes_the_watcher_without_blocking_the_writer() -> None:
    cache = WatchCache(queue_size=5)
    publish_range(cache, 1, 1)
    slow = cache.watch("pods", None, None)
    fast = cache.watch("pods", None, None)
    for rv in range(2, 10):
        cache.publish([event(rv)])
        assert await fast.next(0) is not None
    assert slow.closed and slow.closed_reason is not None and "overflow" in slow.closed_reason
    assert slow.pending() == 0  # the queued events are released at once
    with pytest.raises(WatcherClosedError):
        await slow.next(0)
    with pytest.raises(WatcherClosedError):
        await anext(slow)
    assert cache.watcher_count() == 1
    # The client re-watches from the last revision it got, served from the cache.
    again = cache.watch("pods", None, slow.rv)
    assert slow.rv == 1
    assert await drain(again) == list(range(2, 10))


async def test_replay_does_not_count_against_the_live_queue() -> None:
    cache = WatchCache(queue_size=3)
    publish_range(cache, 1, 50)
    watcher = cache.watch("pods", None, 0 + 1)
    publish_range(cache, 51, 53)
    assert not watcher.closed
    assert await drain(watcher) == list(range(2, 54))


async def test_namespace_and_group_resource_filter() -> None:
    cache = WatchCache()
    everywhere = cache.watch("pods", None, None)
    default_only = cache.watch("pods", "default", None)
    configmaps = cache.watch("configmaps", "default", None)
    cache.publish([
        event(1, namespace="default"),
        event(2, namespace="kube-system"),
        event(3, gr="configmaps"),
        event(4, namespace="default"),
    ])
    assert await drain(everywhere) == [1, 2, 4]
    assert await drain(default_only) == [1, 4]
    assert await drain(configmaps) == [3]
    replay = cache.watch("pods", "kube-system", 0 + 1)
    assert await drain(replay) == [2]


async def test_next_times_out_with_none_and_wakes_on_publish() -> None:
    cache = WatchCache()
    watcher = cache.watch("pods", None, None)
    assert await watcher.next(0.01) is None
    waiting = asyncio.create_task(watcher.next(5))
    await asyncio.sleep(0)
    cache.publish([event(1)])
    got = await asyncio.wait_for(waiting, 1)
    assert got is not None and got.rv == 1


async def test_consumer_close_ends_async_for_and_leaves_the_fan_out() -> None:
    cache = WatchCache()
    watcher = cache.watch("pods", None, None)
    cache.publish([event(1), event(2)])
    seen: list[int] = []
    async for got in watcher:
        seen.append(got.rv)
        if got.rv == 2:
            watcher.close()
    assert seen == [1, 2]
    assert cache.watcher_count() == 0
    cache.publish([event(3)])  # nobody to deliver to, nothing raised


async def test_cache_close_wakes_waiters_with_watcher_closed() -> None:
    cache = WatchCache()
    watcher = cache.watch("pods", None, None)
    waiting = asyncio.create_task(watcher.next(5))
    await asyncio.sleep(0)
    cache.close()
    with pytest.raises(WatcherClosedError):
        await asyncio.wait_for(waiting, 1)
    with pytest.raises(WatcherClosedError):
        cache.watch("pods", None, None)


def test_publish_refuses_a_gap_in_revisions() -> None:
    cache = WatchCache()
    publish_range(cache, 1, 2)
    with pytest.raises(ValueError):
        cache.publish([event(4)])


async def test_load_sets_the_resumable_range() -> None:
    cache = WatchCache()
    cache.load([event(rv) for rv in range(11, 21)], oldest_rv=10, current_rv=20)
    assert (cache.oldest_rv, cache.current_rv) == (10, 20)
    assert await drain(cache.watch("pods", None, 17)) == [18, 19, 20]
    with pytest.raises(TooOldError):
        cache.watch("pods", None, 9)
