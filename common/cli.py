"""The command line both daemons share: flags as upstream (`--config`, `--defaultconfig`, `--minconfig`,
`--version`, `-v/--v`) plus `--pidfile`, config loading with one-line errors, and the daemon run.

A bad config never prints a traceback: the process exits 1 with the file, line and key path.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from common import daemon, log
from common.config import ConfigError, default_config_yaml
from common.version import describe

C = TypeVar("C")

LoadFn = Callable[[Path], C]
AppFn = Callable[[C, asyncio.Event], Awaitable[int]]


def build_parser(program: Literal["cloudcore", "edgecore"], default_config: Path,
                 description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program, description=description)
    parser.add_argument("--config", type=Path, default=default_config, metavar="FILE",
                        help=f"the {program}.yaml to load (default {default_config})")
    printers = parser.add_mutually_exclusive_group()
    printers.add_argument("--defaultconfig", action="store_true",
                          help="print the full default configuration and exit")
    printers.add_argument("--minconfig", action="store_true",
                          help="print a minimal configuration (the keys users set) and exit")
    printers.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--pidfile", type=Path, default=Path(f"/run/kubeedge/{program}.pid"), metavar="FILE",
                        help="write our pid here while running; refuse to start if a live process holds it "
                             "(default %(default)s)")
    log.add_verbosity_flag(parser)
    return parser


def run_daemon(program: Literal["cloudcore", "edgecore"], args: argparse.Namespace, load: LoadFn[C],
               app: AppFn[C]) -> int:
    """Handle the print-and-exit flags, load the config, then run `app(config, stop)` as the daemon."""
    if args.version:
        print(describe(program))
        return 0
    if args.defaultconfig or args.minconfig:
        sys.stdout.write(default_config_yaml(program, minimal=args.minconfig))
        return 0
    log.setup(args.v)
    logger = log.get_logger(program)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logger.info("starting", version=describe(program), config=str(args.config), pid_file=str(args.pidfile))
    try:
        return daemon.run(lambda stop: app(config, stop), pidfile_path=args.pidfile)
    except daemon.PidfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(program: Literal["cloudcore", "edgecore"], default_config: Path, description: str, load: LoadFn[C],
         app: AppFn[C], argv: Sequence[str] | None = None) -> int:
    args = build_parser(program, default_config, description).parse_args(argv)
    return run_daemon(program, args, load, app)
