"""Resource strings: cloud-internal form, wire form, and the trim/prefix at CloudHub."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ResourceError
from common.resource import (
    CloudResource,
    EdgeResource,
    add_node_prefix,
    build_device_resource,
    build_edge_resource,
    build_resource,
    node_of,
    parse_edge_resource,
    parse_resource,
    trim_node_prefix,
)


def test_build_and_parse_cloud_resource() -> None:
    resource = build_resource("edge-1", "default", "pod", "nginx")
    assert resource == "node/edge-1/default/pod/nginx"
    assert parse_resource(resource) == CloudResource("edge-1", "default", "pod", "nginx")
    assert build_resource("edge-1", "default", "pod") == "node/edge-1/default/pod"
    assert parse_resource("node/edge-1/default/pod").name == ""


def test_trim_gives_the_wire_form_and_prefix_restores_it() -> None:
    resource = "node/edge-1/default/pod/nginx"
    assert trim_node_prefix(resource) == "default/pod/nginx"
    assert add_node_prefix("edge-1", "default/pod/nginx") == resource
    assert trim_node_prefix("rule/r1") == "rule/r1"  # rule resources carry no node prefix


def test_cluster_scoped_and_node_delete_tokens() -> None:
    assert build_resource("n", "null", "service", "s") == "node/n/null/service/s"
    assert trim_node_prefix("node/n/namespace/node/n") == "namespace/node/n"


def test_device_resources() -> None:
    assert build_device_resource("n", "membership") == "node/n/membership"
    assert build_device_resource("n", "device", "d1") == "node/n/device/d1"


def test_edge_resource_forms() -> None:
    assert parse_edge_resource("kube-node-lease/lease/edge-1") == EdgeResource("kube-node-lease", "lease",
                                                                                "edge-1")
    assert str(EdgeResource("default", "podpatch", "web")) == "default/podpatch/web"
    assert build_edge_resource("default", "node") == "default/node"
    assert parse_resource("node/e/default/pod/x").edge_form() == EdgeResource("default", "pod", "x")


@pytest.mark.parametrize("bad", ["", "node", "node/e", "node/e/ns", "pod/e/ns/t", "node//ns/t", "node/e//t"])
def test_parse_rejects_malformed(bad: str) -> None:
    with pytest.raises(ResourceError, match="expected node/<node>/<namespace>/<type>"):
        parse_resource(bad)


@pytest.mark.parametrize("bad", ["", "default", "/pod", "default/"])
def test_parse_edge_rejects_malformed(bad: str) -> None:
    with pytest.raises(ResourceError):
        parse_edge_resource(bad)


def test_builders_reject_empty_tokens() -> None:
    with pytest.raises(ResourceError, match="empty node"):
        build_resource("", "ns", "pod")
    with pytest.raises(ResourceError):
        add_node_prefix("", "ns/pod/x")
    with pytest.raises(ResourceError):
        node_of("default/pod/x")


_token = st.text(alphabet=st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1,
                 max_size=20)


@given(_token, _token, _token, _token | st.just(""))
def test_build_parse_trim_round_trip(node: str, namespace: str, rtype: str, name: str) -> None:
    resource = build_resource(node, namespace, rtype, name)
    assert parse_resource(resource) == CloudResource(node, namespace, rtype, name)
    assert node_of(resource) == node
    assert add_node_prefix(node, trim_node_prefix(resource)) == resource
