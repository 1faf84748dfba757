#!/usr/bin/env python3
"""The baseline of bench/density.py: hollow nodes that talk to the control plane directly (no cloudcore,
no EdgeHub, no MetaManager), as kubemark's hollow kubelets do, all in one asyncio process.

Per node: the Node is created (edged's `node_object`) and its status patched (edged's `node_status`), then
every 10 s (edged's nodeStatusUpdateFrequency default) again; its Lease (edged's `lease_object`) created,
then replaced every 10 s. Pods: one WATCH of all pods for the whole process (a kubelet watches its own
node's pods; one stream is cheaper for the control plane and not slower); a pod bound to one of these nodes
is reported Running at once with `PATCH pods/<name>/status`, the status built by the same function as the
hollow edged's (bench/density_edge.py `running_status`, i.e. edged's `pod_status`).

    python bench/density_direct.py --server URL --pki DIR --first I --count N [--prefix P]

Prints `ready <monotonic>` once every node is registered with a status and a lease; runs until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.density_edge import node_ip, node_name, running_status  # noqa: E402
from edgecore.edged.lease import lease_object  # noqa: E402
from edgecore.edged.nodestatus import NodeFacts, node_object, node_status  # noqa: E402
from edgecore.edged.pods.spec import PodSpecError, parse_pod  # noqa: E402

INTERVAL: Final = 10.0  # nodeStatusUpdateFrequency and the Lease renewal (40 s * 0.25), as edged
LEASE_SECONDS: Final = 40
CONNECTIONS: Final = 16
MERGE: Final = {"Content-Type": "application/merge-patch+json"}


def say(*words: object) -> None:
    print(*words, flush=True)


def tls(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    return context


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any,
               headers: dict[str, str] | None = None) -> int:
    async with session.request(method, url, data=orjson.dumps(body),
                               headers=headers or {"Content-Type": "application/json"}) as response:
        await response.read()
        return response.status


class DirectNode:
    def __init__(self, session: aiohttp.ClientSession, server: str, name: str, index: int) -> None:
        self.session, self.server, self.name, self.index = session, server, name, index
        self.facts = NodeFacts(name=name, node_ip=node_ip(index), labels={}, taints=[], max_pods=110,
                               kubelet_port=10350, started=datetime.now(UTC))
        self.reported: set[str] = set()
        self.seq = 0

    async def register(self) -> None:
        now = datetime.now(UTC)
        status = await call(self.session, "POST", f"{self.server}/api/v1/nodes", node_object(self.facts, now))
        if status not in (201, 409):
            raise RuntimeError(f"node {self.name}: create answered {status}")
        await self.report_status()
        lease_url = f"{self.server}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        status = await call(self.session, "POST", lease_url, lease_object(self.name, LEASE_SECONDS, now))
        if status not in (201, 409):
            raise RuntimeError(f"lease {self.name}: create answered {status}")

    async def report_status(self) -> None:
        await call(self.session, "PATCH", f"{self.server}/api/v1/nodes/{self.name}/status",
                   {"status": node_status(self.facts, datetime.now(UTC))}, MERGE)

    async def renew_lease(self) -> None:
        await call(self.session, "PUT",
                   f"{self.server}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}",
                   lease_object(self.name, LEASE_SECONDS, datetime.now(UTC)))

    async def keep_alive(self) -> None:
        await asyncio.sleep(INTERVAL * (self.index % 100) / 100)  # spread over the interval, as edged's starts are
        while True:
            await asyncio.gather(self.report_status(), self.renew_lease())
            await asyncio.sleep(INTERVAL)

    async def run_pod(self, pod: dict[str, Any]) -> None:
        try:
            spec = parse_pod(pod)
        except PodSpecError:
            return
        if spec.uid in self.reported or spec.deleting:
            return
        self.reported.add(spec.uid)
        self.seq += 1
        status = running_status(spec, self.facts.node_ip, self.index, self.seq)
        await call(self.session, "PATCH", f"{self.server}/api/v1/namespaces/{spec.namespace}/pods/{spec.name}/status",
                   {"status": status}, MERGE)


async def watch_pods(session: aiohttp.ClientSession, server: str, nodes: dict[str, DirectNode],
                     tasks: asyncio.TaskGroup) -> None:
    rv = ""
    while True:
        query = {"watch": "1", "allowWatchBookmarks": "false", **({"resourceVersion": rv} if rv else {})}
        async with session.get(f"{server}/api/v1/pods", params=query,
                               timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
            if response.status != 200:
                rv = ""
                await asyncio.sleep(0.5)
                continue
            async for line in response.content:
                event = orjson.loads(line)
                pod = event.get("object") or {}
                if event.get("type") == "ERROR":
                    rv = ""
                    break
                rv = (pod.get("metadata") or {}).get("resourceVersion", rv)
                node = nodes.get((pod.get("spec") or {}).get("nodeName") or "")
                if node is not None and event.get("type") in ("ADDED", "MODIFIED") and \
                        (pod.get("status") or {}).get("phase") != "Running":
                    tasks.create_task(node.run_pod(pod))


async def fleet(server: str, pki: Path, prefix: str, first: int, count: int) -> None:
    connector = aiohttp.TCPConnector(ssl=tls(pki), limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        nodes = {node_name(prefix, i): DirectNode(session, server, node_name(prefix, i), i)
                 for i in range(first, first + count)}
        gate = asyncio.Semaphore(CONNECTIONS)

        async def register(node: DirectNode) -> None:
            async with gate:
                await node.register()

        await asyncio.gather(*(register(node) for node in nodes.values()))
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        async with asyncio.TaskGroup() as tasks:
            runners = [tasks.create_task(node.keep_alive()) for node in nodes.values()]
            runners.append(tasks.create_task(watch_pods(session, server, nodes, tasks)))
            say("ready", time.monotonic())
            while (await reader.readline()).decode().strip() not in ("", "quit"):
                pass
            for runner in runners:
                runner.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="the control plane's URL")
    parser.add_argument("--pki", type=Path, required=True, help="the control plane's pki dir (ca, admin cert)")
    parser.add_argument("--prefix", default="direct")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fleet(args.server, args.pki, args.prefix, args.first, args.count))


if __name__ == "__main__":
    main()
