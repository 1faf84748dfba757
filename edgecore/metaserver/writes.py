"""Writes through MetaServer: the edge holds no authority over objects, so create, update, patch and
delete go to the cloud, as upstream's MetaServer sends them: an Application (`Key` from the served kind,
synced or known from the cloud's discovery, `Verb` create, update, updatestatus, patch or delete, the
options and body; for a patch upstream's PatchInfo) over `CloudLink`, which waits up to 10 s for the
answer: Approved (`RespBody`: the resulting object), Rejected (the cloud's Status) or Failed (`Reason`).

Without a cloud connection a write is refused at once with 503. A write the cloud does not answer in
time (CloudCore without its dynamicController, or a CloudHub that drops the message) ends in 504.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudcore.controlplane.api.errors import APIError
from common.application import Key, Verb
from common.log import get_logger
from edgecore.metaserver.cloud import CloudLink, CloudUnavailable, rejection
from edgecore.metaserver.kinds import ServedKind

log = get_logger("metaserver")


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
    return str(Key(info.group, info.version, info.plural, namespace, name))


class CloudWriter:
    """Sends writes to the cloud and turns the answer into (HTTP code, body)."""

    def __init__(self, link: CloudLink) -> None:
        self._link = link

    async def write(self, request: WriteRequest) -> tuple[int, dict[str, Any]]:
        try:
            answer = await self._link.ask(request.verb, application_key(request.kind, request.namespace, request.name),
                                          option=request.options, body=request.body, subresource=request.subresource)
        except CloudUnavailable as exc:
            if exc.offline:
                raise APIError(503, "ServiceUnavailable",
                               "the cloud is unreachable: this edge node is offline, and writes through the edge "
                               "MetaServer need CloudCore") from None
            if exc.timed_out:
                log.warning("cloud did not answer a write", verb=request.verb, resource=request.kind.info.gr,
                            name=request.name, timeout_s=self._link.timeout)
                raise APIError(504, "Timeout",
                               f"{exc}: writes through the edge MetaServer are carried out by CloudCore's "
                               "dynamiccontroller (cloudcore.yaml modules.dynamicController.enable)") from None
            raise APIError(503, "ServiceUnavailable", f"the cloud is unreachable: {exc}") from None
        if answer.approved:
            body = answer.body if isinstance(answer.body, dict) else {}
            return (201 if request.verb == Verb.CREATE else 200), body
        if answer.rejected:
            raise rejection(answer)
        raise APIError(500, "InternalError", f"the cloud could not apply the write: {answer.reason or answer.status}")
