"""edgecore wiring: config in, the edge database opened, modules on one bus, run until stopped.

Modules join the list below as they are built (metamanager, edged, eventbus, devicetwin).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite

from common import daemon
from common.bus import ModuleBus
from common.config import EdgeCoreConfig
from common.log import get_logger
from common.modules import Module, run_modules
from edgecore.edgehub.hub import EdgeHubModule

log = get_logger("edgecore")


async def check_database(data_source: str) -> None:
    """Open (and create) the edge database as upstream does at start; fail early if it cannot."""
    path = Path(data_source)
    path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode=WAL")
    log.v(2).info("edge database ready", path=data_source)


async def run(config: EdgeCoreConfig, stop: asyncio.Event) -> int:
    try:
        await check_database(config.database.data_source)
    except (OSError, aiosqlite.Error) as exc:
        log.error("cannot open the edge database", path=config.database.data_source, err=exc)
        return 1
    node = config.modules.edged.hostname_override
    modules: list[Module] = []
    if config.modules.edge_hub.enable:
        modules.append(EdgeHubModule(config.modules.edge_hub, node))
    daemon.sd_notify("READY=1")
    log.info("edgecore started", node=node, modules=",".join(m.name for m in modules))
    return await run_modules(ModuleBus(), modules, stop)
