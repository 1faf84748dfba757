#!/usr/bin/env python3
"""The embedded control plane under load, as a real process over HTTPS, beside a baseline.

Figures: pod create throughput with 8 concurrent clients, GET p50/p99, LIST of all pods, watch
fan-out (N watchers, latency from the create request to each watcher's event, p99), and the
server's RSS with the pods stored. Baseline (same run, same client): a bare aiohttp HTTPS server
that answers every POST with 201, i.e. what the HTTP stack alone allows on this machine.

    .venv/bin/python bench/controlplane.py [--quick]

Last lines, one per figure: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pod(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench", "shard": name[-1]}},
            "spec": {"nodeName": "", "containers": [{"name": "app", "image": "docker.io/local/busybox:1.0",
                                                     "command": ["sh", "-c", "sleep 3600"],
                                                     "env": [{"name": f"VAR{i}", "value": "x" * 24} for i in range(8)],
                                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


class Server:
    """A control plane (or the baseline) in its own process."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def client_ssl(data_dir: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if data_dir is not None:
        context.load_cert_chain(data_dir / "pki/admin.crt", data_dir / "pki/admin.key")
    return context


async def wait_ready(url: str, context: ssl.SSLContext, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{url}/readyz", ssl=context) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout} s")


async def create_pods(url: str, context: ssl.SSLContext, namespace: str, count: int, prefix: str) -> float:
    """Create `count` pods with CLIENTS concurrent workers; return pods per second."""
    names = iter(range(count))
    connector = aiohttp.TCPConnector(limit=CLIENTS, ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            for i in names:
                body = orjson.dumps(pod(f"{prefix}-{i}", namespace))
                async with session.post(f"{url}/api/v1/namespaces/{namespace}/pods", data=body,
                                        headers={"Content-Type": "application/json"}) as response:
                    if response.status != 201:
                        raise RuntimeError(f"create failed: {response.status} {await response.text()}")
                    await response.read()

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
        return count / (time.perf_counter() - began)


async def get_latencies(url: str, context: ssl.SSLContext, namespace: str, prefix: str, count: int,
                        samples: int) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for i in range(samples):
            began = time.perf_counter()
            async with session.get(f"{url}/api/v1/namespaces/{namespace}/pods/{prefix}-{(i * 7919) % count}") as r:
                await r.read()
                assert r.status == 200
            latencies.append((time.perf_counter() - began) * 1000)
    return latencies


async def list_seconds(url: str, context: ssl.SSLContext) -> tuple[float, int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        began = time.perf_counter()
        async with session.get(f"{url}/api/v1/pods") as response:
            body = await response.read()
        elapsed = time.perf_counter() - began
    return elapsed, len(orjson.loads(body)["items"])


async def watch_fanout(url: str, context: ssl.SSLContext, namespace: str, watchers: int, events: int) -> list[float]:
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=watchers + CLIENTS, ssl=context)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        rv_body = await (await session.get(f"{url}/api/v1/namespaces/{namespace}/pods?limit=1")).json()
        rv = rv_body["metadata"]["resourceVersion"]
        ready = asyncio.Event()
        opened = 0

        async def watch() -> None:
            nonlocal opened
            seen = 0
            async with session.get(f"{url}/api/v1/namespaces/{namespace}/pods?watch=true&resourceVersion={rv}") as r:
                opened += 1
                if opened == watchers:
                    ready.set()
                async for line in r.content:
                    name = orjson.loads(line)["object"]["metadata"]["name"]
                    latencies.append((time.perf_counter() - sent_at[name]) * 1000)
                    seen += 1
                    if seen == events:
                        return

        tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.sleep(0.2)
        for i in range(events):
            name = f"watched-{i}"
            sent_at[name] = time.perf_counter()
            body = orjson.dumps(pod(name, namespace))
            async with session.post(f"{url}/api/v1/namespaces/{namespace}/pods", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                await response.read()
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return latencies


BASELINE = textwrap.dedent("""
    import ssl, sys
    from aiohttp import web
    async def created(request):
        await request.read()
        return web.Response(status=201, body=b'{}', content_type='application/json')
    app = web.Application()
    app.router.add_post('/{tail:.*}', created)
    app.router.add_get('/readyz', lambda r: web.Response(text='ok'))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), ssl_context=context, print=None, access_log=None)
""")


async def main_async(quick: bool, sync: str) -> list[str]:
    pods, samples, watchers, events = (2000, 500, 50, 50) if quick else (10000, 2000, 100, 200)
    work = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    lines: list[str] = []
    try:
        port = free_port()
        server = Server([sys.executable, "-m", "cloudcore", "controlplane", "--data-dir", str(work / "cp"),
                         "--bind-port", str(port), "--pidfile", str(work / "cp.pid"), "--v=0",
                         "--no-controllers", "--sync", sync], port)
        url = f"https://127.0.0.1:{port}"
        try:
            await wait_ready(url, client_ssl(None))
            context = client_ssl(work / "cp")
            rate = await create_pods(url, context, "default", pods, "bench")
            gets = await get_latencies(url, context, "default", "bench", pods, samples)
            list_s, listed = await list_seconds(url, context)
            rss = server.rss_mib()
            fanout = await watch_fanout(url, context, "kube-public", watchers, events)
        finally:
            server.stop()
        base_port = free_port()
        baseline = Server([sys.executable, "-c", BASELINE, str(base_port), str(work / "cp/pki/apiserver.crt"),
                           str(work / "cp/pki/apiserver.key")], base_port)
        base_url = f"https://127.0.0.1:{base_port}"
        try:
            await wait_ready(base_url, client_ssl(None))
            base_rate = await create_pods(base_url, client_ssl(None), "default", min(pods, 3000), "base")
        finally:
            baseline.stop()
        print(f"creates (--sync {sync}): {pods} pods, {CLIENTS} clients: {rate:,.0f}/s; bare aiohttp HTTPS baseline "
              f"{base_rate:,.0f}/s ({rate / base_rate:.0%} of it)")
        print(f"get: {samples} requests, p50 {percentile(gets, 50):.2f} ms, p99 {percentile(gets, 99):.2f} ms")
        print(f"list: {listed} pods in {list_s * 1000:.0f} ms")
        print(f"watch: {watchers} watchers x {events} events, p50 {percentile(fanout, 50):.1f} ms, "
              f"p99 {percentile(fanout, 99):.1f} ms")
        print(f"rss: {rss:.0f} MiB with {pods} pods")
        lines += [f"controlplane_create_rate_{sync.lower()}: {rate:,.0f} pods/s (target >= 1,500)",
                  f"controlplane_get_p99: {percentile(gets, 99):.2f} ms (target <= 5)",
                  f"controlplane_list_{pods}_pods: {list_s * 1000:.0f} ms (target none)",
                  f"controlplane_watch_event_p99_{watchers}_watchers: {percentile(fanout, 99):.1f} ms (target <= 50)",
                  f"controlplane_rss_{pods}_pods: {rss:.0f} MiB (target <= 300)"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 pods and 50 watchers: well under 60 s")
    parser.add_argument("--sync", choices=("NORMAL", "FULL"), default="NORMAL",
                        help="the control plane's SQLite durability mode (default NORMAL, its default)")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    for line in asyncio.run(main_async(args.quick, args.sync)):
        print(line)


if __name__ == "__main__":
    main()
