#!/usr/bin/env python3
"""The control-plane store: create throughput, get latency, list time, watch fan-out latency, RSS at 10k pods.

Each figure is printed beside a baseline measured in the same run:
- creates (8 concurrent writers, ~1 KiB pods, synchronous FULL and NORMAL) beside raw sqlite3
  single-row INSERT+COMMIT in the same WAL/synchronous mode: what durability per write costs
  without group commit;
- get p50/p99 beside a bare dict lookup timed the same way;
- list of 10k beside sorting the 10k keys alone;
- watch event latency p99 (create() called -> each of 100 watchers has the event) beside the same
  fan-out through 100 bare asyncio.Queues (no store, no commit);
- peak RSS of a fresh process that opens a store of 10k ~3 KiB pods, beside a fresh process that
  only imports the same modules.

    .venv/bin/python bench/store.py [--quick]

Last lines, one per figure: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloudcore.controlplane.store.store import Store  # noqa: E402  (after the sys.path line)
from cloudcore.controlplane.store.types import Key  # noqa: E402

WRITERS = 8
WATCHERS = 100
RSS_OBJECTS = 10_000


def pod(name: str, size: int) -> dict[str, Any]:
    """A Pod-shaped object of about `size` bytes of JSON (annotations pad it)."""
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"0b9f7f8e-23c4-4c55-8d3e-{name:>12}",
                     "labels": {"app": "web", "tier": "frontend"}, "annotations": {}},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "web", "image": "docker.io/local/busybox:1.0",
                                                        "args": ["sh", "-c", "sleep 3600"]}]},
        "status": {"phase": "Running", "podIP": "10.0.0.7"},
    }
    annotations = obj["metadata"]["annotations"]
    i = 0
    while len(orjson.dumps(obj)) < size:
        annotations[f"example.com/note-{i}"] = "v" * 40
        i += 1
    return obj


def pod_fields(gr: str, obj: dict[str, Any]) -> dict[str, str]:
    return {"spec.nodeName": obj["spec"].get("nodeName", ""), "status.phase": obj["status"].get("phase", "")}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def raw_sqlite_rate(path: Path, synchronous: str, rows: int, data: bytes) -> float:
    """Baseline: one INSERT + COMMIT per row, same schema and pragmas, no batching."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE log (rv INTEGER PRIMARY KEY, gr TEXT, namespace TEXT, name TEXT,"
                   " deleted INTEGER, data BLOB)")
        db.execute("CREATE INDEX log_key ON log (gr, namespace, name, rv)")
        began = time.perf_counter()
        for rv in range(1, rows + 1):
            db.execute("BEGIN")
            db.execute("INSERT INTO log VALUES (?, 'pods', 'default', ?, 0, ?)", (rv, f"p{rv}", data))
            db.execute("COMMIT")
        return rows / (time.perf_counter() - began)


async def create_rate(path: Path, synchronous: str, creates: int) -> tuple[float, float]:
    """Creates/s with WRITERS concurrent writers, and the mean ops per transaction."""
    store = await Store.open(path, synchronous=synchronous, selectable_fields=pod_fields, compact_every=None)
    template = pod("p", 1024)
    per_writer = creates // WRITERS

    async def writer(w: int) -> None:
        for i in range(per_writer):
            obj = orjson.loads(orjson.dumps(template))  # a dict the caller owns, as the API layer has
            obj["metadata"]["name"] = name = f"w{w}-{i}"
            await store.create(Key("pods", "default", name), obj)

    began = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    elapsed = time.perf_counter() - began
    commits = store.commits
    await store.close()
    return per_writer * WRITERS / elapsed, per_writer * WRITERS / commits


async def fill(path: Path, objects: int, size: int) -> Store:
    store = await Store.open(path, synchronous="NORMAL", selectable_fields=pod_fields, compact_every=None)
    template = orjson.dumps(pod("p", size))
    batch = 512
    for first in range(0, objects, batch):
        creates = []
        for i in range(first, min(objects, first + batch)):
            obj = orjson.loads(template)
            obj["metadata"]["name"] = name = f"p{i:05d}"
            creates.append(store.create(Key("pods", "default", name), obj))
        await asyncio.gather(*creates)
    return store


def get_latency(store: Store, lookups: int) -> tuple[float, float, float, float]:
    """(get p50, get p99, dict p50, dict p99) in milliseconds."""
    keys = [Key("pods", "default", f"p{random.randrange(store.count('pods')):05d}") for _ in range(lookups)]
    plain = {key: object() for key in keys}
    clock = time.perf_counter_ns
    ours: list[float] = []
    baseline: list[float] = []
    for key in keys:
        began = clock()
        store.get(key)
        ours.append((clock() - began) / 1e6)
        began = clock()
        plain.get(key)
        baseline.append((clock() - began) / 1e6)
    return (percentile(ours, 0.5), percentile(ours, 0.99),
            percentile(baseline, 0.5), percentile(baseline, 0.99))


def list_time(store: Store, rounds: int) -> tuple[float, float, int]:
    """(list ms, sort-keys-only ms, objects listed), best of `rounds`."""
    ours = baseline = float("inf")
    listed = 0
    names = {f"p{i:05d}": None for i in range(store.count("pods"))}
    for _ in range(rounds):
        began = time.perf_counter()
        objects, _ = store.list("pods")
        ours = min(ours, time.perf_counter() - began)
        listed = len(objects)
        began = time.perf_counter()
        sorted(names)
        baseline = min(baseline, time.perf_counter() - began)
    return ours * 1e3, baseline * 1e3, listed


async def watch_latency(path: Path, events: int) -> float:
    """p99 ms from calling create() to each of WATCHERS watchers holding the event."""
    store = await Store.open(path, synchronous="FULL", selectable_fields=pod_fields, compact_every=None)
    template = orjson.dumps(pod("p", 1024))
    started: dict[str, float] = {}
    latencies: list[float] = []
    watchers = [store.watch("pods", None, None) for _ in range(WATCHERS)]

    async def consume(index: int) -> None:
        watcher = watchers[index]
        for _ in range(events):
            event = await watcher.next(10.0)
            assert event is not None, "watch stalled"
            latencies.append(time.perf_counter() - started[event.object.key.name])

    consumers = [asyncio.create_task(consume(i)) for i in range(WATCHERS)]
    for i in range(events):
        obj = orjson.loads(template)
        obj["metadata"]["name"] = name = f"w{i}"
        started[name] = time.perf_counter()
        await store.create(Key("pods", "default", name), obj)
        await asyncio.sleep(0.001)  # a steady stream, not one burst
    await asyncio.wait_for(asyncio.gather(*consumers), 30)
    await store.close()
    return percentile(latencies, 0.99) * 1e3


async def queue_latency(events: int) -> float:
    """Baseline: the same fan-out through bare asyncio.Queues, no store and no commit."""
    queues: list[asyncio.Queue[float]] = [asyncio.Queue() for _ in range(WATCHERS)]
    latencies: list[float] = []

    async def consume(queue: asyncio.Queue[float]) -> None:
        for _ in range(events):
            sent = await queue.get()
            latencies.append(time.perf_counter() - sent)

    consumers = [asyncio.create_task(consume(q)) for q in queues]
    for _ in range(events):
        now = time.perf_counter()
        for queue in queues:
            queue.put_nowait(now)
        await asyncio.sleep(0.001)
    await asyncio.wait_for(asyncio.gather(*consumers), 30)
    return percentile(latencies, 0.99) * 1e3


# Run as `store.py --child MODE PATH`: fill writes the 10k-pod file, open loads it, imports does neither.
async def child(mode: str, path: Path) -> None:
    if mode == "fill":
        await (await fill(path, RSS_OBJECTS, 3 * 1024)).close()
        return
    objects, began = 0, time.perf_counter()
    if mode == "open":
        store = await Store.open(path, selectable_fields=pod_fields, compact_every=None)
        objects = store.count("pods")
    opened = time.perf_counter() - began
    print(objects, opened, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if mode == "open":
        await store.close()


def run_child(mode: str, path: Path) -> tuple[int, float, float]:
    """(objects loaded, open seconds, peak RSS MiB) of a fresh interpreter running `child(mode)`.

    Linux keeps ru_maxrss across fork+exec, so a child reports at least this process's RSS at the
    time: these run first, while this process is still small.
    """
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    if not out:
        return 0, 0.0, 0.0
    return int(out[0]), float(out[1]), int(out[2]) / 1024  # ru_maxrss is KiB on Linux


async def main(quick: bool) -> None:
    creates = 8_000 if quick else 40_000
    raw_rows = 2_000 if quick else 10_000
    watch_events = 200 if quick else 1_000
    lookups = 20_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        work = Path(tmp)
        # First, while this process is small (see run_child).
        run_child("fill", work / "10k.db")
        objects, open_s, rss = run_child("open", work / "10k.db")
        _, _, rss_floor = run_child("imports", work / "10k.db")
        json_mib = objects * len(orjson.dumps(pod("p", 3 * 1024))) / 2**20
        print(f"peak RSS of a process with {objects:,} ~3 KiB pods loaded: {rss:.0f} MiB (opened in"
              f" {open_s:.2f} s); interpreter + imports alone: {rss_floor:.0f} MiB; the JSON itself:"
              f" {json_mib:.0f} MiB")

        data = orjson.dumps(pod("p", 1024))
        rates: dict[str, float] = {}
        for synchronous in ("FULL", "NORMAL"):
            raw = raw_sqlite_rate(work / f"raw-{synchronous}.db", synchronous, raw_rows, data)
            ours, per_commit = await create_rate(work / f"create-{synchronous}.db", synchronous, creates)
            rates[synchronous] = ours
            print(f"creates synchronous={synchronous}: {ours:,.0f}/s ({per_commit:.1f} ops per transaction);"
                  f" raw sqlite3 INSERT+COMMIT per row: {raw:,.0f}/s (ours {ours / raw:.1f}x)")

        store = await Store.open(work / "10k.db", selectable_fields=pod_fields, compact_every=None)
        get50, get99, dict50, dict99 = get_latency(store, lookups)
        print(f"get p50 {get50 * 1e3:.2f} us, p99 {get99 * 1e3:.2f} us;"
              f" dict lookup p50 {dict50 * 1e3:.2f} us, p99 {dict99 * 1e3:.2f} us (timer included in both)")
        list_ms, sort_ms, listed = list_time(store, 5 if quick else 20)
        print(f"list of {listed:,} pods: {list_ms:.1f} ms; sorting the names alone: {sort_ms:.1f} ms")
        await store.close()

        watch99 = await watch_latency(work / "watch.db", watch_events)
        queue99 = await queue_latency(watch_events)
        print(f"watch event latency p99, {WATCHERS} watchers, create() -> watcher (FULL commit included):"
              f" {watch99:.2f} ms; bare asyncio.Queue fan-out: {queue99:.2f} ms")

    print(f"creates_full: {rates['FULL']:.0f} creates/s (target >= 5000 creates/s)")
    print(f"creates_normal: {rates['NORMAL']:.0f} creates/s (target >= 5000 creates/s)")
    print(f"get_p99: {get99:.4f} ms (target <= 0.1 ms)")
    print(f"list_10k: {list_ms:.1f} ms (target none)")
    print(f"watch_p99: {watch99:.2f} ms (target <= 20 ms)")
    print(f"rss_10k: {rss:.0f} MB (target <= 150 MB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller runs, under 60 s")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child[0], Path(args.child[1])))
        sys.exit(0)
    asyncio.run(main(args.quick))
