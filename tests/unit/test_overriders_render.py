"""render.py: an EdgeApplication's objects (names, annotations, namespaces) and its problems; merge patches."""

from __future__ import annotations

import json
from typing import Any

from cloudcore.controllermanager.keys import BELONGING_TO, LAST_APPLIED, SERVICE_TOPOLOGY
from cloudcore.controllermanager.render import (
    contained_refs,
    contained_text,
    last_applied,
    merge_patch,
    render,
)


def deployment(name: str = "web") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}


def app(manifests: Any, groups: list[dict[str, Any]] | None = None,
        labels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": "apps"},
            "spec": {"workloadTemplate": {"manifests": manifests},
                     "workloadScope": {"targetNodeGroups": groups or [], "targetNodeLabels": labels or []}}}


def test_deployments_per_group_service_annotated_others_as_is() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "other"}}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    result = render(app([deployment(), service, config], [{"name": "hz"}, {"name": "bj"}]), {"hz", "bj"})
    assert result.problems == []
    names = [(d.ordinal, d.manifest["kind"], d.manifest["metadata"]["namespace"], d.manifest["metadata"]["name"])
             for d in result.objects]
    assert names == [(0, "Deployment", "apps", "web-hz"), (0, "Deployment", "apps", "web-bj"),
                     (1, "Service", "other", "s"), (2, "ConfigMap", "apps", "c")]
    assert result.objects[0].manifest["spec"]["template"]["spec"]["nodeSelector"] == {BELONGING_TO: "hz"}
    assert result.objects[2].manifest["metadata"]["annotations"][SERVICE_TOPOLOGY] == "range-nodegroup"
    for desired in result.objects:
        stamped = last_applied(desired.manifest)
        assert stamped is not None and LAST_APPLIED not in stamped["metadata"]["annotations"]
        assert stamped["metadata"]["name"] == desired.manifest["metadata"]["name"]


def test_problems_skip_only_what_they_concern() -> None:
    long_name = "d" * 251  # plus "-hz": 254
    result = render(app([deployment(), "not an object", {"kind": "X", "metadata": {"name": "x"}},
                         deployment(long_name)],
                        [{"name": "hz"}, {"name": "nowhere"},
                         {"name": "bad", "overriders": {"imageOverriders": [{"component": "X", "operator": "add"}]}}]),
                    {"hz", "bad"})
    assert [p.reason for p in result.problems] == ["NodeGroupNotFound", "UnknownOverrider", "InvalidManifest",
                                                   "InvalidManifest", "NameTooLong"]
    assert [d.manifest["metadata"]["name"] for d in result.objects] == ["web-hz"]


def test_manifests_not_a_list_and_duplicates() -> None:
    assert [p.reason for p in render(app({"a": 1}), set()).problems] == ["InvalidManifest"]
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    assert [p.reason for p in render(app([config, config]), set()).problems] == ["DuplicateObject"]


def test_merge_patch_drops_removed_fields_and_replaces_lists() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2], "same": {"x": 1}}
    new = {"a": 1, "b": {"c": 5}, "l": [1], "same": {"x": 1}, "n": None}
    assert merge_patch(old, new) == {"b": {"c": 5, "d": None}, "l": [1], "n": None}
    assert merge_patch(new, new) == {}


def test_contained_refs_round_trip_and_tolerate_junk() -> None:
    result = render(app([deployment()], [{"name": "hz"}]), {"hz"})
    text = contained_text({d.ref for d in result.objects})
    assert json.loads(text) == [{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "apps",
                                 "name": "web-hz"}]
    assert contained_refs(text) == [result.objects[0].ref]
    assert contained_refs("{not json") == [] and contained_refs(None) == [] and contained_refs('[{"kind": 1}]') == []
