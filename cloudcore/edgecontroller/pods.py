"""What an edge node says about its pods: status reports and the deletion handshake.

- `podstatus` update (PodStatusRequest `{"UID","Name","Status"}`, or a list of them): the pod's status
  is replaced through the status subresource, if the pod runs on that node and has that UID. Reply
  "OK" (also when a status can never apply: a foreign or gone pod), none when the API failed, so that
  the edge's outbox, which resends a report until it is answered, resends it then and only then.
- `podpatch` patch (a strategic-merge patch string): applied to the pod's status subresource; reply an
  ObjectResp with the pod.
- `pod` delete (content: the pod's UID): the edge confirms the pod is gone after the cloud asked for
  its graceful deletion, so the pod is deleted with grace period 0, preconditioned on that UID so a
  new pod of the same name is never hit. A status write that shows a terminating pod finished
  (Succeeded/Failed, no container waiting or running) ends it the same way, as upstream.

A node may touch only pods bound to it (`spec.nodeName`): anything else is refused and logged.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Final

from cloudcore.edgecontroller.kinds import POD, Object, meta, uid_of
from cloudcore.edgecontroller.kubeapi import STRATEGIC_MERGE_PATCH, KubeError, KubeJSON
from cloudcore.edgecontroller.messages import OK, Refused, content_json, object_resp, reply
from cloudcore.edgecontroller.planner import pod_node
from common.log import get_logger
from common.message import Message
from common.resource import CloudResource

log = get_logger("edgecontroller")

_FINISHED_PHASES: Final = ("Succeeded", "Failed")


def status_requests(content: Any, default_name: str) -> list[tuple[str, str, Object]]:
    """(name, uid, status) of each PodStatusRequest in the content (one object or a list)."""
    items = content if isinstance(content, list) else [content]
    requests = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("Status"), dict):
            requests.append((str(item.get("Name") or default_name), str(item.get("UID") or ""), item["Status"]))
    return requests


def delete_uid(content: Any) -> str:
    """The UID the edge names in a pod delete: a plain string, or DeleteOptions/a Pod carrying it."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        preconditions = content.get("preconditions") or {}
        return str(preconditions.get("uid") or uid_of(content) or content.get("uid") or "")
    return ""


def finished(pod: Object) -> bool:
    """A terminating pod whose containers all stopped: nothing is left for the edge to do."""
    status = pod.get("status") or {}
    if not meta(pod).get("deletionTimestamp") or status.get("phase") not in _FINISHED_PHASES:
        return False
    states = [c.get("state") or {} for c in status.get("containerStatuses") or []]
    return not any("waiting" in s or "running" in s for s in states)


class PodHandlers:
    def __init__(self, client: KubeJSON) -> None:
        self.client = client

    async def update_status(self, res: CloudResource, message: Message) -> Message | None:
        """Write each status; reply once all are written or can never be (the edge's outbox resends a report
        until it is answered), none when the API failed (so the edge resends it)."""
        try:
            requests = status_requests(content_json(message), res.name)
        except ValueError as exc:
            log.warning("pod status refused", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, f"pod status refused: {exc}")
        retry = False
        for name, uid, status in requests:
            try:
                pod = await self._write_status(res, name, uid, status)
            except Refused as exc:
                log.warning("pod status not updated", node=res.node, msg_id=message.msg_id, pod=name, err=exc)
                continue
            except KubeError as exc:
                retry = retry or exc.transient
                log.warning("pod status not updated", node=res.node, msg_id=message.msg_id, pod=name, err=exc)
                continue
            log.v(3).info(
                "pod status updated",
                node=res.node,
                msg_id=message.msg_id,
                pod=f"{res.namespace}/{name}",
                phase=(pod.get("status") or {}).get("phase", ""),
            )
            await self._end_if_finished(res, pod, message)
        return None if retry else reply(message, OK)

    async def _write_status(self, res: CloudResource, name: str, uid: str, status: Object) -> Object:
        def status_of(pod: Object) -> Object:
            if uid and uid != uid_of(pod):
                raise Refused(f"pod {res.namespace}/{name}: status for uid {uid}, the pod has uid {uid_of(pod)}")
            return status

        return await self.client.replace_status(POD.object_path(res.namespace, name),
                                                partial(self._own_pod, res, name), status_of)

    async def patch_status(self, res: CloudResource, message: Message) -> Message:
        try:
            patch = content_json(message)
            if not isinstance(patch, dict):
                raise Refused(f"message {message.msg_id}: the pod patch must be a JSON object")
            await self._own_pod(res, res.name)
            pod = await self.client.patch(
                POD.object_path(res.namespace, res.name, "status"), patch, STRATEGIC_MERGE_PATCH
            )
        except KubeError as exc:
            log.warning("pod status patch failed", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, object_resp(None, exc))
        except ValueError as exc:
            log.warning("pod status patch refused", node=res.node, msg_id=message.msg_id, err=exc)
            return reply(message, object_resp(None, str(exc)))
        log.v(3).info("pod status patched", node=res.node, msg_id=message.msg_id, pod=f"{res.namespace}/{res.name}")
        await self._end_if_finished(res, pod, message)
        return reply(message, object_resp(pod))

    async def delete(self, res: CloudResource, message: Message) -> None:
        """The deletion handshake: the edge has removed the pod, so the API object goes now."""
        try:
            pod = await self._own_pod(res, res.name)
            uid = delete_uid(message.content) or uid_of(pod)
            if uid != uid_of(pod):
                log.v(2).info(
                    "pod delete for an older pod of that name ignored",
                    node=res.node,
                    msg_id=message.msg_id,
                    pod=f"{res.namespace}/{res.name}",
                    uid=uid,
                )
                return
            await self._delete_now(res.namespace, res.name, uid)
        except KubeError as exc:
            if not exc.not_found:
                log.warning("pod not deleted", node=res.node, msg_id=message.msg_id, err=exc)
            return
        except Refused as exc:
            log.warning("pod delete refused", node=res.node, msg_id=message.msg_id, err=exc)
            return
        log.info(
            "pod deleted after the edge confirmed it gone",
            node=res.node,
            msg_id=message.msg_id,
            pod=f"{res.namespace}/{res.name}",
        )

    async def _end_if_finished(self, res: CloudResource, pod: Object, message: Message) -> None:
        if not finished(pod):
            return
        try:
            await self._delete_now(res.namespace, str(meta(pod).get("name")), uid_of(pod))
        except KubeError as exc:
            if not exc.not_found:
                log.warning("finished pod not deleted", node=res.node, msg_id=message.msg_id, err=exc)
            return
        log.info(
            "finished terminating pod deleted",
            node=res.node,
            msg_id=message.msg_id,
            pod=f"{res.namespace}/{meta(pod).get('name')}",
        )

    async def _delete_now(self, namespace: str, name: str, uid: str) -> None:
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        await self.client.delete(POD.object_path(namespace, name), options)

    async def _own_pod(self, res: CloudResource, name: str) -> Object:
        pod = await self.client.get(POD.object_path(res.namespace, name))
        if pod_node(pod) != res.node:
            raise Refused(f"pod {res.namespace}/{name} is not bound to node {res.node}")
        return pod
