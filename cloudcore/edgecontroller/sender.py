"""Hands the edgecontroller's messages to CloudHub over the module bus.

A full CloudHub mailbox means CloudHub is busy, not gone: the sender keeps offering the message (each
offer waits the bus's send timeout) and says so in the log, so back-pressure reaches the informers
instead of anything being dropped. With no CloudHub on the bus (disabled in cloudcore.yaml) there is
nobody to deliver to: the message is dropped with a log line, once per process.
"""

from __future__ import annotations

from common.bus import ModuleBus
from common.constants import CloudModule
from common.errors import BusFullError, UnknownModuleError
from common.log import get_logger
from common.message import Message

log = get_logger("edgecontroller")


class Sender:
    def __init__(self, bus: ModuleBus, target: str = CloudModule.CLOUDHUB) -> None:
        self.bus = bus
        self.target = target
        self._warned_missing = False

    async def send(self, message: Message) -> bool:
        """Deliver to CloudHub; False only when there is no CloudHub on the bus."""
        while True:
            try:
                await self.bus.send(self.target, message)
            except BusFullError:
                log.warning("cloudhub mailbox full, still waiting", msg_id=message.msg_id, resource=message.resource)
                continue
            except UnknownModuleError:
                if not self._warned_missing:
                    log.warning("no cloudhub on the bus: messages for edge nodes are dropped", msg_id=message.msg_id)
                    self._warned_missing = True
                return False
            return True
