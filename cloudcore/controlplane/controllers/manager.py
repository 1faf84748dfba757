"""Starts the control plane's controllers as owned tasks (the caller cancels them on shutdown).

The CRD controller always runs: without it custom resources are not served. The workload
controllers (scheduler, deployments, replicasets, daemonsets, endpoints/endpointslices, node
lifecycle, garbage collection, namespaces) share one set of informers and can be switched off
(`workloads=False`) to measure the API server alone.

What it must never do: leave a task without an owner. Every task it makes is in the returned
list; the informers' and controllers' own sub-tasks are owned (and cancelled) by those tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.controllers import crds
from cloudcore.controlplane.controllers.daemonsets import DaemonSetController
from cloudcore.controlplane.controllers.deployments import DeploymentController
from cloudcore.controlplane.controllers.endpoints import EndpointsController
from cloudcore.controlplane.controllers.gc import GarbageCollector
from cloudcore.controlplane.controllers.kit import Controller, Informers
from cloudcore.controlplane.controllers.namespaces import NamespaceController
from cloudcore.controlplane.controllers.nodelifecycle import DEFAULT_GRACE, NodeLifecycleController
from cloudcore.controlplane.controllers.replicasets import ReplicaSetController
from cloudcore.controlplane.controllers.scheduler import Scheduler


def start(objects: ObjectAPI, on_crd_change: Callable[[], None], *, workloads: bool = True,
          node_grace_period: float = DEFAULT_GRACE) -> list[asyncio.Task[None]]:
    if not workloads:
        return [asyncio.create_task(crds.run(objects, on_crd_change), name="crd-controller")]
    informers = Informers(objects.store)
    gc = GarbageCollector(objects, informers)
    controllers: list[Controller] = [
        Scheduler(objects, informers),
        ReplicaSetController(objects, informers),
        DeploymentController(objects, informers),
        DaemonSetController(objects, informers),
        EndpointsController(objects, informers),
        NodeLifecycleController(objects, informers, grace_period=node_grace_period),
        NamespaceController(objects, informers),
        gc,
    ]

    def crd_changed() -> None:
        on_crd_change()
        gc.sync_resources()

    tasks = [asyncio.create_task(crds.run(objects, crd_changed), name="crd-controller"),
             asyncio.create_task(informers.run(), name="informers")]
    tasks.extend(asyncio.create_task(c.run(), name=c.name) for c in controllers)
    return tasks
