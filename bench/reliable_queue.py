#!/usr/bin/env python3
"""CloudHub's per-node reliable queue: enqueue+send+ack throughput and memory per pending entry.

One `NodeQueue` on a fake clock, no I/O, 1 KiB Pod messages built beforehand (building them is the
producer's cost, not the queue's). One operation = one message enqueued, written and ACKed, in
batches of 100 distinct keys. The object size is supplied by the caller, as the informer knows it;
the default `size_of` (one encode per enqueue) is measured too. Baseline, same run: a plain
`collections.OrderedDict` latest-per-key queue (replace in place, pop oldest) with no ACK tracking.

Memory: tracemalloc over 10,000 pending entries, messages built before measuring, so the figure is
what the queue adds beyond the messages themselves.

    .venv/bin/python bench/reliable_queue.py [--quick]

Last lines, one per figure: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.message import Message, new_msg_id
from common.reliable import NodeQueue, encoded_size

BATCH = 100
MESSAGE_SIZE = 1024


def one_kib_pod() -> dict[str, object]:
    """A Pod-shaped content of 1 KiB when encoded (labels pad it to size)."""
    content: dict[str, object] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default", "uid": "0b9f7f8e-23c4-4c55-8d3e-1f5a6b7c8d9e",
                     "resourceVersion": "48213", "labels": {}},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "web", "image": "docker.io/local/busybox:1.0"}]},
    }
    labels: dict[str, str] = content["metadata"]["labels"]  # type: ignore[index]
    i = 0
    while len(json.dumps(content, separators=(",", ":"))) < MESSAGE_SIZE:
        labels[f"label-{i}"] = f"value-{i}"
        i += 1
    return content


def messages(count: int, keys: list[str], *, distinct_content: bool) -> list[Message]:
    template = one_kib_pod()
    built = []
    for i in range(count):
        content = copy.deepcopy(template) if distinct_content else template
        built.append(Message.new(source="edgecontroller", group="resource", operation="update",
                                 resource=keys[i % len(keys)], content=content, resource_version=str(i + 1)))
    return built


def queue_rate(batch_messages: list[Message], rounds: int, size_of: Callable[[Message], int]) -> float:
    """Enqueue, write and ACK `rounds` batches; each round the same messages get fresh ids and RVs.

    Only the queue's work is timed: each round's messages are built before its clock starts.
    """
    queue = NodeQueue(resolve=lambda key: None, size_of=size_of)
    now = 0.0
    rv = 0
    elapsed = 0.0
    for _ in range(rounds):
        batch = [m._replace(header=m.header._replace(msg_id=new_msg_id())) for m in batch_messages]
        began = time.perf_counter()
        for message in batch:
            rv += 1
            queue.enqueue(message.route.resource, message, rv=rv, delete=False)
        while (out := queue.next_message(now)) is not None:
            queue.ack(out.message.header.msg_id, now)
        elapsed += time.perf_counter() - began
    assert queue.stats.acked == rounds * len(batch_messages), queue.stats
    return rounds * len(batch_messages) / elapsed


def baseline_rate(batch_messages: list[Message], rounds: int) -> float:
    queue: OrderedDict[str, Message] = OrderedDict()
    began = time.perf_counter()
    for _ in range(rounds):
        for message in batch_messages:
            queue[message.route.resource] = message
        while queue:
            queue.popitem(last=False)
    return rounds * len(batch_messages) / (time.perf_counter() - began)


def traced_bytes(fill: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated by `fill` (its result kept alive), per tracemalloc."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = fill()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


def pending_memory(count: int) -> tuple[int, int, int]:
    """(messages, queue overhead, baseline overhead) in bytes for `count` pending entries."""
    keys = [f"default/pod/web-{i}" for i in range(count)]
    message_bytes, pending = traced_bytes(lambda: messages(count, keys, distinct_content=True))
    assert isinstance(pending, list)

    def fill_queue() -> NodeQueue:
        queue = NodeQueue(resolve=lambda key: None, size_of=lambda message: MESSAGE_SIZE)
        for rv, message in enumerate(pending, 1):
            queue.enqueue(message.route.resource, message, rv=rv, delete=False)
        return queue

    def fill_baseline() -> OrderedDict[str, Message]:
        return OrderedDict((message.route.resource, message) for message in pending)

    ours, _ = traced_bytes(fill_queue)
    baseline, _ = traced_bytes(fill_baseline)
    return message_bytes, ours, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, well under 60 s")
    args = parser.parse_args()
    rounds = 1_000 if args.quick else 10_000
    keys = [f"default/pod/web-{i}" for i in range(BATCH)]
    batch = messages(BATCH, keys, distinct_content=False)
    queue_rate(batch, 50, lambda message: MESSAGE_SIZE)  # warm-up

    ours = max(queue_rate(batch, rounds, lambda message: MESSAGE_SIZE) for _ in range(3))
    with_encode = queue_rate(batch, max(rounds // 10, 100), encoded_size)
    baseline = max(baseline_rate(batch, rounds) for _ in range(3))
    operations = rounds * BATCH
    print(f"throughput: {operations:,} x (enqueue + send + ack) of 1 KiB messages, batches of {BATCH}")
    print(f"  NodeQueue, caller-supplied size: {ours:,.0f} ops/s")
    print(f"  NodeQueue, default size_of (encode per enqueue): {with_encode:,.0f} ops/s")
    print(f"  OrderedDict latest-per-key baseline (no ACKs): {baseline:,.0f} ops/s "
          f"(NodeQueue at {ours / baseline:.0%} of it)")

    count = 10_000
    message_bytes, queue_bytes, baseline_bytes = pending_memory(count)
    mib = 1024 * 1024
    print(f"memory for {count:,} pending entries: messages {message_bytes / mib:.1f} MiB; "
          f"NodeQueue adds {queue_bytes / mib:.2f} MiB ({queue_bytes / count:.0f} B/entry), "
          f"OrderedDict baseline adds {baseline_bytes / mib:.2f} MiB ({baseline_bytes / count:.0f} B/entry)")
    print(f"reliable_queue_enqueue_send_ack: {ours:,.0f} ops/s (target >= 100,000)")
    print(f"reliable_queue_overhead_per_pending_entry: {queue_bytes / count:,.0f} B (target <= 2,048)")


if __name__ == "__main__":
    main()
