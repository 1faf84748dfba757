#!/usr/bin/env python3
"""Fan-out of issue 5: N edge connections on one real CloudHub; memory per idle connection, and the time to
deliver one update to every node.

Three processes on one machine:

- a real embedded control plane (`python -m cloudcore controlplane`, started by the tests' own
  `ControlPlaneProcess`), with the reliablesyncs CRDs applied, so that CloudHub loads each node's acked
  versions and writes an ObjectSync per ACK as in production;
- the cloud process (this script; bench/channel.py runs it as a fresh process so that the RSS is
  CloudHub's alone): the real `CloudHubModule` on a `ModuleBus` with a kubernetes_asyncio client of that
  control plane, mutual-TLS WebSocket listener on loopback, keepaliveInterval 30 s (the default) and
  nodeLimit above the node count;
- the edge process (`bench/fanout.py edge ...`, one asyncio loop): N lightweight EdgeHub clients, each
  dialing with `common.transport.dial` and its own node certificate (CN `system:node:<node>`, issued
  from the `casecret` CA read through the API, like test_cloudhub_sync), sending a keepalive message and a
  WebSocket ping every 15 s (edgecore's heartbeat default, as EdgeHub does) and ACKing every message with
  `message.response("OK")`, as metamanager does. Certificates: common.pki's ECDSA P-256, one fresh key
  per node; `issue_client_cert` costs ~0.3 ms, so a shared key (CSR + `sign_csr`, ~0.6 ms) would not
  be faster and is not used. Building the N SSL contexts (~2 ms each, OpenSSL) happens before the
  connect clock starts.

Both the cloud and the edge process raise RLIMIT_NOFILE to the hard limit.

Figures:

- rss per connection: VmRSS of the cloud process with all N connections idle (2 s after the last
  connected, after gc) minus its VmRSS before the edge process started (CloudHub listening, the API
  client warmed by one ObjectSync load), divided by N;
- deliver all: the cloud process takes `time.monotonic()`, builds one ConfigMap update (~1 KiB content,
  resource `node/<node>/default/configmap/fanout`) per node and sends it on the bus to cloudhub (whose
  router does `load_queue` + `enqueue`); the edge process reports the `time.monotonic()` at which the
  last client received its message (CLOCK_MONOTONIC is system-wide, so both clocks are one); all ACKed:
  until every node's queue has the ACK (its acked RV), seen by polling in the cloud process;
- connect: from the edge's first dial until all N are connected and CloudHub has a session for each
  (informational).

    .venv/bin/python bench/fanout.py [--quick] [--nodes N]   # this figure alone; bench/channel.py runs it too
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kubernetes_asyncio import client as kclient  # noqa: E402
from kubernetes_asyncio import config as kconfig  # noqa: E402

from cloudcore.cloudhub.hub import CloudHubModule  # noqa: E402
from cloudcore.cloudhub.secrets import CA_DATA, CA_KEY_DATA, CA_SECRET, read_secret_data  # noqa: E402
from common.bus import ModuleBus  # noqa: E402
from common.config.cloudcore import CloudHub as CloudHubConfig  # noqa: E402
from common.constants import DEFAULT_PROJECT_ID, EdgeModule, Group, Op  # noqa: E402
from common.message import Message  # noqa: E402
from common.modules import ModuleContext  # noqa: E402
from common.pki import (  # noqa: E402
    KeyPair,
    cert_to_pem,
    issue_client_cert,
    key_to_pem,
    load_cert,
    load_key_pair,
    load_private_key,
)
from common.transport import Connection, client_tls, dial  # noqa: E402
from tests.fixtures.controlplane import ControlPlaneProcess  # noqa: E402
from tests.fixtures.mosquitto import free_port  # noqa: E402

TARGET_RESOURCE = "default/configmap/fanout"  # what the edge sees (CloudHub trims `node/<node>/`)
TARGET_RV = 100
EDGE_HEARTBEAT = 15.0  # edgecore's websocket.heartbeat default
DIAL_CONCURRENCY = 50  # handshakes in flight, below the listener's backlog (100)


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_name(i: int) -> str:
    return f"fanout-{i:04d}"


# -- edge process -----------------------------------------------------------------------------------


def say(*words: object) -> None:
    print(*words, flush=True)


async def edge_fleet(port: int, directory: Path, nodes: int) -> None:
    raise_fd_limit()
    began = time.monotonic()
    ca = load_key_pair(directory / "ca.crt", directory / "ca.key")
    contexts = []
    for i in range(nodes):
        pair = issue_client_cert(ca, node_name(i))
        pem = directory / f"{node_name(i)}.pem"
        pem.write_bytes(cert_to_pem(pair.cert) + key_to_pem(pair.key))
        contexts.append(client_tls(directory / "ca.crt", pem, pem))
    say("prepared", f"{time.monotonic() - began:.3f}", time.process_time())

    received_at: dict[str, float] = {}
    gate = asyncio.Semaphore(DIAL_CONCURRENCY)
    connected = 0
    all_connected = asyncio.Event()
    dial_began = time.monotonic()

    async def heartbeat(connection: Connection) -> None:
        while True:
            await asyncio.sleep(EDGE_HEARTBEAT)
            await connection.send(Message.new(source=EdgeModule.EDGEHUB, group=Group.RESOURCE,
                                              operation=Op.KEEPALIVE, resource="node", content="ping"))

    async def acknowledge(connection: Connection) -> None:
        while True:
            message = await connection.recv()
            if message.resource == TARGET_RESOURCE and connection.node not in received_at:
                received_at[connection.node] = time.monotonic()
                if len(received_at) == nodes:
                    say("delivered", min(received_at.values()), max(received_at.values()))
            await connection.send(message.response("OK"))

    async def client(i: int) -> None:
        nonlocal connected
        node = node_name(i)
        async with gate:
            for attempt in range(50):
                try:
                    connection = await dial(f"127.0.0.1:{port}", node, DEFAULT_PROJECT_ID, contexts[i],
                                            ping_interval=EDGE_HEARTBEAT)
                    break
                except OSError:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.1)
        connected += 1
        if connected == nodes:
            all_connected.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(heartbeat(connection))
                tasks.create_task(acknowledge(connection))
        except* Exception as lost:
            print(f"edge {node} lost its connection: {lost.exceptions[0]!r}", file=sys.stderr, flush=True)

    clients = [asyncio.create_task(client(i)) for i in range(nodes)]
    waiting = asyncio.create_task(all_connected.wait())
    await asyncio.wait([waiting, *clients], return_when=asyncio.FIRST_COMPLETED)
    if not all_connected.is_set():  # a client could not connect: exit with its error
        await asyncio.gather(*clients)
    say("connected", nodes, dial_began, time.monotonic(), time.process_time())
    await asyncio.gather(*clients)


# -- cloud process ----------------------------------------------------------------------------------


@dataclass
class _Edge:
    proc: asyncio.subprocess.Process

    async def expect(self, word: str, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"edge process exited ({await self.proc.wait()}) before {word!r}")
                fields = line.split()
                if fields and fields[0] == word:
                    return fields[1:]


def configmap() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "fanout", "namespace": "default", "uid": "5d0c2b9e-fan0-4a1e-9c1f-000000000001",
                         "resourceVersion": str(TARGET_RV)},
            "data": {f"key{j:02d}": "v" * 80 for j in range(10)}}


async def _listening(port: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return


async def measure(nodes: int) -> list[str]:
    """Run the fan-out in this process (the cloud side); prints info lines, returns the figure lines."""
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as scratch:
        directory = Path(scratch)
        plane = ControlPlaneProcess(directory / "cp")
        plane.start()
        try:
            plane.kubectl("apply", "-f", str(ROOT / "config/crds/reliablesyncs"))
            plane.kubectl("wait", "--for=condition=established", "crd/objectsyncs.reliablesyncs.kubeedge.io",
                          "--timeout=20s")
            port = free_port()
            hub_config = CloudHubConfig.model_validate({
                "advertiseAddress": ["127.0.0.1"], "nodeLimit": nodes + 10, "keepaliveInterval": 30,
                "tlsCAFile": str(directory / "none/ca.crt"), "tlsCAKeyFile": str(directory / "none/ca.key"),
                "tlsCertFile": str(directory / "none/server.crt"),
                "tlsPrivateKeyFile": str(directory / "none/server.key"),
                "websocket": {"address": "127.0.0.1", "port": port},
                "https": {"address": "127.0.0.1", "port": free_port()}})
            configuration = kclient.Configuration()
            await kconfig.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
            async with kclient.ApiClient(configuration) as api:
                bus = ModuleBus()
                module = CloudHubModule(hub_config, api)
                hub = asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))
                try:
                    assert plane.proc is not None
                    return await _fan_out(module, bus, api, port, directory, nodes, plane.proc.pid)
                finally:
                    hub.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await hub
        finally:
            plane.stop()


async def _sessions_complete(module: CloudHubModule, nodes: int) -> float:
    """When CloudHub's session table first holds all nodes (polled every 10 ms)."""
    while len(module.sessions) < nodes:  # noqa: ASYNC110 - CloudHub's session table
        await asyncio.sleep(0.01)
    return time.monotonic()


async def _fan_out(module: CloudHubModule, bus: ModuleBus, api: kclient.ApiClient, port: int, directory: Path,
                   nodes: int, plane_pid: int) -> list[str]:
    await _listening(port, 30)
    data = await read_secret_data(api, CA_SECRET)
    assert data is not None, "CloudHub made no casecret"
    KeyPair(load_cert(data[CA_DATA]), load_private_key(data[CA_KEY_DATA])).write(directory / "ca.crt",
                                                                                 directory / "ca.key")
    await module.syncs.load("warm-up")  # the API client's first request; not a per-connection cost
    await asyncio.sleep(0.5)
    gc.collect()
    rss_before = vm_rss_kib()

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), "edge", "--port", str(port), "--dir", str(directory),
        "--nodes", str(nodes), cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={"PYTHONPATH": str(ROOT)})
    edge = _Edge(proc)
    sessions = None
    try:
        prepared, edge_cpu_began = (float(x) for x in await edge.expect("prepared", 120))
        cpu_began = time.process_time(), cpu_seconds(plane_pid)
        sessions = asyncio.create_task(_sessions_complete(module, nodes))
        _, dial_began, edge_done, edge_cpu_done = (float(x) for x in await edge.expect("connected", 30 + nodes / 5))
        async with asyncio.timeout(60):
            cloud_done = await sessions
        connect = max(edge_done, cloud_done) - dial_began
        connect_cpu = (time.process_time() - cpu_began[0], edge_cpu_done - edge_cpu_began,
                       cpu_seconds(plane_pid) - cpu_began[1])
        await asyncio.sleep(2.0)
        gc.collect()
        rss_idle = vm_rss_kib()

        names = [node_name(i) for i in range(nodes)]
        content = configmap()
        began = time.monotonic()
        for node in names:
            await bus.send("cloudhub", Message.new(source="edgecontroller", group="resource", operation="update",
                                                   resource=f"node/{node}/{TARGET_RESOURCE}", content=content,
                                                   resource_version=str(TARGET_RV)))
        enqueued = time.monotonic()
        waiting = set(names)
        async with asyncio.timeout(120):
            while waiting:
                waiting = {node for node in waiting
                           if node not in module.queues or module.queues[node].acked_rv(TARGET_RESOURCE) != TARGET_RV}
                if waiting:
                    await asyncio.sleep(0.002)
        acked = time.monotonic()
        first, last = (float(t) for t in await edge.expect("delivered", 60))
        rss_after = vm_rss_kib()
    finally:
        if sessions is not None:
            sessions.cancel()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()

    size = len(Message.new(source="edgecontroller", group="resource", operation="update",
                           resource=TARGET_RESOURCE, content=configmap()).content_bytes())
    per_connection = (rss_idle - rss_before) / nodes
    print(f"fan-out: {nodes} edge connections (mutual TLS, own node certificates) from one process; "
          f"certificates and SSL contexts {prepared:.1f} s; connect {connect:.2f} s "
          f"({nodes / connect:,.0f} connections/s; CPU s: cloud {connect_cpu[0]:.1f}, edge {connect_cpu[1]:.1f}, "
          f"control plane {connect_cpu[2]:.1f}, on {os.cpu_count()} CPUs)")
    print(f"fan-out: cloud process RSS {rss_before / 1024:.1f} MiB before, {rss_idle / 1024:.1f} MiB with "
          f"{nodes} idle connections ({per_connection:.0f} KiB each), {rss_after / 1024:.1f} MiB after delivery")
    print(f"fan-out: one ConfigMap update ({size} B content) to {nodes} nodes: enqueued in "
          f"{(enqueued - began) * 1000:.0f} ms, first received {(first - began) * 1000:.0f} ms, all received "
          f"{last - began:.2f} s, all ACKs back at CloudHub {acked - began:.2f} s")
    return [f"fanout_rss_per_connection: {per_connection:.0f} KiB (target <= 200 KiB)",
            f"fanout_deliver_all: {last - began:.2f} s (target <= 2 s)",
            f"fanout_deliver_all_acked: {acked - began:.2f} s (target none)",
            f"fanout_connect_all: {connect:.2f} s (target none)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=["cloud", "edge"], default="cloud")
    parser.add_argument("--quick", action="store_true", help="200 connections instead of 1,000")
    parser.add_argument("--nodes", type=int, help="number of edge connections")
    parser.add_argument("--port", type=int, help="edge mode: CloudHub's WebSocket port")
    parser.add_argument("--dir", type=Path, help="edge mode: directory with ca.crt and ca.key")
    args = parser.parse_args()
    nodes = args.nodes or (200 if args.quick else 1000)
    if args.mode == "edge":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(edge_fleet(args.port, args.dir, nodes))
        return
    for line in asyncio.run(measure(nodes)):
        print(line)


if __name__ == "__main__":
    main()
