"""cloudcore wiring: config in, modules on one bus, run until stopped.

Modules join the list below as they are built (cloudhub, edgecontroller, devicecontroller, ...).
"""

from __future__ import annotations

import asyncio

from cloudcore.cloudhub.certs import ensure_cloud_certs
from common import daemon
from common.bus import ModuleBus
from common.config import CloudCoreConfig
from common.log import get_logger
from common.modules import Module, run_modules

log = get_logger("cloudcore")


async def run(config: CloudCoreConfig, stop: asyncio.Event) -> int:
    if config.adjust():
        log.info("raised qps/burst and node-scaled buffers to upstream minimums",
                 node_limit=config.modules.cloud_hub.node_limit)
    if config.modules.cloud_hub.enable:
        await asyncio.to_thread(ensure_cloud_certs, config.modules.cloud_hub)
    modules: list[Module] = []
    daemon.sd_notify("READY=1")
    log.info("cloudcore started", modules=",".join(m.name for m in modules))
    return await run_modules(ModuleBus(), modules, stop)
