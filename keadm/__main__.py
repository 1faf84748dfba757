"""`keadm`: set up KubeEdge cloud and edge nodes (`keadm --help`).

Owns only argument parsing and dispatch; the commands live in keadm.cloud (init, gettoken), keadm.edge (join)
and keadm.reset. Flag names and defaults are upstream's (shared/ref/config.md section 3); a failed step
prints its name, the cause and the fix, and the exit code is non-zero.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.version import describe
from keadm import cloud, edge, reset
from keadm.paths import Paths, Role
from keadm.progress import StepFailed

EPILOG = """\
examples:
  keadm init --advertise-address=192.168.1.10
  keadm gettoken
  keadm join --cloudcore-ipport=192.168.1.10:10000 --token=<token> --edgenode-name=edge-1
  keadm reset edge --force

paths move with KE_ETC, KE_VAR, KE_LOGS, KE_RUN (and KE_SYSTEMD_DIR, KE_SERVICE_MODE=auto|systemd|daemon);
see docs/keadm.md.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keadm", description="keadm: set up KubeEdge cloud and edge nodes.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the version")
    cloud.add_init_flags(commands.add_parser(
        "init", help="set up the cloud side: control plane (embedded unless --kube-config), secrets, CRDs, cloudcore"))
    cloud.add_gettoken_flags(commands.add_parser("gettoken", help="print the join token"))
    edge.add_join_flags(commands.add_parser("join", help="join this host as an edge node"))
    reset_parser = commands.add_parser("reset", help="stop and remove what init/join made on this host")
    reset.add_reset_flags(reset_parser, top=True)
    roles = reset_parser.add_subparsers(dest="role", metavar="ROLE")
    for role in ("cloud", "edge"):
        made_by = "init" if role == "cloud" else "join"
        reset.add_reset_flags(roles.add_parser(role, help=f"reset only what `keadm {made_by}` made"), top=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(describe("keadm"))
        return 0
    run = {"init": cloud.init, "gettoken": cloud.gettoken, "join": edge.join, "reset": reset.reset}[args.command]
    try:
        return run(args)
    except StepFailed as exc:
        print(exc.render(), file=sys.stderr)
        roles: dict[str, Role] = {"init": "cloud", "join": "edge"}
        role = roles.get(args.command)
        if role is not None:
            print(reset.after_failure(Paths.from_env(), role), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
