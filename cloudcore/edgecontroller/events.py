"""Events an edge node reports (`<ns>/event/<name>`, a core/v1 Event from its kubelet) written to the API.

- `insert`: the event is created; if it exists already (a re-sent message, or an event the edge sends
  again) its count, lastTimestamp and message are merge-patched instead.
- `update` (the edge's correlator counted a repeat): count, lastTimestamp and message are merge-patched;
  an event the API does not hold (its insert was lost) is created.
- `patch` (content: the patch, a JSON string or object): applied to the event as a strategic-merge patch.

Node identity: `source.host` and `reportingInstance` are set to the node the connection authenticated,
whatever the edge wrote. An event must be about a Pod bound to that node (or one already gone: the
events of a pod's last moments still count) or about the node itself; anything else is refused.

Every message gets a reply: `response` "OK" once written, and also when the event is dropped as bad
input (not an Event, namespace or name not matching the resource, another node's pod, a namespace that
does not exist or is terminating, an event the API finds invalid): sending it again cannot help, so the
edge must not. Only a failure that may pass (the API unreachable, 5xx, 429) gets an `error` reply, so
the edge may try again later. Drops are logged with the node and message id.
"""

from __future__ import annotations

from typing import Any, Final

from cloudcore.edgecontroller.kinds import POD, Kind, Object, meta
from cloudcore.edgecontroller.kubeapi import MERGE_PATCH, STRATEGIC_MERGE_PATCH, KubeError, KubeJSON
from cloudcore.edgecontroller.messages import OK, Refused, content_json, content_object, error_reply, reply
from cloudcore.edgecontroller.planner import pod_node
from common.constants import Op, ResourceType
from common.log import get_logger
from common.message import Message
from common.resource import CloudResource

log = get_logger("edgecontroller")

EVENT: Final = Kind(ResourceType.EVENT, "Event", "", "v1", "events")
_SERVER_OWNED_META: Final = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "selfLink", "generation")
_REPEAT_FIELDS: Final = ("count", "lastTimestamp", "message", "series")


def edge_event(res: CloudResource, content: Object) -> Object:
    """The Event to write for node `res.node` (pure); Refused (a ValueError) when it cannot be one."""
    if content.get("kind") not in (None, "Event") or content.get("apiVersion") not in (None, "v1"):
        raise Refused(f"event {res.namespace}/{res.name}: content is a {content.get('kind')}, not a v1 Event")
    metadata = {k: v for k, v in meta(content).items() if k not in _SERVER_OWNED_META}
    if metadata.setdefault("name", res.name) != res.name or metadata.setdefault("namespace", res.namespace) != \
            res.namespace:
        raise Refused(f"event {metadata.get('namespace')}/{metadata.get('name')} sent as "
                      f"{res.namespace}/{res.name}")
    involved = content.get("involvedObject")
    if not isinstance(involved, dict) or not involved.get("name"):
        raise Refused(f"event {res.namespace}/{res.name}: no involvedObject")
    kind = involved.get("kind")
    if kind == "Pod" and involved.get("namespace") != res.namespace:
        raise Refused(f"event {res.namespace}/{res.name}: about a pod in namespace {involved.get('namespace')!r}")
    if kind == "Node" and involved.get("name") != res.node:
        raise Refused(f"event {res.namespace}/{res.name}: about node {involved.get('name')!r}")
    if kind not in ("Pod", "Node"):
        raise Refused(f"event {res.namespace}/{res.name}: a node reports events about pods and itself, "
                      f"not a {kind!r}")
    given = content.get("source")
    source: dict[str, Any] = given if isinstance(given, dict) else {}
    return {**content, "apiVersion": "v1", "kind": "Event", "metadata": metadata,
            "source": {"component": "kubelet", **source, "host": res.node}, "reportingInstance": res.node}


def repeat_patch(event: Object) -> Object:
    """What changes when an event happens again."""
    return {key: event[key] for key in _REPEAT_FIELDS if key in event}


class EventHandlers:
    def __init__(self, client: KubeJSON) -> None:
        self.client = client

    async def write(self, res: CloudResource, message: Message) -> Message:
        """`insert` and `update` of an event."""
        try:
            event = edge_event(res, content_object(message))
            await self._check_subject(res, event)
            if message.operation == Op.INSERT:
                await self._create_or_repeat(res, event)
            else:
                await self._repeat_or_create(res, event)
        except KubeError as exc:
            return self._failed(res, message, exc)
        except ValueError as exc:
            return self._dropped(res, message, str(exc))
        log.v(3).info("event written", node=res.node, msg_id=message.msg_id, event=f"{res.namespace}/{res.name}",
                      reason=event.get("reason", ""), count=event.get("count", ""))
        return reply(message, OK)

    async def patch(self, res: CloudResource, message: Message) -> Message:
        try:
            body = content_json(message)
            if not isinstance(body, dict):
                raise Refused(f"event {res.namespace}/{res.name}: the patch must be a JSON object")
            current = await self.client.get(EVENT.object_path(res.namespace, res.name))
            await self._check_subject(res, current)
            await self.client.patch(EVENT.object_path(res.namespace, res.name), body, STRATEGIC_MERGE_PATCH)
        except KubeError as exc:
            return self._failed(res, message, exc)
        except ValueError as exc:
            return self._dropped(res, message, str(exc))
        log.v(3).info("event patched", node=res.node, msg_id=message.msg_id, event=f"{res.namespace}/{res.name}")
        return reply(message, OK)

    async def _create_or_repeat(self, res: CloudResource, event: Object) -> None:
        try:
            await self.client.create(EVENT.collection_path(res.namespace), event)
        except KubeError as exc:
            if not exc.conflict:
                raise
            await self.client.patch(EVENT.object_path(res.namespace, res.name), repeat_patch(event), MERGE_PATCH)

    async def _repeat_or_create(self, res: CloudResource, event: Object) -> None:
        try:
            await self.client.patch(EVENT.object_path(res.namespace, res.name), repeat_patch(event), MERGE_PATCH)
        except KubeError as exc:
            if not exc.not_found:
                raise
            await self.client.create(EVENT.collection_path(res.namespace), event)

    async def _check_subject(self, res: CloudResource, event: Object) -> None:
        """A node may report events about its own pods (or pods already gone) and itself only."""
        involved: dict[str, Any] = event.get("involvedObject") or {}
        if involved.get("kind") == "Node":
            if involved.get("name") != res.node:
                raise Refused(f"event about node {involved.get('name')!r}")
            return
        if involved.get("kind") != "Pod":
            raise Refused(f"event about a {involved.get('kind')!r}")
        try:
            pod = await self.client.get(POD.object_path(res.namespace, str(involved.get("name"))))
        except KubeError as exc:
            if exc.not_found:
                return
            raise
        if pod_node(pod) != res.node:
            raise Refused(f"event about pod {res.namespace}/{involved.get('name')}, which is not bound to node "
                          f"{res.node}")

    @staticmethod
    def _failed(res: CloudResource, message: Message, exc: KubeError) -> Message:
        if exc.transient:
            log.warning("event not written; the edge may send it again", node=res.node, msg_id=message.msg_id,
                        event=f"{res.namespace}/{res.name}", err=exc)
            return error_reply(message, f"edgecontroller: event not written: {exc}")
        return EventHandlers._dropped(res, message, str(exc))

    @staticmethod
    def _dropped(res: CloudResource, message: Message, why: str) -> Message:
        log.warning("event dropped", node=res.node, msg_id=message.msg_id, event=f"{res.namespace}/{res.name}",
                    reason=why[:300])
        return reply(message, OK)  # an ACK all the same: sending it again cannot help
