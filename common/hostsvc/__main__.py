"""Command line for scripts/quickstart: `python -m common.hostsvc <command> ...` (see --help).

This module owns only argument parsing and output; every command calls the same functions the test
fixtures use. Machine-readable results (the containerd socket path, image archive paths) go to stdout;
failures print one line to stderr and exit 1 (argparse usage errors keep their exit 2). It never
holds service logic of its own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from common.hostsvc import containerd, mosquitto
from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.mosquitto import MosquittoLayout, TlsFiles
from common.hostsvc.ociimage import build_busybox_image, build_pause_image
from common.hostsvc.process import (
    Daemon,
    HostServiceError,
    NotifySocket,
    is_running,
    stop_from_pidfile,
)

EPILOG = """\
examples:
  python -m common.hostsvc build-images --out /var/lib/ke/images
  SOCK=$(python -m common.hostsvc containerd-up --base /run/ke-demo)
  python -m common.hostsvc mosquitto-up --dir /run/ke-demo/mosquitto --port 1883
  python -m common.hostsvc status --base /run/ke-demo
  python -m common.hostsvc mosquitto-down --dir /run/ke-demo/mosquitto
  python -m common.hostsvc containerd-down --base /run/ke-demo

containerd and mosquitto must be started as root. Daemons run detached; their pidfiles and logs live
in --base / --dir, so any later shell can stop them.
"""


def _saved_layout(args: argparse.Namespace) -> ContainerdLayout:
    """For -down: the layout containerd-up saved under --base (unless --tag names another one)."""
    saved = ContainerdLayout.load(args.base)
    if saved is not None and args.tag in (None, saved.tag):
        return saved
    return ContainerdLayout.from_base(args.base, args.tag)


def _layout_from_flags(args: argparse.Namespace) -> ContainerdLayout:
    """For -up/-config: the flags, with the tag of an earlier -up under --base when --tag is not given."""
    saved = ContainerdLayout.load(args.base)
    tag = args.tag if args.tag is not None or saved is None else saved.tag
    return ContainerdLayout.from_base(args.base, tag, snapshotter=args.snapshotter)


def cmd_containerd_config(args: argparse.Namespace) -> None:
    print(containerd.render_config(_layout_from_flags(args)), end="")


def cmd_containerd_up(args: argparse.Namespace) -> None:
    layout = _layout_from_flags(args)
    daemon = containerd.start(layout)
    try:
        containerd.ensure_local_images(layout, args.images or layout.base / "images")
    except HostServiceError:
        containerd.teardown(layout, daemon)
        raise
    print(layout.socket)


def cmd_containerd_down(args: argparse.Namespace) -> None:
    containerd.teardown(_saved_layout(args))
    print(f"containerd under {args.base} stopped and removed")


def cmd_mosquitto_up(args: argparse.Namespace) -> None:
    given = [f for f in (args.ca, args.cert, args.key) if f is not None]
    if (args.tls_port is None and given) or (args.tls_port is not None and len(given) != 3):
        raise HostServiceError("--tls-port needs --ca, --cert and --key (and they need --tls-port)")
    certs = TlsFiles(ca=args.ca, cert=args.cert, key=args.key) if args.tls_port is not None else None
    layout = MosquittoLayout(
        dir=args.dir.resolve(),
        port=args.port,
        tls_port=args.tls_port,
        bind=args.bind,
        certs=certs,
        persistence=args.persistence,
    )
    daemon = mosquitto.start(layout)
    print(
        f"mosquitto pid {daemon.pid} on {layout.bind}:{layout.port}"
        + (f" (TLS {layout.tls_port})" if layout.tls_port is not None else "")
    )


def cmd_mosquitto_down(args: argparse.Namespace) -> None:
    print(f"mosquitto: {mosquitto.stop(args.dir.resolve()).value}")


def cmd_build_images(args: argparse.Namespace) -> None:
    for image in (
        build_busybox_image(args.out / "busybox.oci.tar"),
        build_pause_image(args.out / "pause.oci.tar"),
    ):
        print(f"{image.path} {image.ref} {image.manifest_digest}")


def cmd_status(args: argparse.Namespace) -> None:
    layout = ContainerdLayout.load(args.base) or ContainerdLayout.from_base(args.base)
    pid = is_running(layout.pidfile)
    print(f"containerd: running pid {pid} socket {layout.socket}" if pid else "containerd: stopped")
    mosquitto_dir = (args.mosquitto_dir or args.base / "mosquitto").resolve()
    pid = is_running(mosquitto_dir / mosquitto.PIDFILE_NAME)
    print(f"mosquitto: running pid {pid}" if pid else "mosquitto: stopped")


def cmd_daemon_up(args: argparse.Namespace) -> None:
    pid = is_running(args.pidfile)
    if pid is not None:
        print(f"{args.name}: already running, pid {pid}")
        return
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise HostServiceError("give the daemon's command after --")
    notify = NotifySocket(args.pidfile.with_name(f".{args.name}.notify"))
    try:
        daemon = Daemon.start(argv, pidfile=args.pidfile, logfile=args.log, env=notify.env())
        daemon.wait_ready(notify.ready, args.timeout, what=args.name)
    finally:
        notify.close()
    print(f"{args.name}: running, pid {daemon.pid}, log {args.log}")


def cmd_daemon_down(args: argparse.Namespace) -> None:
    print(f"{args.name}: {stop_from_pidfile(args.pidfile).value}")


def cmd_daemon_status(args: argparse.Namespace) -> None:
    pid = is_running(args.pidfile)
    print(f"{args.name}: running pid {pid}" if pid else f"{args.name}: stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.hostsvc",
        description="Start, stop and inspect the host daemons (containerd, mosquitto) and build the "
        "local OCI images.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], None], help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(func=func)
        return cmd

    def containerd_flags(cmd: argparse.ArgumentParser, snapshotter: bool) -> None:
        cmd.add_argument(
            "--base",
            type=Path,
            required=True,
            help="instance directory: root/, state/ (socket), config.toml, pidfile, log",
        )
        cmd.add_argument(
            "--tag",
            help="[a-z0-9]{1,13}: names the CNI bridge ke<TAG> and picks its /24 "
            "(default: a hash of --base; -down and status reuse what -up saved)",
        )
        if snapshotter:
            cmd.add_argument(
                "--snapshotter",
                default="overlayfs",
                choices=["overlayfs", "native"],
                help="containerd snapshotter (default: overlayfs)",
            )

    containerd_flags(
        add("containerd-config", cmd_containerd_config, "print the containerd config.toml"), True
    )
    up = add(
        "containerd-up",
        cmd_containerd_up,
        "write config + CNI conflist, start containerd, import the busybox and pause images; "
        "prints the socket path",
    )
    containerd_flags(up, True)
    up.add_argument(
        "--images",
        type=Path,
        help="where the image archives are (built there if missing; default BASE/images)",
    )
    containerd_flags(
        add(
            "containerd-down",
            cmd_containerd_down,
            "remove all containers, stop containerd, unmount, delete root/state and bridge",
        ),
        False,
    )

    mup = add("mosquitto-up", cmd_mosquitto_up, "write mosquitto.conf in --dir and start the broker")
    mup.add_argument("--dir", type=Path, required=True, help="broker directory: conf, pidfile, log, data")
    mup.add_argument("--port", type=int, default=1883, help="plain MQTT port (default 1883)")
    mup.add_argument("--bind", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    mup.add_argument("--tls-port", type=int, help="also listen with TLS on this port (needs the 3 files)")
    mup.add_argument("--ca", type=Path, help="CA certificate (PEM) for the TLS listener")
    mup.add_argument("--cert", type=Path, help="server certificate (PEM)")
    mup.add_argument("--key", type=Path, help="server key (PEM); must be readable by user mosquitto")
    mup.add_argument("--persistence", action="store_true", help="keep retained/session data in DIR/data")
    add("mosquitto-down", cmd_mosquitto_down, "stop the broker started with --dir").add_argument(
        "--dir", type=Path, required=True, help="the --dir given to mosquitto-up"
    )

    add("build-images", cmd_build_images, "write busybox.oci.tar and pause.oci.tar").add_argument(
        "--out", type=Path, required=True, help="output directory"
    )

    st = add("status", cmd_status, "one line per daemon: running pid or stopped")
    st.add_argument("--base", type=Path, required=True, help="the containerd --base")
    st.add_argument("--mosquitto-dir", type=Path, help="the mosquitto --dir (default BASE/mosquitto)")

    dup = add("daemon-up", cmd_daemon_up,
              "start a kubeedge daemon detached and wait for its READY=1 (sd_notify protocol)")
    dup.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for READY=1 (default 30)")
    dup.add_argument("--log", type=Path, required=True, help="file for the daemon's stdout and stderr")
    dup.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the daemon's command line")
    ddown = add("daemon-down", cmd_daemon_down, "stop a daemon started with daemon-up (pid-verified)")
    dstatus = add("daemon-status", cmd_daemon_status, "running pid or stopped")
    for cmd in (dup, ddown, dstatus):
        cmd.add_argument("--name", required=True, help="name shown in messages (e.g. cloudcore)")
        cmd.add_argument("--pidfile", type=Path, required=True, help="the daemon's pidfile")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (HostServiceError, OSError, ValueError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        print(f"hostsvc {args.command}: error: {lines[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
