#!/usr/bin/env python3
"""Cloud-to-edge delivery over one WebSocket connection with mutual TLS on loopback, every message ACKed.

The cloud side is this process: common.transport's listener and a common.reliable NodeQueue pumped
like CloudHub's session (window 128, resend after 5 s). The edge is a second process that answers every
message with its ACK (a `response` whose parent_msg_id is the message's id), as metamanager does after
storing. Baseline in the same run: a bare `websockets` server sending the same 1 KiB frames to a client
that echoes each one back (no TLS difference: both use the same TLS contexts).

Fan-out (bench/fanout.py, run here in its own cloud process): 1,000 edge connections (200 with --quick)
from one edge process on the real CloudHubModule with a real embedded control plane; RSS per idle
connection, time until one update reaches every node (and until every ACK is back), connect time.

    .venv/bin/python bench/channel.py [--quick]

Last lines: `name: value unit (target T)`. QUIC comes with issue 5's QUIC work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.message import Message, encode
from common.pki import create_ca, issue_client_cert, issue_server_cert
from common.reliable import NodeQueue
from common.reliable.nodequeue import DEFAULT_MAX_ENTRIES
from common.transport import Connection, serve_nodes, server_tls

ROOT = Path(__file__).resolve().parents[1]

EDGE = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from common.transport import client_tls, dial
    async def main(port, certs, mode):
        tls = client_tls(Path(certs, "ca.crt"), Path(certs, "edge.crt"), Path(certs, "edge.key"))
        if mode == "ack":
            connection = await dial(f"127.0.0.1:{port}", "edge-1", "e632aba927ea4ac2b575ec1603d56f10", tls)
            while True:
                message = await connection.recv()
                await connection.send(message.response("OK"))
        from websockets.asyncio.client import connect
        async with connect(f"wss://127.0.0.1:{port}/", ssl=tls, compression=None, ping_interval=None) as ws:
            async for frame in ws:
                await ws.send(frame)
    try:
        asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
    except Exception:
        pass
""")


def pod(i: int) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "default",
                                                           "resourceVersion": str(i + 1)},
            "spec": {"containers": [{"name": "c", "image": "docker.io/local/busybox:1.0",
                                     "env": [{"name": f"V{j}", "value": "x" * 40} for j in range(14)]}]}}


def make_certs(directory: Path) -> None:
    ca = create_ca()
    ca.write(directory / "ca.crt", directory / "ca.key")
    issue_server_cert(ca, ip_addresses=["127.0.0.1"]).write(directory / "server.crt", directory / "server.key")
    issue_client_cert(ca, "edge-1").write(directory / "edge.crt", directory / "edge.key")


def start_edge(port: int, certs: Path, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", EDGE, str(port), str(certs), mode], cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT)})


async def acked_delivery(certs: Path, count: int) -> tuple[float, list[float]]:
    """Messages/s until all are ACKed, and per-message latency enqueue -> ACK (ms)."""
    # Every message stays held: beyond max_entries (10,000 by default) the queue would keep only key markers
    # for `resolve` (an informer cache in CloudHub) to fill in, and this bench has no cache to resolve from.
    queue = NodeQueue(resolve=lambda key: None, max_entries=max(count, DEFAULT_MAX_ENTRIES))
    enqueued_at: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    wakeup = asyncio.Event()

    async def session(connection: Connection) -> None:
        async def writer() -> None:
            while True:
                outgoing = queue.next_message(time.monotonic())
                if outgoing is None:
                    wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wakeup.wait(), 1.0)
                    continue
                await connection.send(outgoing.message)

        async def reader() -> None:
            while len(latencies) < count:
                reply = await connection.recv()
                if queue.ack(reply.parent_msg_id, time.monotonic()) is not None:
                    latencies.append((time.perf_counter() - enqueued_at[reply.parent_msg_id]) * 1000)
                    wakeup.set()
            done.set()

        writing = asyncio.create_task(writer())
        try:
            await reader()
        finally:
            writing.cancel()

    server = await serve_nodes(session, "127.0.0.1", 0, server_tls(certs / "ca.crt", certs / "server.crt",
                                                                   certs / "server.key"))
    port = server.sockets[0].getsockname()[1]
    edge = start_edge(port, certs, "ack")
    try:
        await asyncio.sleep(1.0)  # let the edge connect
        began = time.perf_counter()
        for i in range(count):
            message = Message.new(source="edgecontroller", group="resource", operation="update",
                                  resource=f"default/pod/p{i}", content=pod(i), resource_version=str(i + 1))
            enqueued_at[message.msg_id] = time.perf_counter()
            queue.enqueue(f"default/pod/p{i}", message, rv=i + 1, delete=False)
        wakeup.set()
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - began
    finally:
        edge.terminate()
        edge.wait(10)
        server.close()
        await server.wait_closed()
    return count / elapsed, latencies


async def unloaded_latency(certs: Path) -> list[float]:
    """Enqueue -> ACK round trip (ms) of a lone message, three times (one fresh connection each)."""
    results: list[float] = []
    for _ in range(3):
        _, latencies = await acked_delivery(certs, 1)
        results += latencies
    return results


async def echo_baseline(certs: Path, count: int, payload: str) -> float:
    done = asyncio.Event()

    async def handler(websocket: ServerConnection) -> None:
        async def send_all() -> None:
            for _ in range(count):
                await websocket.send(payload)

        sending = asyncio.create_task(send_all())
        received = 0
        async for _ in websocket:
            received += 1
            if received == count:
                done.set()
                break
        await sending

    tls = server_tls(certs / "ca.crt", certs / "server.crt", certs / "server.key")
    server = await serve(handler, "127.0.0.1", 0, ssl=tls, compression=None, ping_interval=None, max_size=None)
    port = server.sockets[0].getsockname()[1]
    began = time.perf_counter()
    edge = start_edge(port, certs, "echo")
    try:
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - began
    finally:
        edge.terminate()
        edge.wait(10)
        server.close()
        await server.wait_closed()
    return count / elapsed


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def main_async(quick: bool) -> list[str]:
    count = 5_000 if quick else 30_000
    with tempfile.TemporaryDirectory(prefix="channel-bench-") as directory:
        certs = Path(directory)
        make_certs(certs)
        rate, latencies = await acked_delivery(certs, count)
        payload_size = len(Message.new(source="edgecontroller", group="resource", operation="update",
                                       resource="default/pod/p0", content=pod(0)).content_bytes())
        sample = Message.new(source="edgecontroller", group="resource", operation="update",
                             resource="default/pod/p0", content=pod(0), resource_version="1")
        baseline = await echo_baseline(certs, count, encode(sample).decode())
        unloaded = await unloaded_latency(certs)
    print(f"acked delivery: {count} messages (content {payload_size} B) on one connection: {rate:,.0f}/s; "
          f"bare websockets echo of the same frames: {baseline:,.0f}/s (ours {rate / baseline:.0%} of it)")
    print(f"latency under load (enqueue -> ACK): p50 {percentile(latencies, 50):.1f} ms, "
          f"p99 {percentile(latencies, 99):.1f} ms; unloaded: {statistics.median(unloaded):.2f} ms")
    return [f"channel_ws_acked_msgs_per_s: {rate:,.0f} msgs/s (target >= 5,000)",
            f"channel_ws_vs_bare_echo: {rate / baseline:.2f} ratio (target none)",
            f"channel_ws_unloaded_latency: {statistics.median(unloaded):.2f} ms (target p99 <= 20)"]


def fan_out(quick: bool) -> list[str]:
    """bench/fanout.py as the cloud process (a fresh one, so its RSS is CloudHub's alone): prints its info
    lines, returns its figure lines."""
    result = subprocess.run([sys.executable, str(ROOT / "bench/fanout.py"), *(["--quick"] if quick else [])],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise SystemExit(f"bench/fanout.py failed ({result.returncode}):\n{result.stdout[-3000:]}")
    lines = result.stdout.splitlines()
    figures = [line for line in lines if line.startswith("fanout_")]
    for line in lines:
        if line not in figures:
            print(line)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 messages, 200 fan-out connections: under 60 s")
    args = parser.parse_args()
    figures = asyncio.run(main_async(args.quick))
    figures += fan_out(args.quick)
    for line in figures:
        print(line)


if __name__ == "__main__":
    main()
