"""The controllerManager module: the NodeGroup and EdgeApplication controllers (apps.kubeedge.io).

Upstream runs these in a separate controller-manager binary; here they are one cloudcore module, turned
on by `modules.controllerManager.enable` (default true). It talks only to the Kubernetes API (no bus
messages), so it works the same against the embedded control plane and a real cluster.
"""

from __future__ import annotations

import asyncio
from typing import Final

from kubernetes_asyncio.client import ApiClient

from cloudcore.controllermanager.edgeapplication import EdgeApplicationController
from cloudcore.controllermanager.nodegroup import NodeGroupController
from cloudcore.edgecontroller.kubeapi import KubeJSON
from common.log import get_logger
from common.modules import ModuleContext

log = get_logger("controllermanager")

NAME: Final = "controllermanager"


class ControllerManagerModule:
    name = NAME
    group = NAME

    def __init__(self, kube: ApiClient) -> None:
        client = KubeJSON(kube)
        self.nodegroups = NodeGroupController(client)
        self.edgeapplications = EdgeApplicationController(client)

    async def run(self, ctx: ModuleContext) -> None:
        log.info("controllermanager starting")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.nodegroups.run(), name="controllermanager:nodegroups")
            tasks.create_task(self.edgeapplications.run(), name="controllermanager:edgeapplications")
