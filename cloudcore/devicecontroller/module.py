"""The DeviceController module (upstream name `devicecontroller`, enabled by default).

Talks to CloudHub only through the module bus (pushes to the `cloudhub` module; edge reports arrive in
this module's mailbox, group `devicecontroller`, where CloudHub routes source `twin`) and to Kubernetes
through cloudcore's kubernetes_asyncio ApiClient.
"""

from __future__ import annotations

import asyncio

from kubernetes_asyncio.client import ApiClient

from cloudcore.devicecontroller.downstream import Downstream
from cloudcore.devicecontroller.upstream import Upstream
from cloudcore.edgecontroller.kubeapi import KubeJSON
from cloudcore.edgecontroller.sender import Sender
from common.constants import CloudModule
from common.log import get_logger
from common.modules import ModuleContext

log = get_logger("devicecontroller")


class DeviceControllerModule:
    name = CloudModule.DEVICECONTROLLER
    group = CloudModule.DEVICECONTROLLER

    def __init__(self, kube: ApiClient) -> None:
        self.client = KubeJSON(kube)
        self.downstream: Downstream | None = None

    async def run(self, ctx: ModuleContext) -> None:
        sender = Sender(ctx.bus)
        downstream = self.downstream = Downstream(self.client, sender)
        upstream = Upstream(self.client, sender)
        log.info("devicecontroller starting")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(downstream.run(), name="devicecontroller:downstream")
            tasks.create_task(upstream.run(ctx.mailbox), name="devicecontroller:upstream")
