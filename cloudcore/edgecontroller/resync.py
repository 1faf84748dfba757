"""After a cloudcore (re)start: deletes for copies the edge holds of objects gone while no informer watched.

A watch reports every deletion, but not those that happened while cloudcore was down, and the start-up
inserts only cover objects that still exist. The ObjectSync / ClusterObjectSync records (`<node>.<uid>`,
written by CloudHub from an object's first send) say which node may hold which object: once the
informers have listed, every record whose object is gone, was re-created (another UID), or is no longer
the node's to have, yields a delete for that node. Its ACK removes the record. The role of upstream's
SyncController, done once per start instead of every 5 s: while cloudcore runs, the watches see deletes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from cloudcore.edgecontroller.kinds import BY_TYPE, Kind, Object, uid_of
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from cloudcore.edgecontroller.planner import Push
from common.constants import NAMESPACE_CLUSTER_SCOPED, Op
from common.log import get_logger
from common.message import Message
from common.resource import build_resource

log = get_logger("edgecontroller")

SYNCS: Final = ("/apis/reliablesyncs.kubeedge.io/v1alpha1/objectsyncs",
                "/apis/reliablesyncs.kubeedge.io/v1alpha1/clusterobjectsyncs")

# `node/<node>/<ns>/<type>/<name>` -> the node's current message for that object, None if it may not have it.
Lookup = Callable[[str], Message | None]


def stale_copies(records: list[Object], lookup: Lookup) -> list[Push]:
    """Deletes for every record naming an object the node should no longer hold (pure)."""
    pushes = []
    for record in records:
        push = _delete_for(record, lookup)
        if push is not None:
            pushes.append(push)
    return pushes


def _delete_for(record: Object, lookup: Lookup) -> Push | None:
    metadata: dict[str, Any] = record.get("metadata") or {}
    spec: dict[str, Any] = record.get("spec") or {}
    node, _, uid = str(metadata.get("name") or "").rpartition(".")
    kind: Kind | None = BY_TYPE.get(str(spec.get("objectKind") or "").lower())
    name = str(spec.get("objectName") or "")
    if not node or not uid or kind is None or not name:
        return None  # another controller's kind (devices) or a malformed record
    namespace = str(metadata.get("namespace") or "") if kind.namespaced else ""
    current = lookup(build_resource(node, namespace or NAMESPACE_CLUSTER_SCOPED, kind.type, name))
    if current is not None and isinstance(current.content, dict) and uid_of(current.content) == uid:
        return None
    stub = {"metadata": {"name": name, "uid": uid, **({"namespace": namespace} if namespace else {})}}
    return Push(node, Op.DELETE, kind, stub)


async def list_records(client: KubeJSON) -> list[Object]:
    """Every ObjectSync and ClusterObjectSync; none when the CRDs are not installed."""
    records: list[Object] = []
    for path in SYNCS:
        try:
            found = await client.get(path)
        except KubeError as exc:
            if exc.status != 404:
                raise
            log.v(2).info("reliablesyncs CRDs not installed; no start-up resync", path=path)
            return []
        records.extend(found.get("items") or [])
    return records
