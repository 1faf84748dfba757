#!/usr/bin/env python3
"""Cloud-to-edge delivery over WebSocket (common.transport) and QUIC (common.quic), mutual TLS on loopback,
every message ACKed.

Three kinds of process on one machine:

- the cloud process (this script): the transport's node listener (`serve_nodes`, which also sets the
  process-wide 64 KiB TLS read buffers, or `serve_nodes_quic`) and a common.reliable NodeQueue pumped like
  CloudHub's session (window 128, resend after 5 s), 1 KiB Pod contents. The queue is built with room for
  every message of the burst (NodeQueue keeps content for 10,000 entries by default and would leave key
  markers for an informer cache to resolve, which this bench does not have);
- the edge process (a fresh one per connection, the EDGE script below): dials with `dial` or `dial_quic`
  and its node certificate, and answers every message with its ACK, `message.response("OK")` (a `response`
  whose parent_msg_id is the message's id), as metamanager does after storing. For the baseline it is a
  bare `websockets` client instead that echoes every frame back;
- the fan-out (bench/fanout.py, run last as its own cloud process, so that its RSS is CloudHub's alone,
  with its own edge process and embedded control plane): 1,000 edge connections (200 with --quick) on
  the real CloudHubModule; RSS per idle connection, time until one update reaches every node (and until
  every ACK is back), connect time.

Per transport, on one connection: latency first, ping-pong (enqueue one message, wait until its ACK is
back at the queue, then the next; 1,000 rounds, 300 with --quick, after 20 warm-up rounds), then
throughput, a burst of 30,000 messages (5,000 with --quick) enqueued at once and timed until the last ACK.
WebSocket only: the baseline in the same run, a bare `websockets` server sending the same frames (whole
encoded messages) to a client that echoes each one back (same TLS contexts, same 64 KiB TLS read buffers),
and the unloaded latency, one message on a fresh connection (median of 3).

    .venv/bin/python bench/channel.py [--quick]

Last lines: `name: value unit (target T)`.
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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.message import Message, encode
from common.pki import create_ca, issue_client_cert, issue_server_cert, load_cert, load_key_pair
from common.quic import serve_nodes_quic
from common.reliable import NodeQueue
from common.reliable.nodequeue import DEFAULT_MAX_ENTRIES, DEFAULT_WINDOW
from common.transport import NodeConnection, serve_nodes, server_tls

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 20  # ping-pong rounds before the timed ones

EDGE = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    async def main(port, certs, mode):
        ca, cert, key = Path(certs, "ca.crt"), Path(certs, "edge.crt"), Path(certs, "edge.key")
        if mode == "echo":
            from common.transport import client_tls
            from websockets.asyncio.client import connect
            async with connect(f"wss://127.0.0.1:{port}/", ssl=client_tls(ca, cert, key), compression=None,
                               ping_interval=None) as ws:
                async for frame in ws:
                    await ws.send(frame)
            return
        if mode == "quic":
            from common.quic import dial_quic
            connection = await dial_quic(f"127.0.0.1:{port}", "edge-1", "e632aba927ea4ac2b575ec1603d56f10",
                                         ca, cert, key)
        else:
            from common.transport import client_tls, dial
            connection = await dial(f"127.0.0.1:{port}", "edge-1", "e632aba927ea4ac2b575ec1603d56f10",
                                    client_tls(ca, cert, key))
        while True:
            message = await connection.recv()
            await connection.send(message.response("OK"))
    try:
        asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
    except Exception:
        pass
""")

Session = Callable[[NodeConnection], Awaitable[None]]


def pod(i: int) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "default",
                                                           "resourceVersion": str(i + 1)},
            "spec": {"containers": [{"name": "c", "image": "docker.io/local/busybox:1.0",
                                     "env": [{"name": f"V{j}", "value": "x" * 40} for j in range(14)]}]}}


def pod_message(i: int) -> Message:
    return Message.new(source="edgecontroller", group="resource", operation="update", resource=f"default/pod/p{i}",
                       content=pod(i), resource_version=str(i + 1))


def make_certs(directory: Path) -> None:
    ca = create_ca()
    ca.write(directory / "ca.crt", directory / "ca.key")
    issue_server_cert(ca, ip_addresses=["127.0.0.1"]).write(directory / "server.crt", directory / "server.key")
    issue_client_cert(ca, "edge-1").write(directory / "edge.crt", directory / "edge.key")


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


@contextlib.asynccontextmanager
async def edge_process(mode: str, port: int, certs: Path) -> AsyncIterator[None]:
    """The edge side in a second process: `ws` or `quic` (ACKs every message) or `echo` (bare websockets)."""
    edge = await asyncio.create_subprocess_exec(sys.executable, "-c", EDGE, str(port), str(certs), mode, cwd=ROOT,
                                                env={"PYTHONPATH": str(ROOT)})
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            edge.terminate()
        await asyncio.wait_for(edge.wait(), 10)


@contextlib.asynccontextmanager
async def listening(transport: str, session: Session, certs: Path) -> AsyncIterator[int]:
    """The cloud's node listener for `transport` (`ws` or `quic`) on loopback; yields its port."""
    if transport == "quic":
        quic = await serve_nodes_quic(session, "127.0.0.1", 0, load_cert(certs / "ca.crt"),
                                      load_key_pair(certs / "server.crt", certs / "server.key"))
        try:
            yield quic.address[1]
        finally:
            quic.close()
            await quic.wait_closed()
        return
    ws = await serve_nodes(session, "127.0.0.1", 0, server_tls(certs / "ca.crt", certs / "server.crt",
                                                               certs / "server.key"))
    try:
        yield ws.sockets[0].getsockname()[1]
    finally:
        ws.close()
        await ws.wait_closed()


class Channel:
    """The cloud end of one node connection: a NodeQueue written to the connection as CloudHub's session does
    (window 128, resend after 5 s), each ACK timed against its message's enqueue."""

    def __init__(self, capacity: int) -> None:
        # Room for every message: beyond max_entries the queue would keep only key markers for `resolve`
        # (an informer cache in CloudHub) to fill in, and this bench has no cache to resolve from.
        self.queue = NodeQueue(resolve=lambda key: None, max_entries=max(capacity, DEFAULT_MAX_ENTRIES))
        self.next_pod = 0  # every message is a fresh key, so none is STALE or replaced
        self.enqueued_at: dict[str, float] = {}
        self.latencies: list[float] = []  # ms, enqueue -> ACK processed, in ACK order
        self.connected = asyncio.Event()
        self.finished = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._lost: BaseException | None = None  # why the session ended early (edge gone, send failed)

    def enqueue(self) -> None:
        i = self.next_pod
        self.next_pod += 1
        message = pod_message(i)
        self.enqueued_at[message.msg_id] = time.perf_counter()
        self.queue.enqueue(f"default/pod/p{i}", message, rv=i + 1, delete=False)
        self._wakeup.set()

    async def acked(self, total: int, timeout: float) -> None:
        """Until `total` ACKs have come back since the start."""
        async with asyncio.timeout(timeout):
            while len(self.latencies) < total:
                if self._lost is not None:
                    raise RuntimeError("the connection's session ended early") from self._lost
                self._progress.clear()
                await self._progress.wait()

    async def session(self, connection: NodeConnection) -> None:
        """The listener's handler: pumps until `finished` (then the listener closes the connection)."""
        self.connected.set()
        pumps = [asyncio.create_task(self._write(connection)), asyncio.create_task(self._read(connection))]
        finishing = asyncio.create_task(self.finished.wait())
        try:
            await asyncio.wait([finishing, *pumps], return_when=asyncio.FIRST_COMPLETED)
            if not finishing.done():
                failed = next(task for task in pumps if task.done())
                self._lost = failed.exception() or RuntimeError("pump returned")
                self._progress.set()
        finally:
            for task in [finishing, *pumps]:
                task.cancel()
            await asyncio.gather(finishing, *pumps, return_exceptions=True)

    async def _write(self, connection: NodeConnection) -> None:
        while True:
            outgoing = self.queue.next_message(time.monotonic())
            if outgoing is None:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), 1.0)  # resends are due after 5 s at the earliest
                continue
            await connection.send(outgoing.message)

    async def _read(self, connection: NodeConnection) -> None:
        while True:
            reply = await connection.recv()
            if self.queue.ack(reply.parent_msg_id, time.monotonic()) is not None:
                self.latencies.append((time.perf_counter() - self.enqueued_at.pop(reply.parent_msg_id)) * 1000)
                self._wakeup.set()
                self._progress.set()

    async def ping_pong(self, rounds: int, warm_up: int = WARM_UP) -> list[float]:
        """Enqueue -> ACK (ms) of one message at a time; the first `warm_up` rounds are not returned."""
        began = len(self.latencies)
        for n in range(warm_up + rounds):
            self.enqueue()
            await self.acked(began + n + 1, 30)
        return self.latencies[began + warm_up:]

    async def burst(self, count: int) -> tuple[float, list[float]]:
        """`count` messages enqueued at once: messages/s until the last ACK, and each one's enqueue -> ACK (ms)."""
        began_at = len(self.latencies)
        began = time.perf_counter()
        for _ in range(count):
            self.enqueue()
        await self.acked(began_at + count, 300)
        return count / (time.perf_counter() - began), self.latencies[began_at:]


@contextlib.asynccontextmanager
async def open_channel(transport: str, certs: Path, capacity: int) -> AsyncIterator[Channel]:
    """A listener, an ACKing edge process connected to it over `transport`, and the cloud's Channel."""
    channel = Channel(capacity)
    async with listening(transport, channel.session, certs) as port, edge_process(transport, port, certs):
        await asyncio.wait_for(channel.connected.wait(), 30)
        await asyncio.sleep(0.2)  # let the edge finish its side of the session setup
        try:
            yield channel
        finally:
            channel.finished.set()


async def echo_baseline(certs: Path, count: int, payload: str) -> float:
    """Frames/s: a bare `websockets` server sends `count` frames, the edge process echoes each one back."""
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
    try:
        began = time.perf_counter()
        async with edge_process("echo", server.sockets[0].getsockname()[1], certs):
            await asyncio.wait_for(done.wait(), 120)
            elapsed = time.perf_counter() - began
    finally:
        server.close()
        await server.wait_closed()
    return count / elapsed


async def unloaded_latency(transport: str, certs: Path, runs: int = 3) -> list[float]:
    """Enqueue -> ACK (ms) of a lone message on a fresh connection, `runs` times."""
    results: list[float] = []
    for _ in range(runs):
        async with open_channel(transport, certs, 1) as channel:
            results += await channel.ping_pong(1, warm_up=0)
    return results


async def transport_figures(transport: str, certs: Path, count: int, rounds: int) -> tuple[float, list[str]]:
    """Ping-pong latency, then throughput, on one connection; returns the rate and the figure lines."""
    async with open_channel(transport, certs, count) as channel:
        warm = await channel.ping_pong(rounds)
        rate, loaded = await channel.burst(count)
    print(f"{transport}: ping-pong on a warm connection ({rounds} rounds after {WARM_UP} warm-up) enqueue -> ACK: "
          f"p50 {percentile(warm, 50):.2f} ms, p99 {percentile(warm, 99):.2f} ms; {count:,} messages at once, "
          f"window {DEFAULT_WINDOW}, every one ACKed: {rate:,.0f}/s (queueing within the burst: enqueue -> ACK "
          f"p50 {percentile(loaded, 50):.0f} ms, p99 {percentile(loaded, 99):.0f} ms)")
    rate_target, p99_target = (">= 5,000", "<= 20") if transport == "ws" else ("none", "none")
    return rate, [f"channel_{transport}_acked_msgs_per_s: {rate:,.0f} msgs/s (target {rate_target})",
                  f"channel_{transport}_latency_p50: {percentile(warm, 50):.2f} ms (target none)",
                  f"channel_{transport}_latency_p99: {percentile(warm, 99):.2f} ms (target {p99_target})"]


async def main_async(quick: bool) -> list[str]:
    count = 5_000 if quick else 30_000
    rounds = 300 if quick else 1_000
    with tempfile.TemporaryDirectory(prefix="channel-bench-") as directory:
        certs = Path(directory)
        make_certs(certs)
        rate, ws = await transport_figures("ws", certs, count, rounds)
        sample = pod_message(0)
        baseline = await echo_baseline(certs, count, encode(sample).decode())
        unloaded = await unloaded_latency("ws", certs)
        _, quic = await transport_figures("quic", certs, count, rounds)
    print(f"ws: bare websockets echo of the same frames ({len(sample.content_bytes())} B content): {baseline:,.0f}/s "
          f"(ours {rate / baseline:.0%} of it); unloaded (fresh connection, median of {len(unloaded)}): "
          f"{statistics.median(unloaded):.2f} ms")
    return [ws[0], f"channel_ws_vs_bare_echo: {rate / baseline:.2f} ratio (target none)", *ws[1:],
            f"channel_ws_unloaded_latency: {statistics.median(unloaded):.2f} ms (target none)", *quic]


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
    parser.add_argument("--quick", action="store_true",
                        help="5,000 messages and 300 ping-pong rounds per transport, 200 fan-out connections: "
                             "under 60 s")
    args = parser.parse_args()
    figures = asyncio.run(main_async(args.quick))
    figures += fan_out(args.quick)
    for line in figures:
        print(line)


if __name__ == "__main__":
    main()
