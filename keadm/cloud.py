"""`keadm init` and `keadm gettoken`: the cloud side.

init: preflight (nothing of ours running, ports free), the embedded control plane unless --kube-config names
a cluster, the kubeedge secrets (CloudHub's own code), every CRD under config/crds, cloudcore.yaml, cloudcore
as a service, a wait until CloudHub listens, then the exact `keadm join` line. Everything it makes is
recorded in the cloud manifest for `keadm reset cloud`. The join token is printed only in that last line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from common.config import CloudCoreConfig
from common.config.base import first_host_ip
from common.pki import write_atomic
from keadm import kubeapi, net
from keadm.manifest import Manifest
from keadm.paths import Paths, service_mode
from keadm.progress import Progress, StepError
from keadm.render import CloudOptions, RenderError, host_port, parse_set, render_cloudcore
from keadm.service import Service, ServiceError, Supervisor, program, wait_until

DEFAULT_KUBE_CONFIG = Path("/root/.kube/config")


def add_init_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--advertise-address", default="",
                        help="comma-separated IPs edge nodes use to reach cloudcore; they go into its certificate "
                             "(default: this host's first IP)")
    parser.add_argument("--kube-config", type=Path,
                        help="kubeconfig of an existing cluster; without it keadm starts the embedded control "
                             "plane (`cloudcore controlplane`)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set a cloudcore.yaml key, e.g. modules.cloudHub.websocket.port=10000 (repeatable)")
    parser.add_argument("--kubeedge-version", default="", help="accepted for compatibility; this build is used")
    parser.add_argument("-d", "--dry-run", action="store_true", help="print cloudcore.yaml and change nothing")
    parser.add_argument("--force", action="store_true", help="accepted for compatibility (no effect)")
    parser.add_argument("--apiserver-port", type=int, default=6443,
                        help="embedded control plane's port (default %(default)s; not upstream)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each daemon (default 90)")


@dataclass
class InitPlan:
    paths: Paths
    embedded: bool
    kubeconfig: Path
    config: CloudCoreConfig
    text: str
    advertise: list[str]
    apiserver_port: int


def plan(args: argparse.Namespace, paths: Paths) -> InitPlan:
    advertise = [a.strip() for a in args.advertise_address.split(",") if a.strip()] or [first_host_ip()]
    embedded = args.kube_config is None
    kubeconfig = paths.admin_kubeconfig if embedded else args.kube_config.absolute()
    options = CloudOptions(advertise_address=advertise, kube_config=kubeconfig,
                           stream_ca=paths.controlplane_dir / "pki" / "ca.crt" if embedded else None,
                           sets=parse_set(args.set))
    rendered = render_cloudcore(options, paths)
    return InitPlan(paths, embedded, kubeconfig, rendered.config, rendered.text, advertise, args.apiserver_port)


def _ports(p: InitPlan) -> list[tuple[str, str, int]]:
    hub = p.config.modules.cloud_hub
    ports = [("cloudHub websocket", hub.websocket.address, hub.websocket.port),
             ("cloudHub https", hub.https.address, hub.https.port)]
    if hub.quic.enable:
        ports.append(("cloudHub quic", hub.quic.address, hub.quic.port))
    stream = p.config.modules.cloud_stream
    if stream.enable:
        ports += [("cloudStream stream", "0.0.0.0", stream.stream_port),
                  ("cloudStream tunnel", "0.0.0.0", stream.tunnel_port)]
    if p.embedded:
        ports.append(("control plane", "127.0.0.1", p.apiserver_port))
    return ports


def _client_host(address: str) -> str:
    return "127.0.0.1" if address in ("0.0.0.0", "::", "") else address


def init(args: argparse.Namespace) -> int:
    paths = Paths.from_env()
    try:
        p = plan(args, paths)
    except RenderError as exc:
        print(f"error: invalid flags: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(p.text, end="")
        return 0
    supervisor = Supervisor(service_mode(), paths)
    progress = Progress(8 if p.embedded else 7)
    manifest_path = paths.manifest("cloud")
    manifest = Manifest(manifest_path)
    hub = p.config.modules.cloud_hub

    with progress.step(f"preflight ({supervisor.mode} mode)") as step:
        if manifest_path.exists():
            raise StepError(f"keadm init already ran on this host (its record is {manifest_path})",
                            "run `keadm reset cloud` first")
        for name in ("cloudcore", "controlplane"):
            pid = supervisor.running(name)
            if pid is not None:
                raise StepError(f"{name} is already running (pid {pid})", "stop it (`keadm reset cloud`) first")
        if not p.embedded and not p.kubeconfig.is_file():
            raise StepError(f"--kube-config {p.kubeconfig} does not exist",
                            "give the kubeconfig of your cluster, or omit --kube-config for the embedded one")
        if paths.cloudcore_config.exists():
            raise StepError(f"{paths.cloudcore_config} exists already",
                            "remove it (or `keadm reset cloud`) to initialise again")
        for line in net.require_free_ports(_ports(p)):
            step.note(line)
        monitor = p.config.common_config.monitor_server
        if monitor.enable:
            host, _, port = monitor.bind_address.rpartition(":")
            if net.port_in_use(host.strip("[]"), int(port)):
                step.note(f"warning: cloudcore monitor port {port} is in use: cloudcore will run without /metrics "
                          "and /readyz (set commonConfig.monitorServer.bindAddress with --set to move it)")

    if p.embedded:
        with progress.step(f"start the control plane on https://127.0.0.1:{p.apiserver_port}") as step:
            cp_dir = paths.controlplane_dir
            manifest.make_dirs(paths.var)
            manifest.add_new("tree", cp_dir)
            argv = [program("cloudcore"), "controlplane", "--data-dir", str(cp_dir), "--bind-port",
                    str(p.apiserver_port), "--pidfile", str(paths.pidfile("controlplane"))]
            for address in p.advertise:
                argv += ["--tls-san", address]
            pid = _start(supervisor, Service("controlplane", tuple(argv)), manifest, args.timeout)
            manifest.make_dirs(paths.etc)
            manifest.add_new("file", paths.admin_kubeconfig)
            write_atomic(paths.admin_kubeconfig, (cp_dir / "admin.kubeconfig").read_bytes(), 0o600)
            step.note(f"pid {pid}; kubeconfig {paths.admin_kubeconfig}")

    with progress.step(f"reach the Kubernetes API ({p.kubeconfig})") as step:
        try:
            version = kubeapi.run(p.kubeconfig, kubeapi.server_version, timeout=15.0)
        except Exception as exc:
            raise StepError(f"no Kubernetes API with {p.kubeconfig}: {type(exc).__name__}: {exc}",
                            "check the kubeconfig's server address and credentials (kubectl get nodes)") from None
        step.note(f"server {version}")

    with progress.step("CA, cloudcore certificate and join token (secrets in namespace kubeedge)") as step:
        digest = kubeapi.run(p.kubeconfig, lambda api: kubeapi.cloud_secrets(api, hub), timeout=30.0)
        step.note(f"CA sha256 {digest}; certificate IPs {', '.join(hub.advertise_address)}")

    with progress.step(f"install the KubeEdge CRDs ({kubeapi.CRD_DIR})") as step:
        for line in kubeapi.run(p.kubeconfig, kubeapi.install_crds, timeout=60.0):
            step.note(line)

    with progress.step(f"write {paths.cloudcore_config}"):
        manifest.make_dirs(paths.config_dir)
        manifest.add_new("file", paths.cloudcore_config)
        manifest.add_new("file", Path(hub.unix_socket.address.removeprefix("unix://")))
        write_atomic(paths.cloudcore_config, p.text.encode(), 0o644)

    with progress.step("start cloudcore") as step:
        argv = [program("cloudcore"), "--config", str(paths.cloudcore_config),
                "--pidfile", str(paths.pidfile("cloudcore"))]
        pid = _start(supervisor, Service("cloudcore", tuple(argv)), manifest, args.timeout)
        step.note(f"pid {pid}; logs: {supervisor.where_logs('cloudcore')}")

    ws = (_client_host(hub.websocket.address), hub.websocket.port)
    https = (_client_host(hub.https.address), hub.https.port)
    with progress.step(f"wait for CloudHub on :{ws[1]} (websocket) and :{https[1]} (certificates)"):
        if not wait_until(lambda: net.listening(*ws) and net.listening(*https), args.timeout):
            raise StepError(f"cloudcore runs but does not listen after {args.timeout:.0f} s",
                            f"see {supervisor.where_logs('cloudcore')}")

    token = kubeapi.run(p.kubeconfig, kubeapi.join_token, timeout=15.0) or "<run keadm gettoken>"
    join = f"keadm join --cloudcore-ipport={host_port(p.advertise[0], hub.websocket.port)} --token={token}"
    if hub.https.port != 10002:
        join += f" --certport={hub.https.port}"
    print(f"\nCloudCore is running. Kubernetes API: export KUBECONFIG={p.kubeconfig}\n"
          f"On each edge node, run:\n\n  {join}\n\n"
          f"The token expires after {2 * hub.token_refresh_duration} h; `keadm gettoken` prints the current one.")
    return 0


def _start(supervisor: Supervisor, service: Service, manifest: Manifest, timeout: float) -> int:
    try:
        return supervisor.start(service, manifest, timeout)
    except ServiceError as exc:
        raise StepError(str(exc), f"fix the cause in {supervisor.where_logs(service.name)}, then "
                                  "`keadm reset cloud --force` and `keadm init` again") from None


def add_gettoken_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kube-config", type=Path,
                        help="kubeconfig of the cluster (default: the embedded control plane's, else "
                             f"{DEFAULT_KUBE_CONFIG})")


def gettoken(args: argparse.Namespace) -> int:
    paths = Paths.from_env()
    kubeconfig = args.kube_config or (paths.admin_kubeconfig if paths.admin_kubeconfig.is_file()
                                      else DEFAULT_KUBE_CONFIG)
    try:
        token = kubeapi.run(kubeconfig, kubeapi.join_token, timeout=15.0)
    except Exception as exc:
        print(f"error: cannot read Secret kubeedge/tokensecret with {kubeconfig}: {type(exc).__name__}: {exc}\n"
              "  fix: check --kube-config and that `keadm init` ran", file=sys.stderr)
        return 1
    if token is None:
        print("error: Secret kubeedge/tokensecret has no tokendata\n"
              "  fix: start cloudcore (`keadm init`); it stores a token at start", file=sys.stderr)
        return 1
    print(token)
    return 0
