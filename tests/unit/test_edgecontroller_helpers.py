"""EdgeController pure helpers: API paths, versions, registration bodies, status merging, replies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloudcore.edgecontroller.kinds import ENDPOINTSLICE, LEASE, NODE, POD, is_newer, with_type_meta
from cloudcore.edgecontroller.kubeapi import KubeError
from cloudcore.edgecontroller.messages import content_object, error_reply, object_resp, reply
from cloudcore.edgecontroller.nodes import is_restricted_label, merged_status, registration
from cloudcore.edgecontroller.pods import delete_uid, finished, status_requests
from common.message import Message
from common.version import KUBELET_VERSION


def test_api_paths() -> None:
    assert POD.collection_path() == "/api/v1/pods"
    assert POD.object_path("ns", "p", "status") == "/api/v1/namespaces/ns/pods/p/status"
    assert NODE.object_path("", "n1") == "/api/v1/nodes/n1"
    assert NODE.collection_path("ignored") == "/api/v1/nodes"
    assert ENDPOINTSLICE.collection_path("ns") == "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices"
    assert LEASE.api_version == "coordination.k8s.io/v1"


def test_resource_versions_compare_as_numbers() -> None:
    assert is_newer("10", "9") and not is_newer("9", "10") and not is_newer("5", "5")
    assert is_newer("abc", "abd") and not is_newer("abc", "abc")


def test_type_meta_is_added_without_copying_when_present() -> None:
    typed = {"apiVersion": "v1", "kind": "Pod", "metadata": {}}
    assert with_type_meta(POD, typed) is typed
    assert with_type_meta(POD, {"metadata": {}}) == typed


def test_restricted_labels() -> None:
    assert is_restricted_label("kubernetes.io/hostname")
    assert is_restricted_label("node-role.kubernetes.io/edge")
    assert not is_restricted_label("example.com/x") and not is_restricted_label("plain")
    assert not is_restricted_label("notkubernetes.io/x")


def test_registration_adds_edge_labels_and_kubelet_version_and_splits_restricted_labels() -> None:
    sent = {
        "metadata": {
            "name": "other",
            "resourceVersion": "3",
            "uid": "u",
            "labels": {"kubernetes.io/hostname": "h", "zone": "a"},
        },
        "status": {"nodeInfo": {"osImage": "linux"}},
    }
    body, restricted = registration("e1", sent)
    assert body["apiVersion"] == "v1" and body["kind"] == "Node"
    assert body["metadata"] == {"name": "e1", "labels": {"zone": "a"}}
    assert restricted == {
        "node-role.kubernetes.io/edge": "",
        "node-role.kubernetes.io/agent": "",
        "kubernetes.io/hostname": "h",
    }
    assert body["status"]["nodeInfo"] == {"osImage": "linux", "kubeletVersion": KUBELET_VERSION}
    assert KUBELET_VERSION == "v1.30.7-kubeedge-v1.20.0"
    own_version = registration("e1", {"status": {"nodeInfo": {"kubeletVersion": "v1.29.5-kubeedge-v1.19.0"}}})[0]
    assert own_version["status"]["nodeInfo"]["kubeletVersion"] == "v1.29.5-kubeedge-v1.19.0"


def test_status_merge_refreshes_stale_heartbeats_and_keeps_cloud_fields() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    reported = {
        "conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-01T11:59:55Z"},
            {"type": "DiskPressure", "status": "False", "lastHeartbeatTime": "2025-01-01T11:00:00Z"},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }
    current = {
        "status": {
            "volumesAttached": [{"name": "v", "devicePath": "/d"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10351}},
        }
    }
    status = merged_status(reported, current, now, frequency=10)
    assert [c["lastHeartbeatTime"] for c in status["conditions"]] == ["2025-01-01T11:59:55Z", "2025-01-01T12:00:00Z"]
    assert status["volumesAttached"] == [{"name": "v", "devicePath": "/d"}]
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10351
    assert reported["conditions"][1]["lastHeartbeatTime"] == "2025-01-01T11:00:00Z"  # input untouched


def test_pod_status_requests_and_delete_uids() -> None:
    one = {"UID": "u1", "Name": "p", "Status": {"phase": "Running"}}
    assert status_requests(one, "fallback") == [("p", "u1", {"phase": "Running"})]
    assert status_requests([one, {"Status": {}}, "junk"], "fallback") == [
        ("p", "u1", {"phase": "Running"}),
        ("fallback", "", {}),
    ]
    assert delete_uid("u1") == "u1"
    assert delete_uid({"preconditions": {"uid": "u2"}}) == "u2"
    assert delete_uid({"metadata": {"uid": "u3"}}) == "u3"
    assert delete_uid(None) == ""


def test_a_terminating_pod_is_finished_once_no_container_runs() -> None:
    base = {
        "metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"},
        "status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}]},
    }
    assert finished(base)
    assert not finished({**base, "metadata": {}})
    assert not finished({**base, "status": {"phase": "Running"}})
    assert not finished({**base, "status": {"phase": "Failed", "containerStatuses": [{"state": {"running": {}}}]}})


def test_replies_point_at_the_request() -> None:
    request = Message.new(source="edged", group="meta", operation="query", resource="node/e1/ns/secret/s")
    answer = reply(request, "OK", resource_version="9")
    assert answer.parent_msg_id == request.msg_id and answer.operation == "response"
    assert answer.source == "edgecontroller" and answer.group == "resource" and answer.resource == request.resource
    assert answer.header.resource_version == "9"
    refused = error_reply(request, "forbidden")
    assert refused.operation == "error" and refused.content == "forbidden" and refused.parent_msg_id == request.msg_id
    assert object_resp({"a": 1}) == {"Object": {"a": 1}, "Err": None}
    err = object_resp(None, KubeError(404, "NotFound", "gone"))["Err"]
    assert err["ErrStatus"]["reason"] == "NotFound" and err["ErrStatus"]["code"] == 404


def test_content_object_accepts_json_objects_and_json_strings_only() -> None:
    def message(content: object) -> Message:
        return Message.new(source="edged", group="meta", operation="insert", resource="r", content=content)

    assert content_object(message({"a": 1})) == {"a": 1}
    assert content_object(message('{"a": 1}')) == {"a": 1}
    for bad in ("not json", "[1]", 5, None):
        with pytest.raises(ValueError):
            content_object(message(bad))
