#!/usr/bin/env python3
"""Hollow edge nodes for bench/density.py: many edgecores in one process, the CRI replaced by a fake.

Each node is edgecore's real EdgeHub (WebSocket, mutual TLS, its own `system:node:<node>` certificate issued
from the cloud's CA, persistent outbox) and real MetaManager (its own SQLite file, normally on tmpfs), on a
`ModuleBus` of its own, plus a hollow edged:

- `HollowEdged` is edgecore's `EdgedModule` without a CRI: registration, node status every
  nodeStatusUpdateFrequency (and at once on every reconnect) and the Lease every 10 s are edged's own code
  (edgecore.edged.module / nodestatus / lease). A pod that MetaManager stored and handed over is reported
  Running at once: its status is built by edged's `pod_status` from a fake observation (a ready sandbox with
  an IP, every container running since now), and sent as edged sends it (`podstatus` update through
  MetaManager into EdgeHub's outbox). A deleted pod is confirmed gone at once. Nothing is run.
- `HollowEdgeHub` is edgecore's `EdgeHubModule` with a partition switch: `cut()` aborts the node's
  connection (TCP RST, no close frame) and makes every dial fail at once with an OSError while cut, as
  an unreachable network does; `heal()` lets the dials through again. The reconnect back-off is EdgeHub's.

    python bench/density_edge.py --servers HOST:PORT[,...] --dir DIR --first I --count N --db-dir TMPFS [--prefix P]

DIR holds ca.crt and ca.key (the cloud's CA). The process prints `ready <monotonic>` once every node is
connected, then takes commands on stdin: `cut` (answers `cut <t>`), `heal` (answers `healed <t>`, then
`connected <t>` once every node has reconnected), `quit`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import log as klog  # noqa: E402
from common.bus import ModuleBus  # noqa: E402
from common.config.edgecore import Edged as EdgedConfig  # noqa: E402
from common.config.edgecore import EdgeHub as EdgeHubConfig  # noqa: E402
from common.config.edgecore import MetaManager as MetaManagerConfig  # noqa: E402
from common.constants import Op  # noqa: E402
from common.message import Message  # noqa: E402
from common.modules import ModuleContext, run_modules  # noqa: E402
from common.pki import cert_to_pem, issue_client_cert, key_to_pem, load_key_pair  # noqa: E402
from common.transport import NodeConnection  # noqa: E402
from edgecore.edged.module import EdgedModule  # noqa: E402
from edgecore.edged.pods.planner import Observed, ObservedContainer, ObservedSandbox, RunState  # noqa: E402
from edgecore.edged.pods.spec import PodSpec  # noqa: E402
from edgecore.edged.pods.status import pod_status  # noqa: E402
from edgecore.edgehub.hub import EdgeHubModule  # noqa: E402
from edgecore.edgehub.outbox_store import PersistentOutbox  # noqa: E402
from edgecore.metamanager.module import MetaManagerModule  # noqa: E402
from edgecore.metamanager.store import MetaStore  # noqa: E402

FAKE_RUNTIME: Final = ("fake runtime: every pod MetaManager stores is reported Running at once (status built "
                       "by edged's pod_status from a fake ready sandbox and running containers); nothing is run")
HEARTBEAT: Final = 15  # edgeHub.heartbeat default


def node_name(prefix: str, i: int) -> str:
    return f"{prefix}-{i:04d}"


class Partition:
    """The switch every hollow EdgeHub of this process checks before dialing."""

    def __init__(self) -> None:
        self.cut = False


class HollowEdgeHub(EdgeHubModule):
    """EdgeHub whose connection can be cut (see the module docstring)."""

    def __init__(self, config: EdgeHubConfig, node_name: str, outbox: PersistentOutbox, partition: Partition) -> None:
        super().__init__(config, node_name, outbox)
        self.partition = partition

    async def run(self, ctx: ModuleContext) -> None:
        try:
            await super().run(ctx)
        except BaseException as exc:  # run_modules logs only the group's summary
            if not isinstance(exc, asyncio.CancelledError):
                traceback.print_exception(exc, file=sys.stderr)
            raise

    async def _dial(self, *server: str) -> NodeConnection:  # EdgeHub's own signature, whichever it is now
        if self.partition.cut:
            raise OSError(f"network unreachable (bench partition of {self.node})")
        return await super()._dial(*server)

    def abort(self) -> None:
        connection = self._connection
        transport = getattr(getattr(connection, "websocket", None), "transport", None)
        if transport is not None:
            transport.abort()


class HollowEdged(EdgedModule):
    """edged without a CRI: pods reported Running as soon as MetaManager hands them over."""

    def __init__(self, config: EdgedConfig, pod_index: int) -> None:
        super().__init__(config, cri=None, store=None)
        self._pod_queue: asyncio.Queue[tuple[PodSpec, bool]] = asyncio.Queue()
        self._pod_index = pod_index  # the third octet of this node's fake pod IPs
        self._pod_ips = 0

    async def run(self, ctx: ModuleContext) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._listen(ctx))
            tasks.create_task(self._report(ctx))
            tasks.create_task(self.lease.run(ctx))
            tasks.create_task(self._run_pods(ctx))

    def _pod_message(self, message: Message) -> None:
        spec = self._spec_of(message.resource, message.content)
        if spec is not None:
            self._pod_queue.put_nowait((spec, message.operation == Op.DELETE or spec.deleting))

    async def _run_pods(self, ctx: ModuleContext) -> None:
        running: set[str] = set()
        while True:
            spec, deleting = await self._pod_queue.get()
            if deleting:
                running.discard(spec.uid)
                await self._confirm_deleted(ctx, spec)
            elif spec.uid not in running:
                running.add(spec.uid)
                await self._send_pod_status(ctx, spec, self._running_status(spec))

    def _running_status(self, spec: PodSpec) -> dict[str, object]:
        self._pod_ips += 1
        return running_status(spec, self.facts.node_ip, self._pod_index, self._pod_ips)


def running_status(spec: PodSpec, host_ip: str, node_index: int, seq: int) -> dict[str, object]:
    """edged's v1.PodStatus for `spec` as if its sandbox were ready (a fake IP) and every container running
    since now: phase Running, Ready. Shared with the direct baseline (bench/density_direct.py)."""
    now = time.time()
    ip = f"10.{node_index // 250 + 100}.{node_index % 250}.{seq % 250 + 2}"
    sandbox = ObservedSandbox(id=f"sandbox-{spec.uid}", ready=True, ip=ip)
    containers = tuple(ObservedContainer(id=f"{spec.uid}-{c.name}", name=c.name, sandbox_id=sandbox.id,
                                         state=RunState.RUNNING, started_at=now, image=c.image)
                       for c in spec.containers)
    return pod_status(spec, Observed(sandboxes=(sandbox,), containers=containers), {}, host_ip, now)


def node_ip(index: int) -> str:
    return f"10.99.{index // 250}.{index % 250 + 1}"


async def run_node(name: str, index: int, servers: list[str], directory: Path, db_dir: Path, partition: Partition,
                   hubs: list[HollowEdgeHub], stop: asyncio.Event) -> None:
    database = db_dir / f"{name}.db"
    store = await MetaStore.open(database)
    outbox = await PersistentOutbox.open(database)
    try:
        hub = HollowEdgeHub(EdgeHubConfig.model_validate({
            "heartbeat": HEARTBEAT, "rotateCertificates": False, "httpServer": "https://127.0.0.1:1",
            "tlsCaFile": str(directory / "ca.crt"), "tlsCertFile": str(directory / f"{name}.pem"),
            "tlsPrivateKeyFile": str(directory / f"{name}.pem"),
            "websocket": {"enable": True, "server": ",".join(rotated(servers, index))}, "quic": {"enable": False}}),
            name, outbox, partition)
        hubs.append(hub)
        edged = HollowEdged(EdgedConfig.model_validate({"hostnameOverride": name, "nodeIP": node_ip(index),
                                                        "rootDirectory": str(db_dir)}), index)
        meta = MetaManagerModule(MetaManagerConfig(), store)
        await run_modules(ModuleBus(), [meta, edged, hub], stop)
    finally:
        await outbox.close()
        await store.close()


def say(*words: object) -> None:
    print(*words, flush=True)


async def all_connected(hubs: list[HollowEdgeHub], count: int) -> float:
    while len(hubs) < count or not all(hub.connected.is_set() for hub in hubs):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return time.monotonic()


def prepare(directory: Path, db_dir: Path, names: list[str]) -> None:
    """File limit raised; a certificate and key per node (`<node>.pem`) issued from the cloud's CA."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ca = load_key_pair(directory / "ca.crt", directory / "ca.key")
    for name in names:
        pair = issue_client_cert(ca, name)
        (directory / f"{name}.pem").write_bytes(cert_to_pem(pair.cert) + key_to_pem(pair.key))
    db_dir.mkdir(parents=True, exist_ok=True)


def rotated(servers: list[str], index: int) -> list[str]:
    """The cloudcores in the order node `index` lists them (edgeHub.websocket.server, comma-separated): each
    node starts at a different one, so the nodes spread over the instances as behind DNS round robin."""
    start = index % len(servers)
    return servers[start:] + servers[:start]


async def fleet(servers: list[str], directory: Path, db_dir: Path, names: list[str], first: int) -> None:
    count = len(names)
    partition, hubs, stop = Partition(), list[HollowEdgeHub](), asyncio.Event()
    nodes = [asyncio.create_task(run_node(name, first + k, servers, directory, db_dir, partition, hubs, stop))
             for k, name in enumerate(names)]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    say("ready", await all_connected(hubs, count))
    try:
        while True:
            line = (await reader.readline()).decode().strip()
            if line in ("", "quit"):
                break
            if line == "cut":
                partition.cut = True
                for hub in hubs:
                    hub.abort()
                say("cut", time.monotonic())
            elif line == "heal":
                partition.cut = False
                say("healed", time.monotonic())
                say("connected", await all_connected(hubs, count))
            elif line == "cpu":
                say("cpu", time.process_time())
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*nodes, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", help="CloudHub WebSocket address(es), host:port,...")
    parser.add_argument("--port", type=int, help="CloudHub's WebSocket port on 127.0.0.1 (one cloudcore)")
    parser.add_argument("--dir", type=Path, required=True, help="directory with the cloud CA's ca.crt and ca.key")
    parser.add_argument("--db-dir", type=Path, required=True, help="where the nodes' SQLite files go (tmpfs)")
    parser.add_argument("--prefix", default="hollow")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--v", type=int, default=0, help="edgecore log verbosity (stderr)")
    args = parser.parse_args()
    klog.setup(args.v)
    names = [node_name(args.prefix, i) for i in range(args.first, args.first + args.count)]
    prepare(args.dir, args.db_dir, names)
    servers = args.servers.split(",") if args.servers else [f"127.0.0.1:{args.port}"]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fleet(servers, args.dir, args.db_dir, names, args.first))


if __name__ == "__main__":
    main()
