"""Workers draining a KeyQueue into one reconcile function: the shared loop of both controllers.

Each reconcile is bounded by `timeout`; an exception (API error, timeout, bug) is logged and the key
comes back after its back-off, so one bad object never stops the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cloudcore.controllermanager.workqueue import KeyQueue
from common.log import get_logger

log = get_logger("controllermanager")

Reconcile = Callable[[str], Awaitable[None]]


async def run_workers(queue: KeyQueue, reconcile: Reconcile, *, count: int, name: str,
                      timeout: float = 60.0) -> None:
    async with asyncio.TaskGroup() as tasks:
        for index in range(count):
            tasks.create_task(_work(queue, reconcile, name, timeout), name=f"{name}:worker{index}")


async def _work(queue: KeyQueue, reconcile: Reconcile, name: str, timeout: float) -> None:
    while True:
        key = await queue.get()
        ok = False
        try:
            async with asyncio.timeout(timeout):
                await reconcile(key)
            ok = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of one key is retried, never fatal
            log.warning("sync failed, retrying", controller=name, key=key, err=f"{type(exc).__name__}: {exc}")
        finally:
            delay = await queue.done(key, ok)
        if delay is not None:
            log.v(2).info("retry scheduled", controller=name, key=key, retry_in=delay)
