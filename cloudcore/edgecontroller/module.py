"""The EdgeController module: Kubernetes objects down to edge nodes, edge reports up to Kubernetes.

Talks to CloudHub only through the module bus (pushes and replies to the `cloudhub` module; edge
messages arrive in this module's mailbox, group `edgecontroller`) and to Kubernetes only through
cloudcore's kubernetes_asyncio ApiClient, so the embedded control plane and a real cluster are the
same code path. `run` owns two task groups' worth of tasks (informers, upstream workers); cancelling
it stops them all.
"""

from __future__ import annotations

import asyncio

from kubernetes_asyncio.client import ApiClient

from cloudcore.edgecontroller.downstream import Downstream
from cloudcore.edgecontroller.kubeapi import KubeJSON
from cloudcore.edgecontroller.sender import Sender
from cloudcore.edgecontroller.upstream import Upstream
from common.config.cloudcore import EdgeController as EdgeControllerConfig
from common.constants import CloudModule
from common.log import get_logger
from common.message import Message
from common.modules import ModuleContext

log = get_logger("edgecontroller")


class EdgeControllerModule:
    name = CloudModule.EDGECONTROLLER
    group = CloudModule.EDGECONTROLLER

    def __init__(self, config: EdgeControllerConfig, kube: ApiClient) -> None:
        self.config = config
        self.client = KubeJSON(kube)
        self.downstream: Downstream | None = None

    async def run(self, ctx: ModuleContext) -> None:
        sender = Sender(ctx.bus)
        downstream = self.downstream = Downstream(self.client, sender)
        upstream = Upstream(
            self.client, downstream.planner, downstream.pods.synced, sender, float(self.config.node_update_frequency)
        )
        log.info("edgecontroller starting")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(downstream.run(), name="edgecontroller:downstream")
            tasks.create_task(upstream.run(ctx.mailbox), name="edgecontroller:upstream")

    def lookup(self, resource: str) -> Message | None:
        """The current message of one node's object (`node/<node>/<ns>/<type>/<name>`) from the informer
        caches, or None (not cached, not that node's, or the module not running)."""
        return None if self.downstream is None else self.downstream.lookup(resource)
