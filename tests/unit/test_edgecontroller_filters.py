"""The `default/kubernetes` EndpointSlice reaches edge nodes pointing at their MetaServer (upstream's defaultMaster)."""

from __future__ import annotations

from cloudcore.edgecontroller.filters import for_edge
from cloudcore.edgecontroller.kinds import ENDPOINTS, ENDPOINTSLICE
from cloudcore.edgecontroller.messages import push_message
from cloudcore.edgecontroller.planner import Push


def master_slice(namespace: str = "default", name: str = "kubernetes") -> dict[str, object]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "9"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1", "10.0.0.2"]}, {"addresses": ["10.0.0.3"]}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}, {"name": "other", "port": 1}]}


def test_the_master_slice_points_at_the_metaserver_and_the_original_is_untouched() -> None:
    original = master_slice()
    message = push_message(Push("edge-1", "update", ENDPOINTSLICE, original))
    assert message.content["endpoints"] == [{"addresses": ["127.0.0.1"]}]
    assert message.content["ports"] == [{"name": "https", "port": 10550, "protocol": "TCP"},
                                        {"name": "other", "port": 1}]
    assert original == master_slice()  # the informer cache keeps the cloud's view
    assert message.header.resource_version == "9"


def test_other_slices_and_the_endpoints_object_pass_unchanged() -> None:
    other = master_slice(name="web")
    assert for_edge(ENDPOINTSLICE, other) is other
    endpoints = {"metadata": {"name": "kubernetes", "namespace": "default"}, "subsets": []}
    assert for_edge(ENDPOINTS, endpoints) is endpoints
