"""`keadm`: install and join KubeEdge nodes (see `keadm --help`).

Subcommands arrive with the parts they drive (init, gettoken, join, reset).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.version import describe


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keadm", description="keadm: set up KubeEdge cloud and edge nodes.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(describe("keadm"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
