"""`keadm join`: the edge side.

Preflight (token syntax, nothing of ours running, ports free), the cloud reachable, the CA fetched over
:10002 and pinned by the token's hash, the node name free, the node certificate through edgecore's own
bootstrap code (edgecore.edgehub.certificate), edgecore.yaml (only non-default keys, no token), edgecore as a
service, and a wait until it is connected to cloudcore. Everything made is recorded in the edge manifest for
`keadm reset edge`. The token is never printed nor written to disk.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from common.config import EdgeCoreConfig
from common.config.base import default_hostname
from common.config.edgecore import EdgeHub
from common.pki import PKIError, TokenError, parse_token, write_atomic
from edgecore.edgehub.certificate import bootstrap
from keadm import net
from keadm.manifest import Manifest
from keadm.paths import Paths, service_mode
from keadm.progress import Progress, StepError
from keadm.render import DEFAULT_CERT_PORT, EdgeOptions, RenderError, parse_labels, parse_set, render_edgecore
from keadm.service import Service, ServiceError, Supervisor, program, wait_until

FRESH_TOKEN = "run `keadm gettoken` on the cloud and pass its output with --token"


def add_join_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-e", "--cloudcore-ipport", required=True, metavar="IP:PORT",
                        help="cloudcore's CloudHub address (websocket port, 10000 by default)")
    parser.add_argument("-i", "--edgenode-name", default="", help="node name (default: the hostname)")
    parser.add_argument("-t", "--token", default="", help="join token from `keadm gettoken`")
    parser.add_argument("-s", "--certport", default="", help="cloudcore's certificate port (default 10002)")
    parser.add_argument("-p", "--remote-runtime-endpoint", default="unix:///run/containerd/containerd.sock",
                        help="CRI endpoint (default %(default)s)")
    parser.add_argument("--cgroupdriver", default="cgroupfs", choices=("cgroupfs", "systemd"),
                        help="cgroup driver of the runtime (default %(default)s)")
    parser.add_argument("--certPath", "--cert-path", dest="cert_path", type=Path,
                        help="directory for the node certificate and key (default /etc/kubeedge/certs)")
    parser.add_argument("-l", "--labels", default="", help="node labels, k1=v1,k2=v2")
    parser.add_argument("--hub-protocol", default="websocket", choices=("websocket", "quic"),
                        help="protocol to cloudcore (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set an edgecore.yaml key, e.g. modules.edged.reportEvent=true (repeatable)")
    parser.add_argument("--kubeedge-version", default="", help="accepted for compatibility; this build is used")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for edgecore to start and connect (default 60)")


def split_ipport(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RenderError(f"--cloudcore-ipport {text!r}: expected IP:PORT, e.g. 192.168.1.10:10000")
    return host, int(port)


def options_from(args: argparse.Namespace) -> EdgeOptions:
    host, port = split_ipport(args.cloudcore_ipport)
    certport = args.certport.strip() or str(DEFAULT_CERT_PORT)
    if not certport.isdigit() or not 0 < int(certport) < 65536:
        raise RenderError(f"--certport {args.certport!r}: expected a port number")
    return EdgeOptions(cloud_host=host, cloud_port=port, node_name=args.edgenode_name.strip() or default_hostname(),
                       cert_port=int(certport), runtime_endpoint=args.remote_runtime_endpoint,
                       cgroup_driver=args.cgroupdriver, cert_dir=args.cert_path.absolute() if args.cert_path else None,
                       labels=parse_labels(args.labels), hub_protocol=args.hub_protocol, sets=parse_set(args.set))


def join(args: argparse.Namespace) -> int:
    paths = Paths.from_env()
    try:
        options = options_from(args)
        rendered = render_edgecore(options, paths)
    except RenderError as exc:
        print(f"error: invalid flags: {exc}", file=sys.stderr)
        return 2
    config: EdgeCoreConfig = rendered.config
    edge_hub = config.modules.edge_hub
    supervisor = Supervisor(service_mode(), paths)
    manifest_path = paths.manifest("edge")
    manifest = Manifest(manifest_path)
    node, cloud, certport = options.node_name, options.cloud_host, options.cert_port
    progress = Progress(8)

    with progress.step(f"preflight for node {node} ({supervisor.mode} mode)") as step:
        if not args.token.strip():
            raise StepError("no --token given", FRESH_TOKEN)
        try:
            parse_token(args.token)
        except TokenError as exc:
            raise StepError(f"bad token: {exc}", FRESH_TOKEN) from None
        if manifest_path.exists():
            raise StepError(f"keadm join already ran on this host (its record is {manifest_path})",
                            "run `keadm reset edge` first")
        pid = supervisor.running("edgecore")
        if pid is not None:
            raise StepError(f"edgecore is already running (pid {pid})", "stop it (`keadm reset edge`) first")
        if paths.edgecore_config.exists():
            raise StepError(f"{paths.edgecore_config} exists already",
                            "remove it (or `keadm reset edge`) to join again")
        for line in net.require_free_ports(_ports(config)):
            step.note(line)

    with progress.step(f"reach cloudcore at {args.cloudcore_ipport} and :{certport}"):
        net.require_reachable(cloud, options.cloud_port)
        net.require_reachable(cloud, certport)

    with progress.step(f"fetch the CA from {cloud}:{certport} and check its hash against the token") as step:
        ca = net.fetch_ca(cloud, certport, args.token)
        step.note(f"CA {ca.subject.rfc4514_string()} matches the token")

    with progress.step(f"check that node name {node} is free"):
        if net.node_exists(cloud, certport, node, ca):
            raise StepError(f"a node named {node} already exists in the cloud",
                            f"join with another --edgenode-name, or delete the old node on the cloud "
                            f"(`kubectl delete node {node}`)")

    with progress.step(f"get the node certificate ({edge_hub.tls_cert_file})"):
        for target in (edge_hub.tls_ca_file, edge_hub.tls_cert_file, edge_hub.tls_private_key_file):
            manifest.make_dirs(Path(target).parent)
            manifest.add_new("file", Path(target))
        hub_with_token = EdgeHub.model_validate({**edge_hub.model_dump(by_alias=True), "token": args.token})
        try:
            asyncio.run(bootstrap(hub_with_token, node, timeout=net.HTTP_TIMEOUT))
        except PKIError as exc:
            cause = str(exc)
            fix = FRESH_TOKEN if "token" in cause else "see the cause; check cloudcore's log on the cloud"
            raise StepError(cause, fix) from None

    with progress.step(f"write {paths.edgecore_config}"):
        manifest.make_dirs(paths.config_dir)
        manifest.add_new("file", paths.edgecore_config)
        write_atomic(paths.edgecore_config, rendered.text.encode(), 0o640)

    with progress.step("start edgecore") as step:
        database = Path(config.database.data_source)
        manifest.make_dirs(database.parent)
        for suffix in ("", "-wal", "-shm"):
            manifest.add_new("file", database.with_name(database.name + suffix))
        if config.modules.device_twin.dmi_sock_path:
            manifest.add_new("file", Path(config.modules.device_twin.dmi_sock_path))
        kubelet = config.modules.edged
        manifest.add_new("tree", Path(kubelet.root_directory))
        manifest.add_new("tree", Path(kubelet.tailored_kubelet_config.static_pod_path))
        argv = [program("edgecore"), "--config", str(paths.edgecore_config),
                "--pidfile", str(paths.pidfile("edgecore"))]
        try:
            pid = supervisor.start(Service("edgecore", tuple(argv)), manifest, args.timeout)
        except ServiceError as exc:
            raise StepError(str(exc), f"fix the cause in {supervisor.where_logs('edgecore')}, then "
                                      "`keadm reset edge --force` and join again") from None
        step.note(f"pid {pid}; logs: {supervisor.where_logs('edgecore')}")

    monitor = config.common_config.monitor_server
    with progress.step("wait for the connection to cloudcore") as step:
        if not monitor.enable:
            step.note("commonConfig.monitorServer is disabled: connection not checked")
        else:
            address = monitor.bind_address.replace("0.0.0.0", "127.0.0.1")
            if not wait_until(lambda: net.edge_connected(address) is True, args.timeout, interval=0.3):
                raise StepError(
                    f"edgecore runs but is not connected to cloudcore after {args.timeout:.0f} s",
                    f"see {supervisor.where_logs('edgecore')}; check that {args.cloudcore_ipport} is cloudcore's "
                    "websocket port and reachable")
    print(f"\nNode {node} joined. Check on the cloud: kubectl get node {node}\n"
          f"edgecore logs: {supervisor.where_logs('edgecore')}")
    return 0


def _ports(config: EdgeCoreConfig) -> list[tuple[str, str, int]]:
    ports = []
    monitor = config.common_config.monitor_server
    if monitor.enable:
        host, _, port = monitor.bind_address.rpartition(":")
        ports.append(("edgecore monitor", host.strip("[]"), int(port)))
    meta = config.modules.meta_manager.meta_server
    if config.modules.meta_manager.enable and meta.enable:
        host, _, port = meta.server.rpartition(":")
        ports.append(("metaServer", host.strip("[]"), int(port)))
    return ports
