#!/usr/bin/env python3
"""Message encode+decode throughput and module-bus hop latency, each beside a baseline from this run.

Baselines: stdlib `json` dumps+loads of the same wire dict (what a naive codec costs), and one hop
through a plain `asyncio.Queue` (the floor for any asyncio bus).

    .venv/bin/python bench/message_bus.py [--quick]

Last lines, one per figure: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.bus import ModuleBus
from common.message import Message, decode, encode, to_wire_dict


def one_kib_pod() -> dict[str, object]:
    """A Pod-shaped content of 1 KiB when encoded (labels pad it to size)."""
    content: dict[str, object] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default", "uid": "0b9f7f8e-23c4-4c55-8d3e-1f5a6b7c8d9e",
                     "resourceVersion": "48213", "labels": {}},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "web", "image": "docker.io/local/busybox:1.0",
                                                        "args": ["sh", "-c", "sleep 3600"]}]},
    }
    labels: dict[str, str] = content["metadata"]["labels"]  # type: ignore[index]
    i = 0
    while len(json.dumps(content, separators=(",", ":"))) < 1024:
        labels[f"label-{i}"] = f"value-{i}"
        i += 1
    return content


def codec_rate(messages: int) -> tuple[float, float, int]:
    message = Message.new(source="edgecontroller", group="resource", operation="insert",
                          resource="default/pod/web-0", content=one_kib_pod(), resource_version="48213")
    size = len(json.dumps(message.content, separators=(",", ":")))
    for _ in range(1000):  # warm-up
        decode(encode(message))
    began = time.perf_counter()
    for _ in range(messages):
        decode(encode(message))
    ours = messages / (time.perf_counter() - began)
    wire = to_wire_dict(message)
    began = time.perf_counter()
    for _ in range(messages):
        json.loads(json.dumps(wire, separators=(",", ":"), ensure_ascii=False))
    baseline = messages / (time.perf_counter() - began)
    return ours, baseline, size


async def bus_hops(hops: int) -> list[float]:
    bus = ModuleBus()
    bus.register("sender", "a")
    bus.register("receiver", "b")
    sent_at = 0
    latencies: list[float] = []

    async def receiver() -> None:
        while True:
            message = await bus.receive("receiver")
            latencies.append((time.perf_counter_ns() - sent_at) / 1000)
            await bus.send("sender", message)

    task = asyncio.create_task(receiver())
    message = Message.new(source="bench", group="b", operation="insert", resource="default/pod/x")
    for _ in range(hops):
        sent_at = time.perf_counter_ns()
        await bus.send("receiver", message)
        await bus.receive("sender")
    task.cancel()
    return latencies


async def queue_hops(hops: int) -> list[float]:
    forward: asyncio.Queue[float] = asyncio.Queue(1024)
    back: asyncio.Queue[float] = asyncio.Queue(1024)
    latencies: list[float] = []

    async def receiver() -> None:
        while True:
            sent_at = await forward.get()
            latencies.append((time.perf_counter_ns() - sent_at) / 1000)
            back.put_nowait(sent_at)

    task = asyncio.create_task(receiver())
    for _ in range(hops):
        forward.put_nowait(time.perf_counter_ns())
        await back.get()
    task.cancel()
    return latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, well under 60 s")
    args = parser.parse_args()
    messages, hops = (30_000, 20_000) if args.quick else (200_000, 200_000)

    ours, baseline, size = codec_rate(messages)
    print(f"codec: {messages} messages, content {size} B; ours {ours:,.0f}/s, stdlib json baseline "
          f"{baseline:,.0f}/s, ratio {ours / baseline:.2f}x")
    bus = asyncio.run(bus_hops(hops))
    queue = asyncio.run(queue_hops(hops))
    for name, values in (("module bus", bus), ("asyncio.Queue baseline", queue)):
        print(f"{name}: {hops} hops, p50 {percentile(values, 50):.1f} us, "
              f"p99 {percentile(values, 99):.1f} us, max {max(values):.0f} us")
    print(f"message_encode_decode_1kib: {ours:,.0f} msgs/s (target >= 100,000)")
    print(f"bus_hop_latency_p50: {percentile(bus, 50):.1f} us (target <= 100)")
    print(f"bus_hop_latency_p99: {percentile(bus, 99):.1f} us (target <= 100)")


if __name__ == "__main__":
    main()
