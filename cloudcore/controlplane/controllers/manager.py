"""Starts the control plane's controllers as owned tasks (the caller cancels them on shutdown).

The CRD controller always runs: without it custom resources are not served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.controllers import crds


def start(objects: ObjectAPI, on_crd_change: Callable[[], None]) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(crds.run(objects, on_crd_change), name="crd-controller")]
