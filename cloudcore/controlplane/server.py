"""`cloudcore controlplane`: the embedded Kubernetes API server process and its start-up.

Opens the store in `--data-dir`, makes the control plane's PKI and `admin.kubeconfig`, registers
stored CRDs, creates the system namespaces, serves HTTPS (client certificates or bearer tokens;
anonymous is refused), reaches kubelets for `pods/log`, runs the controllers, and stops within the
daemon deadline on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from cloudcore.controlplane import masterservice
from cloudcore.controlplane import pki as cp_pki
from cloudcore.controlplane.api import openapi, validation
from cloudcore.controlplane.api.auth import TokenFile
from cloudcore.controlplane.api.http import APIServer
from cloudcore.controlplane.api.kubelet import KubeletProxy
from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.api.resources import Registry
from cloudcore.controlplane.controllers import crds, manager
from cloudcore.controlplane.controllers.nodelifecycle import DEFAULT_GRACE
from cloudcore.controlplane.store.store import Store
from common import daemon, log
from common.pki import write_atomic
from common.version import describe

logger = log.get_logger("controlplane")

DEFAULT_DATA_DIR = Path("/var/lib/kubeedge/controlplane")


@dataclass(frozen=True, slots=True)
class ControlPlaneOptions:
    data_dir: Path = DEFAULT_DATA_DIR
    bind_address: str = "127.0.0.1"
    bind_port: int = 6443
    tls_sans: tuple[str, ...] = ()
    synchronous: str = "NORMAL"
    history: int = 100_000
    compact_every: float = 300.0
    controllers: bool = True
    node_grace_period: float = DEFAULT_GRACE

    @property
    def client_address(self) -> str:
        host = "127.0.0.1" if self.bind_address in ("0.0.0.0", "::") else self.bind_address
        return f"{host}:{self.bind_port}"


def _tls_context(material: cp_pki.ControlPlanePKI) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert, key = material.serving_files
    context.load_cert_chain(cert, key)
    context.load_verify_locations(material.ca_file)
    context.verify_mode = ssl.CERT_OPTIONAL  # no certificate: bearer token or 401, not a handshake failure
    return context


def _registry_fields(registry: Registry) -> Callable[[str, dict[str, Any]], dict[str, str]]:
    """The store's hook for field-selector values, from each resource's selectable fields."""
    def selectable(gr: str, obj: dict[str, Any]) -> dict[str, str]:
        info = registry.by_gr(gr)
        return info.field_values(obj) if info is not None else {}
    return selectable


async def run(options: ControlPlaneOptions, stop: asyncio.Event) -> int:
    data_dir = options.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    material = await asyncio.to_thread(cp_pki.ensure_pki, data_dir, options.bind_address, list(options.tls_sans))
    server_url = f"https://{options.client_address}"
    write_atomic(data_dir / "admin.kubeconfig", cp_pki.kubeconfig(server_url, material).encode(), 0o600)
    kubelets = KubeletProxy(*material.kubelet_client_files)
    registry = Registry()
    store = await Store.open(data_dir / "state.db", synchronous=options.synchronous,
                             selectable_fields=_registry_fields(registry), history=options.history,
                             compact_every=options.compact_every)
    tasks: list[asyncio.Task[None]] = []  # run until stopped; one ending means a failure
    warm_up: asyncio.Task[None] | None = None
    runner: web.AppRunner | None = None
    try:
        objects = ObjectAPI(store, registry)
        crds.serve_existing(objects)
        await objects.ensure_system_namespaces()
        host, _, port = options.client_address.rpartition(":")
        await masterservice.ensure(objects, host, int(port))
        cache = openapi.OpenAPICache(registry)
        api = APIServer(objects, registry, TokenFile(data_dir / "tokens.csv"), options.client_address, cache,
                        kubelets)
        runner = web.AppRunner(api.application(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, options.bind_address, options.bind_port, ssl_context=_tls_context(material),
                           backlog=1024)
        await site.start()
        tasks.extend(manager.start(objects, cache.invalidate, workloads=options.controllers,
                                   node_grace_period=options.node_grace_period))
        warm_up = asyncio.create_task(asyncio.to_thread(_warm_validators, registry), name="validator-warm-up")
        api.ready = True
        daemon.sd_notify("READY=1")
        logger.info("control plane serving", address=server_url, data_dir=str(data_dir),
                    kubeconfig=str(data_dir / "admin.kubeconfig"), revision=store.current_rv)
        await _until_stopped_or_failed(stop, tasks)
        return 0
    finally:
        for task in (*tasks, *([warm_up] if warm_up else [])):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        await kubelets.close()  # after the handlers: none relays a pod log any more
        await store.close()
        logger.info("control plane stopped")


def _warm_validators(registry: Registry) -> None:
    """Compile the built-in kinds' validators (0.1-0.5 s each) off the event loop, before first use."""
    for info in registry.all():
        if not info.is_custom:
            validation.validate_builtin(info.group, info.version, info.kind, {"metadata": {}}, "Ignore")


async def _until_stopped_or_failed(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({stopper, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    for task in done - {stopper}:
        error = None if task.cancelled() else task.exception()
        raise RuntimeError(f"{task.get_name()} stopped unexpectedly") from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudcore controlplane",
        description="Embedded Kubernetes-compatible API server on SQLite, with the controllers a cluster "
                    "needs. Writes DIR/admin.kubeconfig; point kubectl or cloudcore at it.")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                        help="state (SQLite), PKI and kubeconfig (default %(default)s)")
    parser.add_argument("--bind-address", default="127.0.0.1", metavar="ADDR", help="default %(default)s")
    parser.add_argument("--bind-port", type=int, default=6443, metavar="PORT", help="default %(default)s")
    parser.add_argument("--tls-san", action="append", default=[], metavar="NAME_OR_IP",
                        help="extra subject alternative name for the serving certificate (repeatable)")
    parser.add_argument("--sync", choices=("FULL", "NORMAL"), default="NORMAL",
                        help="SQLite durability. NORMAL (default): every acknowledged write survives a crash or "
                             "kill -9 of this process; FULL: also a power loss or kernel crash (an fsync per "
                             "commit, about 20%% fewer writes/s)")
    parser.add_argument("--watch-history", type=int, default=100_000, metavar="N",
                        help="revisions kept for watches to resume from; older ones get 410 Gone (default %(default)s)")
    parser.add_argument("--compact-interval", type=float, default=300.0, metavar="SECONDS",
                        help="how often old revisions are compacted away (default %(default)s)")
    parser.add_argument("--no-controllers", action="store_true",
                        help="serve the API (and CRDs) only, without the workload controllers: for benchmarks")
    parser.add_argument("--node-monitor-grace-period", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                        help="a node silent this long turns Ready=Unknown, as kube-controller-manager's flag "
                             "(default %(default)g)")
    parser.add_argument("--pidfile", type=Path, default=Path("/run/kubeedge/controlplane.pid"), metavar="FILE")
    log.add_verbosity_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.v)
    options = ControlPlaneOptions(args.data_dir.resolve(), args.bind_address, args.bind_port, tuple(args.tls_san),
                                  args.sync, args.watch_history, args.compact_interval, not args.no_controllers,
                                  args.node_monitor_grace_period)
    logger.info("starting", version=describe("cloudcore controlplane"), data_dir=str(options.data_dir))
    try:
        return daemon.run(lambda stop: run(options, stop), pidfile_path=args.pidfile)
    except daemon.PidfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

