"""Module lifetimes: register every module on the bus, run each as one owned task, stop them together.

A module is any object with `name`, `group` and `async run(ctx)`. `run` returns only when the module
is done; it owns whatever tasks it starts (a TaskGroup inside `run`), so cancelling `run` cancels
them all. If one module fails, the process stops: a half-running edgecore is worse than a restart
by systemd, as with upstream's beehive.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from common.bus import Mailbox, ModuleBus
from common.log import get_logger

log = get_logger("modules")


@dataclass(frozen=True, slots=True)
class ModuleContext:
    bus: ModuleBus
    mailbox: Mailbox


class Module(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def group(self) -> str: ...

    async def run(self, ctx: ModuleContext) -> None: ...


async def run_modules(bus: ModuleBus, modules: Sequence[Module], stop: asyncio.Event,
                      stop_timeout: float = 4.0) -> int:
    """Run until `stop` is set (exit 0) or a module fails or returns early (exit 1)."""
    tasks: dict[asyncio.Task[None], str] = {}
    for module in modules:
        ctx = ModuleContext(bus, bus.register(module.name, module.group))
        tasks[asyncio.create_task(module.run(ctx), name=f"module:{module.name}")] = module.name
        log.info("module started", module=module.name, group=module.group)
    stopper = asyncio.ensure_future(stop.wait())
    exit_code = 0
    try:
        await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (t for t in tasks if t.done()):
            exit_code = 1
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                log.error("module failed, stopping", module=tasks[task], err=_describe(exc))
            else:
                log.error("module returned before stop, stopping", module=tasks[task])
    finally:
        stopper.cancel()
        await _cancel_all(tasks, stop_timeout)
        bus.close()
    return exit_code


async def _cancel_all(tasks: dict[asyncio.Task[None], str], timeout: float) -> None:
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        log.error("module did not stop in time", module=tasks[task], timeout_s=timeout)
    for task in tasks:
        if task.done():
            if not task.cancelled():
                task.exception()  # retrieved, so asyncio does not warn about it at exit
            log.v(2).info("module stopped", module=tasks[task])


def _describe(exc: BaseException) -> str:
    """The error and, for an ExceptionGroup (a module's TaskGroup), each error inside it with where it was
    raised: "unhandled errors in a TaskGroup (1 sub-exception)" alone names no cause."""
    if not isinstance(exc, BaseExceptionGroup):
        return f"{type(exc).__name__}: {exc}"
    causes = []
    for inner in exc.exceptions:
        frame = traceback.extract_tb(inner.__traceback__)[-1:] if inner.__traceback__ else []
        where = f" at {frame[0].filename}:{frame[0].lineno}" if frame else ""
        causes.append(_describe(inner) + where)
    return f"{type(exc).__name__}: {'; '.join(causes)}"
