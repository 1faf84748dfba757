"""MetaManager hands the pod changes it stored to the `edged` group, and carries on when there is no edged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.bus import Mailbox, ModuleBus
from common.config.edgecore import MetaManager as MetaManagerConfig
from common.constants import EdgeModule, Group, Op
from common.message import Message
from common.modules import ModuleContext
from edgecore.metamanager.module import MetaManagerModule
from edgecore.metamanager.store import MetaStore

BOUND = 5.0


def cloud(operation: str, resource: str, content: Any, rv: str) -> Message:
    return Message.new(source="edgecontroller", group=Group.RESOURCE, operation=operation, resource=resource,
                       content=content, resource_version=rv)


def pod(rv: int) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": str(rv)}}


@contextlib.asynccontextmanager
async def metamanager(path: Path, *, with_edged: bool) -> AsyncIterator[tuple[ModuleBus, Mailbox, Mailbox | None]]:
    store = await MetaStore.open(path)
    bus = ModuleBus()
    hub = bus.register(EdgeModule.EDGEHUB, Group.HUB)
    edged = bus.register(EdgeModule.EDGED, Group.EDGED) if with_edged else None
    module = MetaManagerModule(MetaManagerConfig(), store)
    task = asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))
    try:
        yield bus, hub, edged
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()


async def next_message(mailbox: Mailbox) -> Message:
    async with asyncio.timeout(BOUND):
        return await mailbox.get()


@pytest.mark.parametrize("with_edged", [True, False], ids=["edged", "no-edged"])
async def test_stored_pod_changes_reach_edged_after_their_ack(sqlite_path: Path, with_edged: bool) -> None:
    async with metamanager(sqlite_path, with_edged=with_edged) as (bus, hub, edged):
        insert = cloud(Op.INSERT, "default/pod/web", pod(5), "5")
        stale = cloud(Op.UPDATE, "default/pod/web", pod(4), "4")
        delete = cloud(Op.DELETE, "default/pod/web", pod(6), "6")
        for message in (insert, stale, delete):
            await bus.send(EdgeModule.METAMANAGER, message)
            ack = await next_message(hub)  # the ACK comes whether or not there is an edged
            assert (ack.operation, ack.parent_msg_id) == (Op.RESPONSE, message.msg_id)
        if edged is not None:
            handed = [await next_message(edged), await next_message(edged)]
            # The stale update was not stored, so edged never sees it.
            assert [m.msg_id for m in handed] == [insert.msg_id, delete.msg_id]
            assert len(edged) == 0
