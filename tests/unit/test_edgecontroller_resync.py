"""Start-up resync: ObjectSync records of objects a node should no longer hold become deletes."""

from __future__ import annotations

from typing import Any

from cloudcore.edgecontroller.kinds import NODE, SERVICE
from cloudcore.edgecontroller.resync import stale_copies
from common.constants import Op
from common.message import Message


def record(node: str, uid: str, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
    metadata = {"name": f"{node}.{uid}", **({"namespace": namespace} if namespace else {})}
    return {"metadata": metadata, "spec": {"objectAPIVersion": "v1", "objectKind": kind, "objectName": name},
            "status": {"objectResourceVersion": "5"}}


def test_gone_recreated_and_unauthorised_objects_get_a_delete_live_ones_do_not() -> None:
    live = {
        "node/e.1/default/service/kept": {"metadata": {"name": "kept", "uid": "u-kept"}},
        "node/e.1/default/service/recreated": {"metadata": {"name": "recreated", "uid": "u-new"}},
        "node/e.1/null/node/e.1": {"metadata": {"name": "e.1", "uid": "u-node"}},
    }

    def lookup(resource: str) -> Message | None:
        obj = live.get(resource)
        return None if obj is None else Message.new(source="edgecontroller", group="resource",
                                                     operation=Op.UPDATE, resource=resource, content=obj)

    records = [
        record("e.1", "u-kept", "Service", "kept"),
        record("e.1", "u-old", "Service", "recreated"),
        record("e.1", "u-gone", "Service", "gone"),
        record("e.1", "u-node", "Node", "e.1", namespace=""),
        record("e.1", "u-dev", "Device", "thermo"),  # another controller's kind
        {"metadata": {"name": "malformed"}},
    ]
    pushes = stale_copies(records, lookup)
    assert [(p.node, p.operation, p.kind, p.obj) for p in pushes] == [
        ("e.1", Op.DELETE, SERVICE, {"metadata": {"name": "recreated", "uid": "u-old", "namespace": "default"}}),
        ("e.1", Op.DELETE, SERVICE, {"metadata": {"name": "gone", "uid": "u-gone", "namespace": "default"}}),
    ]
    assert NODE not in {p.kind for p in pushes}
