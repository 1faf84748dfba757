"""Upstream's Application: which API call an edge MetaServer's write becomes, and what a node may not write."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from cloudcore.dynamiccontroller.application import ApiCall, ApplicationError, api_call, approved, decode_bytes


def b64(value: Any) -> str:
    return base64.b64encode(orjson.dumps(value)).decode()


def app(verb: str, key: str, body: Any = None, option: Any = None, subresource: str = "") -> dict[str, Any]:
    return {"ID": "x", "Key": key, "Verb": verb, "Nodename": "spoofed", "Option": b64(option or {}),
            "ReqBody": None if body is None else b64(body), "Subresource": subresource, "Status": "InApplying"}


def test_create_update_status_delete_become_the_matching_requests() -> None:
    cm = {"metadata": {"name": "c"}, "data": {"k": "v"}}
    assert api_call(app("create", "/core/v1/configmaps/default", cm, {"fieldManager": "kubectl"}), "e1") == ApiCall(
        "POST", "/api/v1/namespaces/default/configmaps", {"fieldManager": "kubectl"}, cm)
    assert api_call(app("update", "/apps/v1/deployments/web/d", {"x": 1}), "e1").path == \
        "/apis/apps/v1/namespaces/web/deployments/d"
    assert api_call(app("updatestatus", "/core/v1/pods/default/p", {}), "e1").path == \
        "/api/v1/namespaces/default/pods/p/status"
    delete = api_call(app("delete", "/core/v1/pods/default/p", option={"gracePeriodSeconds": 0}), "e1")
    assert (delete.method, delete.query, delete.body) == (
        "DELETE", {}, {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
    assert api_call(app("create", "/rbac.authorization.k8s.io/v1/clusterroles", {}), "e1").path == \
        "/apis/rbac.authorization.k8s.io/v1/clusterroles"


def test_a_patch_carries_its_type_and_raw_data() -> None:
    info = {"Name": "c", "PatchType": "application/json-patch+json",
            "Data": base64.b64encode(b'[{"op":"add","path":"/data/a","value":"b"}]').decode(), "Options": {}}
    call = api_call(app("patch", "/core/v1/configmaps/default/c", info), "e1")
    assert (call.method, call.content_type, call.body) == (
        "PATCH", "application/json-patch+json", [{"op": "add", "path": "/data/a", "value": "b"}])


@pytest.mark.parametrize(("verb", "key"), [
    ("update", "/core/v1/nodes/null/other-node"),
    ("delete", "/core/v1/nodes/null/e1"),
    ("patch", "/coordination.k8s.io/v1/leases/kube-node-lease/other-node"),
    ("escalate", "/core/v1/pods/default/p"),
    ("get", "/core/v1/secrets/default/s"),
    ("create", "/core/v1"),
])
def test_another_nodes_node_or_lease_and_malformed_requests_are_refused(verb: str, key: str) -> None:
    body = {"Name": "x", "PatchType": "application/merge-patch+json", "Data": ""} if verb == "patch" else {}
    with pytest.raises(ApplicationError):
        api_call(app(verb, key, body), "e1")


def test_the_answer_carries_the_object_as_go_bytes() -> None:
    answer = approved(app("create", "/core/v1/configmaps/default", {}), {"kind": "ConfigMap"})
    assert answer["Status"] == "Approved" and decode_bytes(answer["RespBody"]) == {"kind": "ConfigMap"}
