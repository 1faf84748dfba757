"""edgecore wiring: config in, the edge database opened, modules on one bus, run until stopped.

Modules join the list below as they are built. The edge database is
one SQLite file (`database.dataSource`); MetaManager's `meta` table and EdgeHub's `outbox` each use
their own connection to it (WAL), so their transactions never interleave; MetaServer, when enabled,
reads it through a third, read-only one and follows MetaManager's change feed.
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
from edgecore.cri import CRIClient
from edgecore.devicetwin.module import DeviceTwinModule
from edgecore.devicetwin.store import DeviceTwinStore
from edgecore.edged.module import EdgedModule
from edgecore.edgehub.hub import EdgeHubModule
from edgecore.edgehub.metrics import edgecore_monitor
from edgecore.edgehub.outbox_store import PersistentOutbox
from edgecore.edgestream.module import EdgeStreamModule
from edgecore.eventbus.module import EventBusModule
from edgecore.metamanager.module import MetaManagerModule
from edgecore.metamanager.store import MetaStore
from edgecore.metaserver.server import MetaServerModule

log = get_logger("edgecore")


async def open_database(path: Path) -> tuple[MetaStore, PersistentOutbox] | None:
    """The stores on the edge database, or None (logged) when it cannot be opened."""
    store = None
    try:
        store = await MetaStore.open(path)
        return store, await PersistentOutbox.open(path)
    except (OSError, aiosqlite.Error) as exc:
        log.error("cannot open the edge database", path=str(path), err=exc)
        if store is not None:
            await store.close()
        return None


async def run(config: EdgeCoreConfig, stop: asyncio.Event) -> int:
    opened = await open_database(Path(config.database.data_source))
    if opened is None:
        return 1
    store, outbox = opened
    node = config.modules.edged.hostname_override
    cri: CRIClient | None = None
    twin_store: DeviceTwinStore | None = None
    try:
        log.v(2).info("edge database ready", path=config.database.data_source, objects=len(store),
                      outbox=outbox.stats.pending)
        modules: list[Module] = []
        meta_config = config.modules.meta_manager
        meta: MetaManagerModule | None = None
        if meta_config.enable:
            meta = MetaManagerModule(meta_config, store)
            modules.append(meta)
            if meta_config.meta_server.enable:  # it serves MetaManager's store and change feed
                modules.append(MetaServerModule(meta_config.meta_server, meta, Path(config.database.data_source), node))
        elif meta_config.meta_server.enable:
            log.warning("metaServer.enable ignored: MetaServer needs metaManager.enable")
        if config.modules.edged.enable:
            # tailoredKubeletConfig.containerRuntimeEndpoint; the channel opens on Edged's first call.
            cri = CRIClient.from_config(config.modules.edged.tailored_kubelet_config)
            modules.append(EdgedModule(config.modules.edged, cri=cri, store=store))
        if config.modules.edge_stream.enable:
            modules.append(EdgeStreamModule(config.modules.edge_stream, node, config.modules.edged.node_ip, cri))
        if config.modules.event_bus.enable:
            modules.append(EventBusModule(config.modules.event_bus, node, Path(config.database.data_source)))
        if config.modules.device_twin.enable:
            try:
                twin_store = await DeviceTwinStore.open(Path(config.database.data_source))
            except (OSError, aiosqlite.Error) as exc:
                log.error("cannot open the device tables", path=config.database.data_source, err=exc)
                return 1
            # Device objects (desired values) and DeviceModels, for DeviceTwin and the DMI mappers
            feed = meta.events.subscribe(["device", "devicemodel"]) if meta is not None else None
            twin_config = config.modules.device_twin
            modules.append(DeviceTwinModule(twin_config, node, twin_store, feed,
                                            serve_dmi=bool(twin_config.dmi_sock_path),
                                            list_objects=meta.store.list_type if meta is not None else None))
        hub: EdgeHubModule | None = None
        if config.modules.edge_hub.enable:
            hub = EdgeHubModule(config.modules.edge_hub, node, outbox, config.source_path)
            modules.append(hub)
        monitor = edgecore_monitor(config.common_config.monitor_server, Path(config.database.data_source), store,
                                   outbox, hub)  # /metrics, /healthz, /readyz
        if monitor is not None:
            modules.append(monitor)
        daemon.sd_notify("READY=1")
        log.info("edgecore started", node=node, modules=",".join(m.name for m in modules))
        return await run_modules(ModuleBus(), modules, stop)
    finally:
        if cri is not None:
            await cri.close()
        if twin_store is not None:
            await twin_store.close()
        await outbox.close()
        await store.close()
