"""cloudcore wiring: config in, a Kubernetes client, modules on one bus, run until stopped.

Modules join the list below as they are built (edgecontroller, devicecontroller, synccontroller, ...).
"""

from __future__ import annotations

import asyncio

from cloudcore import kube
from cloudcore.cloudhub.hub import CloudHubModule
from cloudcore.cloudhub.metrics import cloudcore_monitor
from cloudcore.cloudstream.module import CloudStreamModule
from cloudcore.controllermanager import ControllerManagerModule
from cloudcore.devicecontroller import DeviceControllerModule
from cloudcore.dynamiccontroller.module import DynamicControllerModule
from cloudcore.edgecontroller import EdgeControllerModule
from common import daemon
from common.bus import ModuleBus
from common.config import CloudCoreConfig
from common.log import get_logger
from common.modules import Module, run_modules

log = get_logger("cloudcore")


async def run(config: CloudCoreConfig, stop: asyncio.Event) -> int:
    if config.adjust():
        log.info(
            "raised qps/burst and node-scaled buffers to upstream minimums",
            node_limit=config.modules.cloud_hub.node_limit,
        )
    try:
        client = await kube.api_client(config.kube_api_config)
    except kube.KubeConfigError as exc:
        log.error("no Kubernetes API", err=exc)
        return 1
    try:
        modules: list[Module] = []
        edgecontroller = EdgeControllerModule(config.modules.edge_controller, client)
        hub: CloudHubModule | None = None
        if config.modules.cloud_hub.enable:
            lookup = edgecontroller.lookup if config.modules.edge_controller.enable else None
            hub = CloudHubModule(config.modules.cloud_hub, client, lookup)
            modules.append(hub)
        if config.modules.edge_controller.enable:
            modules.append(edgecontroller)
        if config.modules.cloud_stream.enable:
            modules.append(CloudStreamModule(config.modules.cloud_stream, config.modules.cloud_hub, client))
        if config.modules.device_controller.enable:
            modules.append(DeviceControllerModule(client))
        if config.modules.dynamic_controller.enable:
            modules.append(DynamicControllerModule(client))
        if config.modules.controller_manager.enable:
            modules.append(ControllerManagerModule(client))
        monitor = cloudcore_monitor(config.common_config.monitor_server, client, hub)  # /metrics, /healthz, /readyz
        if monitor is not None:
            modules.append(monitor)
        daemon.sd_notify("READY=1")
        log.info("cloudcore started", modules=",".join(m.name for m in modules))
        return await run_modules(ModuleBus(), modules, stop)
    finally:
        await client.close()
