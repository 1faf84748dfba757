"""What an edge node says about itself: registration, Node updates, node status, its Lease.

Upstream's behaviour (ref/protocol.md section 5, ref/config.md section 6), through the API:

- Registration (`node` insert, content a v1.Node): the Node is created, or adopted when it exists.
  Labels under `kubernetes.io/` and `*.kubernetes.io/` are left out of the create and merge-patched
  afterwards (NodeRestriction forbids a kubelet to create them); `node-role.kubernetes.io/edge` and
  `node-role.kubernetes.io/agent` are added when the edge did not send them (an upstream edge always
  does; our edge may not, and without the first one no cloud component would treat it as an edge
  node), and `status.nodeInfo.kubeletVersion` defaults to upstream's `v1.30.7-kubeedge-v1.20.0` form.
  Reply: `response` "OK", or the error text.
- `nodestatus` update (NodeStatusRequest `{"UID","Status","ExtendResources"}`): the status replaces the
  Node's, except `volumesAttached` (the cloud's) and a non-zero kubelet endpoint port; a condition
  heartbeat older than nodeUpdateFrequency is set to now. Reply "OK" with the Node's new RV.
- `nodepatch` patch (a strategic-merge patch string): applied to the status subresource. Reply an
  ObjectResp with the Node.
- `node` update: the edge's labels and annotations merged into the Node. Reply "OK".
- Lease insert/update: the node's own Lease in kube-node-lease is created or updated (the edge is its
  only writer, so a conflict retries against the current version). Reply an ObjectResp; a query
  answers the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

from cloudcore.edgecontroller.kinds import LEASE, NODE, Object, meta, rv_of, uid_of, with_type_meta
from cloudcore.edgecontroller.kubeapi import STRATEGIC_MERGE_PATCH, KubeError, KubeJSON
from cloudcore.edgecontroller.messages import OK, content_json, content_object, object_resp, reply
from common.constants import LABEL_AGENT_NODE, LABEL_EDGE_NODE, NODE_LEASE_NAMESPACE
from common.log import get_logger
from common.message import Message
from common.resource import CloudResource
from common.version import KUBELET_VERSION

log = get_logger("edgecontroller")

_CONFLICT_RETRIES: Final = 3
_SERVER_OWNED_META: Final = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "selfLink", "generation")


# -- pure helpers ----------------------------------------------------------------------------------
def is_restricted_label(key: str) -> bool:
    """`kubernetes.io/*` and `*.kubernetes.io/*`: labels a kubelet may not set at creation."""
    prefix, slash, _ = key.partition("/")
    return bool(slash) and (prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io"))


def registration(node: str, content: Object) -> tuple[Object, dict[str, str]]:
    """The Node to create for a registration, and the restricted labels to patch in afterwards."""
    metadata = {k: v for k, v in meta(content).items() if k not in _SERVER_OWNED_META}
    labels = {LABEL_EDGE_NODE: "", LABEL_AGENT_NODE: "", **(metadata.get("labels") or {})}
    metadata["name"] = node
    metadata["labels"] = {k: v for k, v in labels.items() if not is_restricted_label(k)}
    restricted = {k: v for k, v in labels.items() if is_restricted_label(k)}
    status = dict(content.get("status") or {})
    node_info = dict(status.get("nodeInfo") or {})
    node_info.setdefault("kubeletVersion", KUBELET_VERSION)
    status["nodeInfo"] = node_info
    body = with_type_meta(NODE, {**content, "metadata": metadata, "status": status})
    return body, restricted


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merged_status(reported: Object, current: Object, now: datetime, frequency: float) -> Object:
    """The edge's reported status as it is written: stale heartbeats refreshed, cloud-owned fields kept."""
    status = dict(reported)
    conditions = []
    for condition in status.get("conditions") or []:
        beat = _time(condition.get("lastHeartbeatTime"))
        if beat is None or now - beat > timedelta(seconds=frequency):
            condition = {**condition, "lastHeartbeatTime": rfc3339(now)}
        conditions.append(condition)
    if conditions:
        status["conditions"] = conditions
    current_status = current.get("status") or {}
    if "volumesAttached" in current_status:
        status["volumesAttached"] = current_status["volumesAttached"]
    port = (((current_status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")) or 0
    reported_port = (((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")) or 0
    if port and not reported_port:  # cloudstream's tunnel port, set by the cloud
        status["daemonEndpoints"] = current_status["daemonEndpoints"]
    return status


# -- handlers --------------------------------------------------------------------------------------
class NodeHandlers:
    def __init__(self, client: KubeJSON, node_update_frequency: float) -> None:
        self.client = client
        self.frequency = node_update_frequency

    async def register(self, res: CloudResource, message: Message) -> Message:
        node = res.node
        try:
            body, restricted = registration(node, content_object(message))
            adopted = await self._create_or_adopt(body)
            # An adopted Node gets every registration label; a created one only those left out of the create.
            labels = ((meta(body).get("labels") or {}) | restricted) if adopted else restricted
            if labels:
                await self.client.patch(NODE.object_path("", node), {"metadata": {"labels": labels}})
        except (KubeError, ValueError) as exc:
            log.warning("node registration failed", node=node, msg_id=message.msg_id, err=exc)
            return reply(message, str(exc))
        log.info("node registered", node=node, msg_id=message.msg_id, adopted=adopted)
        return reply(message, OK)

    async def _create_or_adopt(self, body: Object) -> bool:
        """Create the Node; True when it already existed (then it is adopted as it is)."""
        try:
            created = await self.client.create(NODE.collection_path(), body)
        except KubeError as exc:
            if not exc.conflict:
                raise
            return True
        if body.get("status") and created.get("status") != body["status"]:
            await self._write_initial_status(body)
        return False

    async def _write_initial_status(self, body: Object) -> None:
        """An API server may drop status on create (ours does): write the registration's status, with its
        kubeletVersion, through the status subresource. Best effort: the node exists, and the edge's next
        status report writes a status anyway."""
        name = meta(body)["name"]
        try:
            await self.client.patch(NODE.object_path("", name, "status"), {"status": body["status"]})
        except KubeError as exc:
            log.warning("registration status not written; waiting for the node's status report", node=name, err=exc)

    async def update(self, res: CloudResource, message: Message) -> Message:
        try:
            metadata = meta(content_object(message))
            patch = {k: metadata[k] for k in ("labels", "annotations") if metadata.get(k)}
            if patch:
                await self.client.patch(NODE.object_path("", res.node), {"metadata": patch})
        except (KubeError, ValueError) as exc:
            log.warning("node update failed", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, str(exc))
        log.v(3).info("node updated", node=res.node, msg_id=message.msg_id)
        return reply(message, OK)

    async def update_status(self, res: CloudResource, message: Message) -> Message:
        try:
            request = content_object(message)
            updated = await self._write_status(res.node, request)
        except (KubeError, ValueError) as exc:
            log.warning("node status not updated", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, str(exc))
        log.v(3).info("node status updated", node=res.node, msg_id=message.msg_id, rv=rv_of(updated))
        return reply(message, OK, resource_version=rv_of(updated))

    async def _write_status(self, node: str, request: Object) -> Object:
        path = NODE.object_path("", node)

        def status_of(current: Object) -> Object:
            uid = request.get("UID")
            if uid and uid != uid_of(current):
                raise ValueError(f"node {node}: status for uid {uid}, the Node has uid {uid_of(current)}")
            return merged_status(request.get("Status") or {}, current, datetime.now(UTC), self.frequency)

        return await self.client.replace_status(path, partial(self.client.get, path), status_of)

    async def patch_status(self, res: CloudResource, message: Message) -> Message:
        try:
            patch = content_json(message)
            if not isinstance(patch, dict):
                raise ValueError(f"message {message.msg_id}: the node patch must be a JSON object")
            node = await self.client.patch(NODE.object_path("", res.node, "status"), patch, STRATEGIC_MERGE_PATCH)
        except KubeError as exc:
            log.warning("node status patch failed", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, object_resp(None, exc))
        except ValueError as exc:
            log.warning("node status patch refused", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, object_resp(None, str(exc)))
        log.v(3).info("node status patched", node=res.node, msg_id=message.msg_id, rv=rv_of(node))
        return reply(message, object_resp(node))

    # -- the node's Lease ---------------------------------------------------------------------------
    async def put_lease(self, res: CloudResource, message: Message) -> Message:
        try:
            _check_lease(res)
            lease = await self._write_lease(res, content_object(message))
        except KubeError as exc:
            log.warning("lease not written", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, object_resp(None, exc))
        except ValueError as exc:
            log.warning("lease refused", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, object_resp(None, str(exc)))
        log.v(4).info("lease renewed", node=res.node, msg_id=message.msg_id, rv=rv_of(lease))
        return reply(message, object_resp(lease))

    async def _write_lease(self, res: CloudResource, sent: Object) -> Object:
        path = LEASE.object_path(res.namespace, res.name)
        for attempt in range(1, _CONFLICT_RETRIES + 1):
            try:
                current = await self.client.get(path)
            except KubeError as exc:
                if not exc.not_found:
                    raise
                body = {"metadata": {"name": res.name, "namespace": res.namespace}, "spec": sent.get("spec") or {}}
                return await self.client.create(LEASE.collection_path(res.namespace), with_type_meta(LEASE, body))
            try:
                return await self.client.replace(path, {**current, "spec": sent.get("spec") or {}})
            except KubeError as exc:
                if not exc.conflict or attempt == _CONFLICT_RETRIES:
                    raise
        raise AssertionError("unreachable")

    async def query_lease(self, res: CloudResource, message: Message) -> Message:
        try:
            _check_lease(res)
            lease = await self.client.get(LEASE.object_path(res.namespace, res.name))
        except KubeError as exc:
            log.v(3).info("lease query failed", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, object_resp(None, exc))
        except ValueError as exc:
            return reply(message, object_resp(None, str(exc)))
        return reply(message, object_resp(lease))


def _check_lease(res: CloudResource) -> None:
    if res.namespace != NODE_LEASE_NAMESPACE or res.name != res.node:
        raise ValueError(f"node {res.node} may only write its own lease {NODE_LEASE_NAMESPACE}/{res.node}")
