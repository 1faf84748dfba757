"""The messages the edgecontroller writes: object pushes to a node, replies to the edge (pure).

Pushes: source `edgecontroller`, group `resource`, resource `node/<node>/<ns>/<type>/<name>` (`null` for
cluster-scoped objects, upstream's `namespace` token for a Node delete, ref/protocol.md 2.1), the
object as content and its resourceVersion in the header, which CloudHub's queue dedups on.

Replies go back under the request's (node-prefixed) resource with parent = the request's msg_id,
source `edgecontroller` and group `resource`, as upstream's edgecontroller builds them. Replies that
carry an object leave the header resourceversion empty on purpose: CloudHub's queue would otherwise
drop a reply whose object the node already acknowledged as a push (same key, same RV), and the
edge's query would wait out its timeout.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from cloudcore.edgecontroller.filters import for_edge
from cloudcore.edgecontroller.kinds import NODE, name_of, resource_namespace, rv_of, with_type_meta
from cloudcore.edgecontroller.kubeapi import KubeError
from cloudcore.edgecontroller.planner import Push
from common.constants import HEADER_EDGE_HAS_IT, NAMESPACE_NODE_DELETE, CloudModule, Group, Op
from common.message import Message
from common.resource import build_resource


class Refused(ValueError):
    """The node may not do this (another node's object, an unreferenced secret, a foreign lease)."""


def push_message(push: Push) -> Message:
    namespace = resource_namespace(push.kind, push.obj)
    if push.kind is NODE and push.operation == Op.DELETE:
        namespace = NAMESPACE_NODE_DELETE  # CloudHub ends the node's session on this exact resource
    resource = build_resource(push.node, namespace, push.kind.type, name_of(push.obj))
    message = Message.new(
        source=CloudModule.EDGECONTROLLER,
        group=Group.RESOURCE,
        operation=push.operation,
        resource=resource,
        content=with_type_meta(push.kind, for_edge(push.kind, push.obj)),
        resource_version=rv_of(push.obj),
    )
    if push.edge_has_it:
        return message._replace(header=message.header._replace(type=HEADER_EDGE_HAS_IT))
    return message


OK: Final = "OK"  # the content of a reply that accepts a report


def reply(request: Message, content: Any, *, resource_version: str = "") -> Message:
    """op `response` to `request` (upstream NewMessage(parentID) + BuildRouter(edgecontroller, resource))."""
    return Message.new(
        source=CloudModule.EDGECONTROLLER,
        group=Group.RESOURCE,
        operation=Op.RESPONSE,
        resource=request.resource,
        content=content,
        resource_version=resource_version,
        parent_msg_id=request.msg_id,
    )


def error_reply(request: Message, text: str) -> Message:
    """op `error` to `request`, the reason as content."""
    return Message.new(
        source=CloudModule.EDGECONTROLLER,
        group=Group.RESOURCE,
        operation=Op.ERROR,
        resource=request.resource,
        content=text,
        parent_msg_id=request.msg_id,
    )


def object_resp(obj: Any, err: KubeError | str | None = None) -> dict[str, Any]:
    """Upstream's ObjectResp body `{"Object": ..., "Err": ...}` (Go field names, no JSON tags)."""
    return {"Object": obj, "Err": status_body(err) if isinstance(err, KubeError) else err}


def content_json(message: Message) -> Any:
    """The request's content as JSON: the edge sends objects as JSON, patches as a JSON *string*."""
    if isinstance(message.content, str):
        return orjson.loads(message.content)
    return message.content


def content_object(message: Message) -> dict[str, Any]:
    """The content as a JSON object; ValueError naming the message otherwise."""
    try:
        found = content_json(message)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"message {message.msg_id}: content is not JSON: {exc}") from None
    if not isinstance(found, dict):
        raise ValueError(f"message {message.msg_id}: content must be a JSON object")
    return found


def status_body(error: KubeError) -> dict[str, Any]:
    """A KubeError as Go marshals a *StatusError inside ObjectResp.Err."""
    return {
        "ErrStatus": {
            "metadata": {},
            "status": "Failure",
            "message": error.message,
            "reason": error.reason,
            "code": error.status,
        }
    }
