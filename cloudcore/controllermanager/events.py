"""core/v1 Events about the controllers' objects, written through the API (one POST each).

Each controller says only what changed (a new problem), so Events are not repeated on every sync; a
failed write is logged, never retried (an Event is advice, the status condition is the record).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from cloudcore.controllermanager.keys import EVENT
from cloudcore.edgecontroller.kinds import name_of, namespace_of, uid_of
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from common.log import get_logger

log = get_logger("controllermanager")

Object = dict[str, Any]


def event_body(involved: Object, event_type: str, reason: str, message: str, component: str) -> Object:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = namespace_of(involved) or "default"
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{name_of(involved)}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                           "name": name_of(involved), "namespace": namespace_of(involved),
                           "uid": uid_of(involved),
                           "resourceVersion": str((involved.get("metadata") or {}).get("resourceVersion") or "")},
        "reason": reason, "message": message[:1024], "type": event_type,
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


async def record(client: KubeJSON, involved: Object, event_type: str, reason: str, message: str,
                 component: str) -> None:
    body = event_body(involved, event_type, reason, message, component)
    try:
        await client.create(EVENT.collection_path(body["metadata"]["namespace"]), body)
    except KubeError as exc:
        log.warning("event not written", object=name_of(involved), reason=reason, err=exc)
