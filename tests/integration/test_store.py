"""The store on real SQLite files: CRUD, preconditions, snapshots, restarts, watch resume, compaction,
group commit and shutdown."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from cloudcore.controlplane.store import store as store_module
from cloudcore.controlplane.store.store import Store
from cloudcore.controlplane.store.types import (
    AlreadyExistsError,
    ConflictError,
    EventType,
    Key,
    NotFoundError,
    StoreError,
    TooOldError,
    WatcherClosedError,
    WatchEvent,
)
from cloudcore.controlplane.store.watch import Watcher


def pod(name: str, namespace: str = "default", *, uid: str = "", node: str = "",
        **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{namespace}-{name}",
                         "labels": dict(labels)},
            "spec": {"nodeName": node}, "status": {"phase": "Pending"}}


def pod_key(name: str, namespace: str = "default") -> Key:
    return Key("pods", namespace, name)


def pod_fields(gr: str, obj: dict[str, Any]) -> dict[str, str]:
    if gr != "pods":
        return {}
    return {"spec.nodeName": obj["spec"].get("nodeName", ""), "status.phase": obj["status"].get("phase", "")}


@pytest.fixture
async def store(sqlite_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(sqlite_path, selectable_fields=pod_fields, compact_every=None)
    yield opened
    await opened.close()


async def drain(watcher: Watcher) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    while (event := await watcher.next(0)) is not None:
        events.append(event)
    return events


def log_rows(path: Path) -> list[tuple[int, str, int]]:
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT rv, name, deleted FROM log ORDER BY rv").fetchall()
    return [(rv, name, deleted) for rv, name, deleted in rows]


async def test_create_get_update_delete_round_trip(store: Store) -> None:
    obj = pod("web", node="n1", app="web")
    created = await store.create(pod_key("web"), obj)
    assert created.rv == 1 == store.current_rv
    assert obj["metadata"]["resourceVersion"] == "1"  # stamped on the caller's dict
    assert created.decode() == obj
    assert created.uid == "uid-default-web"
    assert created.labels == {"app": "web"}
    assert created.fields == {"metadata.name": "web", "metadata.namespace": "default",
                              "spec.nodeName": "n1", "status.phase": "Pending"}
    assert store.get(pod_key("web")) is created

    obj["status"]["phase"] = "Running"
    updated = await store.update(pod_key("web"), obj, expected_rv=1)
    assert updated.rv == 2
    assert updated.fields["status.phase"] == "Running"
    assert created.labels == {"app": "web"}  # older snapshots are not touched

    deleted = await store.delete(pod_key("web"), expected_rv=2, expected_uid="uid-default-web")
    assert deleted.rv == 3
    assert deleted.decode()["metadata"]["resourceVersion"] == "3"
    assert deleted.decode()["status"]["phase"] == "Running"
    assert store.get(pod_key("web")) is None
    assert store.count("pods") == 0


async def test_failed_preconditions_raise_and_take_no_revision(store: Store) -> None:
    await store.create(pod_key("a"), pod("a"))
    with pytest.raises(AlreadyExistsError):
        await store.create(pod_key("a"), pod("a"))
    with pytest.raises(NotFoundError):
        await store.update(pod_key("missing"), pod("missing"))
    with pytest.raises(NotFoundError):
        await store.delete(pod_key("missing"))
    with pytest.raises(ConflictError):
        await store.update(pod_key("a"), pod("a"), expected_rv=7)
    with pytest.raises(ConflictError):
        await store.delete(pod_key("a"), expected_rv=7)
    with pytest.raises(ConflictError):
        await store.delete(pod_key("a"), expected_uid="someone-else")
    assert store.current_rv == 1
    assert (await store.create(pod_key("b"), pod("b"))).rv == 2


async def test_list_is_a_sorted_snapshot_with_its_revision(store: Store) -> None:
    for namespace, name in [("b", "y"), ("a", "z"), ("b", "x"), ("a", "a")]:
        await store.create(pod_key(name, namespace), pod(name, namespace))
    await store.create(Key("configmaps", "a", "c"), {"metadata": {"name": "c", "namespace": "a"}})
    objects, rv = store.list("pods")
    listed = [(o.key.namespace, o.key.name) for o in objects]
    assert listed == [("a", "a"), ("a", "z"), ("b", "x"), ("b", "y")]
    assert rv == store.current_rv == 5
    in_b, _ = store.list("pods", "b")
    assert [o.key.name for o in in_b] == ["x", "y"]
    assert store.list("pods", "nowhere") == ([], 5)
    assert store.list("services") == ([], 5)
    assert store.count("pods") == 4 and store.count("configmaps") == 1


async def test_memory_never_shows_what_is_not_in_the_file(store: Store, sqlite_path: Path) -> None:
    keys = [pod_key(f"p{i}") for i in range(300)]
    writes = [asyncio.create_task(store.create(key, pod(key.name))) for key in keys]
    reader = sqlite3.connect(sqlite_path)
    try:
        while not all(write.done() for write in writes):
            objects, rv = store.list("pods")
            if objects:
                (durable_rv,) = reader.execute("SELECT max(rv) FROM log").fetchone()
                assert durable_rv >= rv == max(o.rv for o in objects)
            await asyncio.sleep(0)
    finally:
        reader.close()
    await asyncio.gather(*writes)
    assert store.count("pods") == 300


async def test_revisions_survive_reopen_even_when_compaction_removed_the_newest_row(
        sqlite_path: Path) -> None:
    store = await Store.open(sqlite_path, compact_every=None)
    await store.create(pod_key("a"), pod("a"))
    await store.create(pod_key("b"), pod("b"))
    await store.delete(pod_key("b"))
    await store.compact(0)  # the newest row, b's tombstone, is deleted
    assert store.oldest_rv == 3
    await store.close()
    assert [rv for rv, _, _ in log_rows(sqlite_path)] == [1]

    store = await Store.open(sqlite_path, compact_every=None)
    try:
        assert (store.current_rv, store.oldest_rv) == (3, 3)
        assert (await store.create(pod_key("c"), pod("c"))).rv == 4
        assert store.get(pod_key("a")) is not None and store.get(pod_key("b")) is None
    finally:
        await store.close()


async def churn(store: Store, rounds: int) -> None:
    """Creates, updates and deletes over a few names and namespaces."""
    for i in range(rounds):
        for namespace in ("default", "kube-system"):
            name = f"p{i % 5}"
            key = pod_key(name, namespace)
            current = store.get(key)
            if current is None:
                await store.create(key, pod(name, namespace, round=str(i)))
            elif i % 3 == 0:
                await store.delete(key, expected_rv=current.rv)
            else:
                await store.update(key, pod(name, namespace, round=str(i)), expected_rv=current.rv)


async def test_watch_resumes_after_reopen_from_the_reloaded_history(sqlite_path: Path) -> None:
    store = await Store.open(sqlite_path, compact_every=None)
    live = store.watch("pods", None, None)
    await churn(store, 40)
    recorded = await drain(live)
    assert [e.rv for e in recorded] == list(range(1, store.current_rv + 1))
    await store.close()

    store = await Store.open(sqlite_path, compact_every=None)
    try:
        for since in (0 + 1, 17, len(recorded) - 1, len(recorded)):
            resumed = await drain(store.watch("pods", None, since))
            assert resumed == recorded[since:]
        in_default = await drain(store.watch("pods", "default", 10))
        assert in_default == [e for e in recorded[10:] if e.object.key.namespace == "default"]
        # Resumed, then live, with no gap at the boundary.
        watcher = store.watch("pods", None, store.current_rv - 3)
        await churn(store, 3)
        assert [e.rv for e in await drain(watcher)] == list(range(len(recorded) - 2, store.current_rv + 1))
    finally:
        await store.close()


async def test_compaction_floor_refuses_older_resumes_and_keeps_the_state(
        sqlite_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "COMPACT_STEP", 7)  # several compaction transactions
    store = await Store.open(sqlite_path, compact_every=None)
    live = store.watch("pods", None, None)
    await churn(store, 60)
    recorded = await drain(live)
    expected_state = {o.key: o for o in store.list("pods")[0]}
    floor = await store.compact(10)
    assert floor == store.current_rv - 10 == store.oldest_rv
    with pytest.raises(TooOldError):
        store.watch("pods", None, floor - 1)
    assert await drain(store.watch("pods", None, floor)) == recorded[floor:]
    await store.close()

    # Only the latest row per key at or below the floor is left there (tombstones not even that).
    rows = log_rows(sqlite_path)
    below = [(name, deleted) for rv, name, deleted in rows if rv <= floor]
    assert all(not deleted for _, deleted in below)
    assert [rv for rv, _, _ in rows if rv > floor] == list(range(floor + 1, len(recorded) + 1))

    store = await Store.open(sqlite_path, compact_every=None)
    try:
        assert store.oldest_rv == floor
        assert {o.key: o for o in store.list("pods")[0]} == expected_state
        with pytest.raises(TooOldError):
            store.watch("pods", None, floor - 1)
        # Event types survive compaction: an update right above the floor is still MODIFIED.
        assert await drain(store.watch("pods", None, floor)) == recorded[floor:]
    finally:
        await store.close()


async def test_periodic_compaction_keeps_the_history_size(sqlite_path: Path) -> None:
    store = await Store.open(sqlite_path, history=20, compact_every=0.02)
    try:
        await churn(store, 50)
        async with asyncio.timeout(5):
            while store.oldest_rv < store.current_rv - 20:  # noqa: ASYNC110 (the store has no event for it)
                await asyncio.sleep(0.01)
        assert store.oldest_rv == store.current_rv - 20
    finally:
        await store.close()


async def test_group_commit_batches_concurrent_writes(store: Store) -> None:
    created = await asyncio.gather(*(store.create(pod_key(f"p{i}"), pod(f"p{i}")) for i in range(1000)))
    assert sorted(o.rv for o in created) == list(range(1, 1001))
    assert store.commits <= 10, store.commits
    assert store.count("pods") == 1000


async def test_a_failed_precondition_inside_a_batch_leaves_the_others_alone(store: Store) -> None:
    await store.create(pod_key("exists"), pod("exists"))
    results = await asyncio.gather(
        store.create(pod_key("a"), pod("a")),
        store.create(pod_key("exists"), pod("exists")),
        store.update(pod_key("a"), pod("a", phase="second")),  # sees the create of the same batch
        store.create(pod_key("a"), pod("a")),  # ... and so does this one
        store.delete(pod_key("gone")),
        store.create(pod_key("b"), pod("b")),
        return_exceptions=True,
    )
    assert store.commits == 2
    assert [type(r).__name__ if isinstance(r, BaseException) else r.rv for r in results] == [
        2, "AlreadyExistsError", 3, "AlreadyExistsError", "NotFoundError", 4]
    a = store.get(pod_key("a"))
    assert a is not None and a.rv == 3 and a.labels == {"phase": "second"}


async def test_concurrent_updates_with_the_same_expected_revision_have_one_winner(store: Store) -> None:
    base = await store.create(pod_key("a"), pod("a"))
    results = await asyncio.gather(
        *(store.update(pod_key("a"), pod("a", writer=str(i)), expected_rv=base.rv) for i in range(20)),
        return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if r is not winners[0])
    assert store.get(pod_key("a")) == winners[0]


async def test_watchers_get_each_committed_batch_in_order(store: Store) -> None:
    watcher = store.watch("pods", "default", None)
    other = store.watch("pods", "other", None)
    await asyncio.gather(*(store.create(pod_key(f"p{i}"), pod(f"p{i}")) for i in range(50)))
    await store.delete(pod_key("p0"))
    events = await drain(watcher)
    assert [e.rv for e in events] == list(range(1, 52))
    assert {e.type for e in events[:50]} == {EventType.ADDED}
    assert events[-1].type is EventType.DELETED
    assert await drain(other) == []


async def test_a_failed_commit_fails_the_batch_and_leaves_memory_untouched(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    await store.create(pod_key("a"), pod("a"))
    watcher = store.watch("pods", None, None)
    real_append = store._log.append

    async def failing_append(rows: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store._log, "append", failing_append)
    results = await asyncio.gather(store.create(pod_key("b"), pod("b")),
                                   store.update(pod_key("a"), pod("a", changed="yes")),
                                   return_exceptions=True)
    assert all(isinstance(r, StoreError) and isinstance(r.__cause__, sqlite3.OperationalError)
               for r in results)
    assert store.current_rv == 1 and store.get(pod_key("b")) is None
    unchanged = store.get(pod_key("a"))
    assert unchanged is not None and unchanged.labels == {}
    assert await drain(watcher) == []

    monkeypatch.setattr(store._log, "append", real_append)
    assert (await store.create(pod_key("b"), pod("b"))).rv == 2


async def test_close_finishes_queued_writes_then_refuses_new_ones(sqlite_path: Path) -> None:
    store = await Store.open(sqlite_path, compact_every=None)
    watcher = store.watch("pods", None, None)
    writes = [asyncio.create_task(store.create(pod_key(f"p{i}"), pod(f"p{i}"))) for i in range(2000)]
    await asyncio.sleep(0)  # all enqueued, the first batch taken: the rest are still queued
    async with asyncio.timeout(10):
        await store.close()
    assert store.commits >= 4
    assert all(write.done() and write.exception() is None for write in writes)
    with pytest.raises(StoreError):
        await store.create(pod_key("late"), pod("late"))
    with pytest.raises(WatcherClosedError):
        await watcher.next(0)

    store = await Store.open(sqlite_path, compact_every=None)
    try:
        assert store.count("pods") == 2000 and store.current_rv == 2000
    finally:
        await store.close()


async def test_close_refuses_writers_still_waiting_for_room(sqlite_path: Path) -> None:
    store = await Store.open(sqlite_path, max_pending=10, compact_every=None)
    writes = [asyncio.create_task(store.create(pod_key(f"p{i}"), pod(f"p{i}"))) for i in range(30)]
    await asyncio.sleep(0)  # ten enqueued, twenty waiting for room
    async with asyncio.timeout(10):
        await store.close()
    outcomes = [write.exception() for write in writes]
    assert outcomes.count(None) == 10
    assert all(isinstance(outcome, StoreError) for outcome in outcomes if outcome is not None)


async def test_writers_wait_for_room_in_a_full_queue(sqlite_path: Path) -> None:
    store = await Store.open(sqlite_path, max_pending=4, max_batch=2, compact_every=None)
    try:
        created = await asyncio.gather(*(store.create(pod_key(f"p{i}"), pod(f"p{i}")) for i in range(50)))
        assert sorted(o.rv for o in created) == list(range(1, 51))
        assert store.commits >= 25
    finally:
        await store.close()


async def test_open_rejects_an_unknown_synchronous_mode(sqlite_path: Path) -> None:
    with pytest.raises(ValueError):
        await Store.open(sqlite_path, synchronous="OFF")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_churn_with_compactions_reloads_the_same_state_and_history(
        sqlite_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setattr(store_module, "COMPACT_STEP", 5)
    rng = random.Random(seed)
    store = await Store.open(sqlite_path, compact_every=None)
    live = store.watch("pods", None, None)
    try:
        for _ in range(400):
            name = f"p{rng.randrange(8)}"
            current = store.get(pod_key(name))
            if current is None:
                await store.create(pod_key(name), pod(name, step=str(rng.random())))
            elif rng.random() < 0.3:
                await store.delete(pod_key(name))
            else:
                await store.update(pod_key(name), pod(name, step=str(rng.random())))
            if rng.random() < 0.05:
                await store.compact(rng.randrange(40))
        floor = await store.compact(25)
        recorded = await drain(live)
        state = store.list("pods")
    finally:
        await store.close()

    store = await Store.open(sqlite_path, compact_every=None)
    try:
        assert store.list("pods") == state
        assert store.oldest_rv == floor
        assert await drain(store.watch("pods", None, floor)) == recorded[floor:]
    finally:
        await store.close()
