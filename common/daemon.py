"""Daemon lifecycle for cloudcore and edgecore: signals, pidfile, sd_notify, bounded shutdown.

Owns the process's one event loop and the rule that SIGTERM/SIGINT stop everything within
`stop_timeout` (5 s): the daemon's main coroutine gets a stop event; if it has not returned by the
deadline it is cancelled. A second signal cancels at once. It never forks: systemd (Type=notify or
simple) or the caller's `setsid` owns the detaching.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final

from common.hostsvc.process import PidRecord, own_binary, pid_runs
from common.log import get_logger

log = get_logger("daemon")

DEFAULT_STOP_TIMEOUT: Final = 5.0

MainFn = Callable[[asyncio.Event], Awaitable[int]]


class PidfileError(RuntimeError):
    """Another live instance holds the pidfile."""


def sd_notify(state: str) -> bool:
    """Tell systemd about our state (`READY=1`, `STOPPING=1`); a no-op without NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as exc:
            log.v(4).info("sd_notify failed", state=state, err=exc)  # the manager went away: harmless
            return False
    return True


@contextlib.contextmanager
def pidfile(path: Path | None) -> Iterator[None]:
    """Hold `path` for the block; refuse when a live process of the recorded program holds it.

    Same format as common.hostsvc (pid, then the program), so `python -m common.hostsvc
    daemon-down` can stop us without ever signalling a recycled pid.
    """
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    held = PidRecord.read(path)
    if held is not None and held.pid != os.getpid() and pid_runs(held.pid, held.binary):
        raise PidfileError(f"{path} is held by running process {held.pid}: stop it first")
    mine = PidRecord(os.getpid(), own_binary())
    mine.write(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if PidRecord.read(path) == mine:
                path.unlink()


async def _supervise(main: MainFn, stop_timeout: float) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.ensure_future(main(stop))
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        log.info("signal received, stopping", signal=signal.Signals(signum).name)
        if signals_seen == 1:
            sd_notify("STOPPING=1")
            stop.set()
        else:
            task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=stop_timeout)
            if not done:
                log.error("shutdown deadline passed, cancelling", timeout_s=stop_timeout)
                task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run(main: MainFn, *, pidfile_path: Path | None = None, stop_timeout: float = DEFAULT_STOP_TIMEOUT) -> int:
    """Run `main(stop_event)` as the daemon; return its exit code (1 if it had to be cancelled).

    Unlike asyncio.run, leftover tasks get one bounded chance to finish: a task that swallows
    cancellation must not keep the process alive past the shutdown deadline.
    """
    with pidfile(pidfile_path):
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(_supervise(main, stop_timeout))
        finally:
            _cancel_leftovers(loop, timeout=min(1.0, stop_timeout))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    leftovers = asyncio.all_tasks(loop)
    if not leftovers:
        return
    for task in leftovers:
        task.cancel()
    _, pending = loop.run_until_complete(asyncio.wait(leftovers, timeout=timeout))
    for task in pending:
        log.error("task ignored cancellation; abandoning it at exit", task=task.get_name())
