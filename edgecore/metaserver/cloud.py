"""MetaServer's line to CloudCore's dynamiccontroller: one Application out, its answer back.

As upstream's MetaServer (metaserver/agent): a message from source `metaserver` to group
`dynamiccontroller`, resource and operation `null`, content the Application (`common/application.py`),
handed to EdgeHub with a wait of at most `timeout` (upstream's SendSync: 10 s). The cloud's reply carries
the request's id as parent, so the bus hands it straight back here.

Failing to get an answer (offline, EdgeHub refusing, no answer in time) is `CloudUnavailable`: reads
then fall back to the edge store, writes fail. An answer is returned as it came (Approved, Rejected,
Failed); `rejection` turns a Rejected one into the API error the client gets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from cloudcore.controlplane.api.errors import APIError
from common import application
from common.application import Answer
from common.bus import ModuleBus
from common.constants import CloudModule, EdgeModule, Op
from common.errors import BusError
from common.message import Message

TIMEOUT: Final = 10.0  # upstream's SendSync wait
_NULL: Final = "null"


class CloudUnavailable(Exception):
    """No answer from the cloud: `offline` (not even tried), `timed_out`, or refused on the way."""

    def __init__(self, reason: str, *, offline: bool = False, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.offline = offline
        self.timed_out = timed_out


class CloudLink:
    def __init__(self, bus: ModuleBus, node: str, connected: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        self._bus = bus
        self.node = node
        self._connected = connected
        self.timeout = timeout

    @property
    def connected(self) -> bool:
        """As EdgeHub last announced it (MetaManager keeps it)."""
        return self._connected()

    async def ask(self, verb: str, key: str, *, option: Any = None, body: Any = None,
                  subresource: str = "") -> Answer:
        if not self._connected():
            raise CloudUnavailable("this edge node is offline", offline=True)
        content = application.request(verb, key, self.node, option=option, body=body, subresource=subresource)
        message = Message.new(source=application.SOURCE, group=CloudModule.DYNAMICCONTROLLER, operation=_NULL,
                              resource=_NULL, content=content)
        try:
            reply = await self._bus.request(EdgeModule.EDGEHUB, message, self.timeout)
        except TimeoutError:
            raise CloudUnavailable(f"the cloud did not answer within {self.timeout:g}s", timed_out=True) from None
        except BusError as exc:
            raise CloudUnavailable(str(exc)) from None
        if reply.operation == Op.ERROR:
            raise CloudUnavailable(str(reply.content))
        answer = application.read_answer(reply.content)
        if answer is None:
            raise APIError(502, "InternalError", f"the cloud answered a {verb} with something that is not an "
                                                 "Application")
        return answer


def rejection(answer: Answer) -> APIError:
    """The API error of a Rejected answer: the cloud's Status, with its code."""
    error = answer.error
    details = error.get("details")
    return APIError(answer.code, str(error.get("reason") or "InternalError"),
                    str(error.get("message") or answer.reason or "rejected by the cloud"),
                    details if isinstance(details, dict) else None)
