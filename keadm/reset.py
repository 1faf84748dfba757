"""`keadm reset`, `reset cloud`, `reset edge`: undo exactly what init/join recorded in their manifests.

Order: daemons stopped (edge before cloud; within a role, the last started first), units removed, files and
trees deleted, then the directories keadm created, each only if empty. Asks before changing anything
unless --force. Never touches a path that is not in a manifest (containers that edgecore started stay in
the runtime; the Node object and, with a real cluster, the CRDs and secrets stay in the cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from keadm.manifest import Manifest
from keadm.paths import Paths, Role
from keadm.progress import Progress, StepError
from keadm.service import ServiceError, remove_unit, stop_daemon


def add_reset_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = False if top else argparse.SUPPRESS  # a subcommand must not clobber `reset --force cloud`
    parser.add_argument("--force", action="store_true", default=default, help="do not ask for confirmation")
    parser.add_argument("--kube-config", type=Path, default=None if top else argparse.SUPPRESS,
                        help="accepted for compatibility: keadm removes only what its record lists")
    parser.add_argument("--remote-runtime-endpoint", default=None if top else argparse.SUPPRESS,
                        help="accepted for compatibility (containers are left to the runtime)")


def _confirm(summary: str) -> bool:
    print(summary)
    print("Continue? [y/N]: ", end="", flush=True)
    answer = sys.stdin.readline() if sys.stdin is not None else ""
    return answer.strip().lower() in ("y", "yes")


def reset(args: argparse.Namespace) -> int:
    paths = Paths.from_env()
    roles: list[Role] = [args.role] if getattr(args, "role", None) else ["edge", "cloud"]
    manifests: list[Manifest] = []
    for role in roles:
        try:
            loaded = Manifest.load(paths.manifest(role))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if loaded is not None:
            manifests.append(loaded)
    if not manifests:
        print(f"nothing to reset: no record of keadm {' or '.join(roles)} under {paths.etc / 'keadm'}")
        return 0
    daemons = [e.name for m in manifests for e in m.entries if e.kind in ("daemon", "unit")]
    count = sum(1 for m in manifests for e in m.entries if e.kind not in ("daemon", "unit"))
    if not args.force and not _confirm(
            f"keadm reset will stop {', '.join(daemons) or 'no daemon'} and delete {count} files and directories "
            f"that keadm {' and '.join(roles)} made."):
        print("aborted: nothing changed (--force skips this question)", file=sys.stderr)
        return 1
    progress = Progress(2)
    with progress.step("stop " + (", ".join(daemons) or "no daemon")) as step:
        for manifest in manifests:
            for entry in reversed(manifest.entries):
                try:
                    if entry.kind == "daemon":
                        step.note(f"{entry.name}: {stop_daemon(Path(entry.path)).value}")
                    elif entry.kind == "unit":
                        step.note(remove_unit(Path(entry.path)))
                except ServiceError as exc:
                    raise StepError(f"{entry.name}: {exc}", f"stop it by hand (pidfile {entry.path}), then "
                                                            "run `keadm reset` again") from None
    with progress.step("delete what keadm made") as step:
        for manifest in manifests:
            _remove(manifest, step.note)
    return 0


def _remove(manifest: Manifest, note: Callable[[str], None]) -> None:
    for entry in reversed(manifest.entries):
        path = Path(entry.path)
        if entry.kind == "file":
            path.unlink(missing_ok=True)
        elif entry.kind == "tree":
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                raise StepError(f"cannot delete {path}", f"check what holds it (mounts: `grep {path} /proc/mounts`)")
    manifest.path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # keadm's own record directory, whichever role made it
        manifest.path.parent.rmdir()
    for entry in reversed(manifest.of_kind("dir")):
        path = Path(entry.path)
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            note(f"kept {path}: it holds files keadm did not make")


def after_failure(paths: Paths, role: Role) -> str:
    """After a failed init/join: remove what it made if no daemon was started yet, else say how to."""
    record = paths.manifest(role)
    try:
        manifest = Manifest.load(record)
    except ValueError as exc:
        return f"  {exc}"
    if manifest is None:
        return "  nothing was changed on this host"
    if manifest.of_kind("daemon") or manifest.of_kind("unit"):
        return (f"  daemons were started and their logs kept; what this run made is listed in {record}: "
                f"`keadm reset {role} --force` removes it")
    kept: list[str] = []
    try:
        _remove(manifest, kept.append)
    except StepError as exc:
        return f"  could not remove what this run made ({exc.cause}): `keadm reset {role} --force` retries"
    return "  removed the files this run had made" + "".join(f"; {line}" for line in kept)
