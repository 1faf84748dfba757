"""Cloud to edge: a DeviceModel informer and a Device informer, their events planned and pushed.

DeviceModels are listed first, so a Device's first push finds its model cached and the model goes
down before the device. Messages go out one event at a time, in order, through the edgecontroller's
Sender (which waits on a full CloudHub mailbox).
"""

from __future__ import annotations

import asyncio

from cloudcore.devicecontroller.kinds import DEVICE, DEVICEMODEL
from cloudcore.devicecontroller.messages import membership_message, push_message
from cloudcore.devicecontroller.plan import Action, Push, device_event, model_event
from cloudcore.edgecontroller.informer import Event, EventType, Informer
from cloudcore.edgecontroller.kubeapi import KubeJSON
from cloudcore.edgecontroller.sender import Sender
from common.constants import Op
from common.log import get_logger

log = get_logger("devicecontroller")

_MODEL_OPS = {EventType.ADDED: Op.INSERT, EventType.MODIFIED: Op.UPDATE, EventType.DELETED: Op.DELETE}


class Downstream:
    def __init__(self, client: KubeJSON, sender: Sender) -> None:
        self.sender = sender
        self.models = Informer(client, DEVICEMODEL, self._on_model)
        self.devices = Informer(client, DEVICE, self._on_device)

    async def run(self) -> None:
        """Both informers, models first; until cancelled (each informer retries on its own)."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.models.run(), name="devicecontroller:devicemodels")
            await self.models.synced.wait()
            tasks.create_task(self.devices.run(), name="devicecontroller:devices")

    async def _on_model(self, event: Event) -> None:
        operation = _MODEL_OPS.get(event.type)
        if operation is not None:
            await self._send(model_event(operation, event.obj, self.devices.cache.values()))

    async def _on_device(self, event: Event) -> None:
        new = None if event.type in (EventType.DELETED, EventType.DROPPED) else event.obj
        old = event.old
        if event.type is EventType.DELETED and old is not None:
            old = {**old, "metadata": event.obj.get("metadata", old.get("metadata"))}  # the final RV
        await self._send(device_event(old, new, self.devices.cache, self.models.cache))

    async def _send(self, actions: list[Action]) -> None:
        for action in actions:
            message = push_message(action) if isinstance(action, Push) else membership_message(action)
            log.v(3).info("to edge", node=action.node, op=message.operation, resource=message.resource)
            await self.sender.send(message)
