"""Writes through MetaServer: the edge holds no authority over objects, so create, update, patch and
delete go to the cloud, as upstream's MetaServer sends them.

Upstream's shape (pkg/metaserver, edge/pkg/metamanager/metaserver/agent): a message from source
`metaserver` to group `dynamiccontroller`, resource and operation `null`, whose content is an
"Application": the request as `Key` (`/<group|core>/<version>/<resource>[/<namespace|null>/<name>]`),
`Verb`, `Nodename`, `Subresource`, and `Option`/`ReqBody` as JSON bytes (Go encodes []byte as base64).
It goes to EdgeHub with a sync wait of 10 s; the cloud answers with the Application, `Status`
Approved (`RespBody`: the resulting object), Rejected (`Error.ErrStatus`: a Kubernetes Status) or
Failed (`Reason`).

Without a cloud connection a write is refused at once with 503. A write the cloud does not answer in
time (CloudCore without its dynamicController, or a CloudHub that drops the message) ends in 504.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from cloudcore.controlplane.api.errors import APIError
from common.bus import ModuleBus
from common.constants import CloudModule, EdgeModule, Op
from common.errors import BusError
from common.log import get_logger
from common.message import Message
from edgecore.metaserver.kinds import ServedKind

log = get_logger("metaserver")

SOURCE: Final = "metaserver"
WRITE_TIMEOUT: Final = 10.0  # upstream's SendSync wait
_NULL: Final = "null"
_CORE_GROUP: Final = "core"


@dataclass(frozen=True, slots=True)
class WriteRequest:
    verb: str  # create, update, updatestatus, patch, delete (upstream's ApplicationVerb)
    kind: ServedKind
    namespace: str
    name: str
    subresource: str
    options: dict[str, Any]
    body: Any  # the object; for patch upstream's PatchInfo; None for delete


def application_key(kind: ServedKind, namespace: str, name: str) -> str:
    """Upstream's metaserver key of a request (KeyFuncReq)."""
    info = kind.info
    key = f"/{info.group or _CORE_GROUP}/{info.version}/{info.plural}"
    if namespace:
        key += f"/{namespace}"
    if name:
        key += f"/{name}" if namespace else f"/{_NULL}/{name}"
    return key


def application(request: WriteRequest, node: str) -> dict[str, Any]:
    key = application_key(request.kind, request.namespace, request.name)
    option = orjson.dumps(request.options)
    body = b"" if request.body is None else orjson.dumps(request.body)
    digest = hashlib.sha256(node.encode() + key.encode() + request.verb.encode() + option + body
                            + request.subresource.encode()).hexdigest()
    return {
        "ID": digest, "Key": key, "Verb": request.verb, "Nodename": node,
        "Option": base64.b64encode(option).decode(),
        "ReqBody": base64.b64encode(body).decode() if body else None,
        "Subresource": request.subresource, "RespBody": None, "Status": "InApplying", "Reason": "",
        "Error": {"ErrStatus": {"metadata": {}}},
    }


class CloudWriter:
    """Sends writes to the cloud through EdgeHub and turns the answer into (HTTP code, body)."""

    def __init__(self, bus: ModuleBus, node: str, connected: Callable[[], bool],
                 timeout: float = WRITE_TIMEOUT) -> None:
        self._bus = bus
        self._node = node
        self._connected = connected
        self._timeout = timeout

    async def write(self, request: WriteRequest) -> tuple[int, dict[str, Any]]:
        if not self._connected():
            raise APIError(503, "ServiceUnavailable",
                           "the cloud is unreachable: this edge node is offline, and writes through the edge "
                           "MetaServer need CloudCore")
        message = Message.new(source=SOURCE, group=CloudModule.DYNAMICCONTROLLER, operation=_NULL, resource=_NULL,
                              content=application(request, self._node))
        try:
            reply = await self._bus.request(EdgeModule.EDGEHUB, message, self._timeout)
        except TimeoutError:
            log.warning("cloud did not answer a write", verb=request.verb, resource=request.kind.info.gr,
                        name=request.name, timeout_s=self._timeout)
            raise APIError(504, "Timeout",
                           f"the cloud did not answer within {self._timeout:g}s: writes through the edge MetaServer "
                           "are carried out by CloudCore's dynamiccontroller (cloudcore.yaml "
                           "modules.dynamicController.enable)") from None
        except BusError as exc:
            raise APIError(503, "ServiceUnavailable", f"the cloud is unreachable: {exc}") from None
        return _outcome(request, reply)


def _outcome(request: WriteRequest, reply: Message) -> tuple[int, dict[str, Any]]:
    if reply.operation == Op.ERROR:
        raise APIError(503, "ServiceUnavailable", f"the cloud is unreachable: {reply.content}")
    answer = reply.content
    if isinstance(answer, str | bytes):
        try:
            answer = orjson.loads(answer)
        except orjson.JSONDecodeError:
            answer = None
    if not isinstance(answer, dict):
        raise APIError(502, "InternalError", "the cloud answered a write with something that is not an Application")
    status = answer.get("Status")
    if status == "Approved":
        return (201 if request.verb == "create" else 200), _response_body(answer.get("RespBody"))
    if status == "Rejected":
        error = ((answer.get("Error") or {}).get("ErrStatus")) or {}
        code = error["code"] if isinstance(error.get("code"), int) else 500
        raise APIError(code, str(error.get("reason") or "InternalError"),
                       str(error.get("message") or answer.get("Reason") or "rejected by the cloud"),
                       error.get("details") if isinstance(error.get("details"), dict) else None)
    raise APIError(500, "InternalError", f"the cloud could not apply the write: {answer.get('Reason') or status}")


def _response_body(raw: Any) -> dict[str, Any]:
    try:
        body = orjson.loads(base64.b64decode(raw)) if isinstance(raw, str) and raw else {}
    except (ValueError, orjson.JSONDecodeError):
        body = {}
    return body if isinstance(body, dict) else {}
