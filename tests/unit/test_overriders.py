"""Overriders, one table per overrider (ref/devices-groups.md 6.3): input and expected result, edge cases
included; then the order they run in and what check_overriders refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloudcore.controllermanager.imageref import parse_image
from cloudcore.controllermanager.keys import BELONGING_TO
from cloudcore.controllermanager.overriders import (
    OverrideError,
    apply_overriders,
    change_image,
    check_overriders,
    label_target_suffix,
    override_env,
    override_image,
    override_list,
    override_node_selector_group,
    override_node_selector_labels,
    override_replicas,
    override_resources,
)


def deployment(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"nodeSelector": {"disk": "ssd"}, **spec}}}}


def containers_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return list(manifest["spec"]["template"]["spec"]["containers"])


# -- image parsing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("image", "expected"), [
    ("nginx", ("", "nginx", "", "")),
    ("nginx:1.25", ("", "nginx", "1.25", "")),
    ("library/nginx:1.25", ("", "library/nginx", "1.25", "")),
    ("docker.io/library/nginx:1.25", ("docker.io", "library/nginx", "1.25", "")),
    ("localhost/app", ("localhost", "app", "", "")),
    ("registry:5000/team/app:v2", ("registry:5000", "team/app", "v2", "")),
    ("registry:5000/team/app", ("registry:5000", "team/app", "", "")),
    ("quay.io/app@sha256:abcd", ("quay.io", "app", "", "sha256:abcd")),
    ("quay.io/app:v1@sha256:abcd", ("quay.io", "app", "v1", "sha256:abcd")),
])
def test_image_is_split_into_registry_repository_tag_digest(image: str, expected: tuple[str, ...]) -> None:
    ref = parse_image(image)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected
    assert str(ref) == image  # round trip, byte for byte


# -- image overrider ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("image", "component", "operator", "value", "expected"), [
    # Registry
    ("nginx:1.25", "registry", "add", "hub.example.com", "hub.example.com/nginx:1.25"),
    ("docker.io/nginx:1.25", "registry", "add", "-mirror", "docker.io-mirror/nginx:1.25"),
    ("docker.io/nginx:1.25", "registry", "replace", "hz.registry.local", "hz.registry.local/nginx:1.25"),
    ("nginx:1.25", "registry", "replace", "bj.registry.local:5000", "bj.registry.local:5000/nginx:1.25"),
    ("docker.io/nginx:1.25", "registry", "remove", "", "nginx:1.25"),
    ("nginx:1.25", "registry", "remove", "", "nginx:1.25"),  # nothing to remove
    # Repository
    ("docker.io/nginx:1.25", "repository", "add", "-edge", "docker.io/nginx-edge:1.25"),
    ("docker.io/nginx:1.25", "repository", "replace", "team/web", "docker.io/team/web:1.25"),
    ("docker.io/nginx:1.25", "repository", "remove", "", "docker.io:1.25"),
    # Tag
    ("nginx:1.25", "tag", "add", "-alpine", "nginx:1.25-alpine"),
    ("nginx", "tag", "add", "v2", "nginx:v2"),  # no tag yet: add sets it
    ("nginx:1.25", "tag", "replace", "1.26", "nginx:1.26"),
    ("nginx", "tag", "replace", "latest", "nginx:latest"),
    ("nginx:1.25", "tag", "remove", "", "nginx"),
    ("quay.io/app:v1@sha256:abcd", "tag", "replace", "v2", "quay.io/app:v2@sha256:abcd"),  # digest kept
])
def test_change_image(image: str, component: str, operator: str, value: str, expected: str) -> None:
    assert change_image(image, component, operator, value) == expected


def test_image_without_predicate_patches_every_container_and_init_container() -> None:
    manifest = deployment({"name": "a", "image": "nginx:1.25"}, {"name": "b", "image": "docker.io/redis:7"},
                          init=[{"name": "i", "image": "busybox"}])
    override_image(manifest, {"component": "Tag", "operator": "replace", "value": "edge"})
    pod = manifest["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == ["nginx:edge", "docker.io/redis:edge"]
    assert pod["initContainers"][0]["image"] == "busybox:edge"


def test_image_with_predicate_patches_only_that_path() -> None:
    manifest = deployment({"name": "a", "image": "nginx:1.25"}, {"name": "b", "image": "redis:7"})
    override_image(manifest, {"predicate": {"path": "/spec/template/spec/containers/1/image"},
                              "component": "Registry", "operator": "add", "value": "hub.local"})
    assert [c["image"] for c in containers_of(manifest)] == ["nginx:1.25", "hub.local/redis:7"]


@pytest.mark.parametrize("path", [
    "/spec/template/spec/containers/5/image",  # index out of range
    "/spec/template/spec/containers/x/image",  # not an index
    "/spec/template/spec/nothere/image",
    "spec/template/spec/containers/0/image",  # not a JSON pointer
    "/spec/template/spec/containers/0",  # not a string
])
def test_image_predicate_that_names_nothing_is_an_error(path: str) -> None:
    manifest = deployment({"name": "a", "image": "nginx:1.25"})
    with pytest.raises(OverrideError):
        override_image(manifest, {"predicate": {"path": path}, "component": "Tag", "operator": "replace",
                                  "value": "x"})


@pytest.mark.parametrize(("kind", "spec"), [
    ("Pod", {"containers": [{"name": "a", "image": "nginx:1"}]}),
    ("ReplicaSet", {"template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"}]}}}),
    ("DaemonSet", {"template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"}]}}}),
    ("StatefulSet", {"template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"}]}}}),
    ("Job", {"template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"}]}}}),
])
def test_image_walks_the_pod_spec_of_each_workload_kind(kind: str, spec: dict[str, Any]) -> None:
    manifest: dict[str, Any] = {"kind": kind, "metadata": {"name": "x"}, "spec": copy.deepcopy(spec)}
    override_image(manifest, {"component": "Tag", "operator": "replace", "value": "2"})
    pod = manifest["spec"] if kind == "Pod" else manifest["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "nginx:2"


# -- replicas -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("replicas", "expected"), [(3, 3), (0, 0), (None, 1)])
def test_replicas(replicas: int | None, expected: int) -> None:
    assert override_replicas(deployment(), replicas)["spec"]["replicas"] == expected


# -- nodeSelector -------------------------------------------------------------------------------------
def test_group_node_selector_replaces_the_template_selector() -> None:
    manifest = override_node_selector_group(deployment(), "hangzhou")
    assert manifest["spec"]["template"]["spec"]["nodeSelector"] == {BELONGING_TO: "hangzhou"}


def test_label_target_adds_required_affinity_one_in_per_pair() -> None:
    manifest = override_node_selector_labels(deployment(), {"matchLabels": {"zone": "b", "arch": "arm64"}})
    terms = manifest["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "arch", "operator": "In", "values": ["arm64"]},
                                           {"key": "zone", "operator": "In", "values": ["b"]}]}]


def test_label_target_suffix_is_stable_and_order_free() -> None:
    first = label_target_suffix({"zone": "b", "arch": "arm64"})
    assert first == label_target_suffix({"arch": "arm64", "zone": "b"})
    assert first.startswith("ls-") and len(first) == 3 + 8
    assert first != label_target_suffix({"zone": "c", "arch": "arm64"})


# -- command and args ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "before", "operator", "value", "expected"), [
    ("command", ["/app"], "add", ["--v=2"], ["/app", "--v=2"]),
    ("command", None, "add", ["/bin/sh", "-c"], ["/bin/sh", "-c"]),
    ("command", ["/app", "--v=2", "--x"], "remove", ["--v=2"], ["/app", "--x"]),
    ("command", ["/app", "-a", "-a"], "remove", ["-a"], ["/app"]),  # every occurrence
    ("command", ["/app"], "remove", ["--absent"], ["/app"]),
    ("args", ["serve"], "add", ["--port", "80"], ["serve", "--port", "80"]),
    ("args", ["serve", "--debug"], "remove", ["--debug"], ["serve"]),
    ("args", [], "remove", ["x"], []),
])
def test_command_and_args(field: str, before: list[str] | None, operator: str, value: list[str],
                          expected: list[str]) -> None:
    container: dict[str, Any] = {"name": "app", "image": "a"}
    if before is not None:
        container[field] = before
    manifest = deployment(container, {"name": "other", "image": "b", field: ["keep"]})
    override_list(manifest, field, {"containerName": "app", "operator": operator, "value": value})
    app, other = containers_of(manifest)
    assert app[field] == expected
    assert other[field] == ["keep"]  # only the named container


def test_command_for_a_missing_container_changes_nothing() -> None:
    manifest = deployment({"name": "app", "image": "a", "command": ["/app"]})
    override_list(manifest, "command", {"containerName": "nope", "operator": "add", "value": ["x"]})
    assert containers_of(manifest)[0]["command"] == ["/app"]


# -- env ----------------------------------------------------------------------------------------------
A, B, B2, C = ({"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "B", "value": "20"},
               {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})


@pytest.mark.parametrize(("before", "operator", "value", "expected"), [
    ([A], "add", [B], [A, B]),
    (None, "add", [A, C], [A, C]),
    ([A, B], "add", [B2], [A, B2]),  # same name: replaced in place, never duplicated
    ([A, B], "remove", [{"name": "A"}], [B]),
    ([A, B], "remove", [{"name": "Z"}], [A, B]),
    ([A, B], "replace", [B2], [A, B2]),
    ([A], "replace", [B2], [A]),  # replace never adds
    ([A, B], "replace", [C], [A, B]),
])
def test_env(before: list[dict[str, Any]] | None, operator: str, value: list[dict[str, Any]],
             expected: list[dict[str, Any]]) -> None:
    container: dict[str, Any] = {"name": "app", "image": "a"}
    if before is not None:
        container["env"] = copy.deepcopy(before)
    manifest = deployment(container)
    override_env(manifest, {"containerName": "app", "operator": operator, "value": value})
    assert containers_of(manifest)[0]["env"] == expected


# -- resources ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("before", "value", "expected"), [
    (None, {"limits": {"cpu": "500m"}}, {"limits": {"cpu": "500m"}}),
    ({"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}, {"limits": {"cpu": "1"}},
     {"limits": {"cpu": "1"}}),  # replaced whole
    ({"limits": {"cpu": "1"}}, {}, {}),
])
def test_resources(before: dict[str, Any] | None, value: dict[str, Any], expected: dict[str, Any]) -> None:
    container: dict[str, Any] = {"name": "app", "image": "a"}
    if before is not None:
        container["resources"] = before
    manifest = deployment(container, {"name": "side", "image": "s", "resources": {"limits": {"cpu": "9"}}})
    override_resources(manifest, {"containerName": "app", "value": value})
    assert containers_of(manifest)[0]["resources"] == expected
    assert containers_of(manifest)[1]["resources"] == {"limits": {"cpu": "9"}}


# -- all of them, in upstream's order -----------------------------------------------------------------
def test_apply_overriders_in_order_on_a_copy() -> None:
    template = deployment({"name": "app", "image": "nginx:1.25", "command": ["/app"], "args": ["-x"],
                           "env": [A]})
    pristine = copy.deepcopy(template)
    result = apply_overriders(template, "beijing", {
        "replicas": 3,
        "imageOverriders": [{"component": "Registry", "operator": "replace", "value": "bj.local"},
                            {"component": "Tag", "operator": "replace", "value": "1.26"}],
        "commandOverriders": [{"containerName": "app", "operator": "add", "value": ["--v=4"]}],
        "argsOverriders": [{"containerName": "app", "operator": "remove", "value": ["-x"]}],
        "envOverriders": [{"containerName": "app", "operator": "add", "value": [B]}],
        "resourcesOverriders": [{"containerName": "app", "value": {"limits": {"cpu": "200m"}}}],
    }, group="beijing")
    assert template == pristine
    app = containers_of(result)[0]
    assert result["metadata"]["name"] == "web-beijing"
    assert result["spec"]["replicas"] == 3
    assert app["image"] == "bj.local/nginx:1.26"
    assert result["spec"]["template"]["spec"]["nodeSelector"] == {BELONGING_TO: "beijing"}
    assert (app["command"], app["args"], app["env"]) == (["/app", "--v=4"], [], [A, B])
    assert app["resources"] == {"limits": {"cpu": "200m"}}


def test_image_overriders_run_in_list_order() -> None:
    result = apply_overriders(deployment({"name": "app", "image": "nginx:1"}), "g", {"imageOverriders": [
        {"component": "Tag", "operator": "replace", "value": "2"},
        {"component": "Tag", "operator": "add", "value": "-rc"}]}, group="g")
    assert containers_of(result)[0]["image"] == "nginx:2-rc"


@pytest.mark.parametrize(("overriders", "fragment"), [
    ({"imageOverriders": [{"component": "Host", "operator": "add", "value": "x"}]}, "unknown component 'Host'"),
    ({"imageOverriders": [{"component": "Tag", "operator": "append", "value": "x"}]}, "unknown operator 'append'"),
    ({"imageOverriders": [{"component": "tag", "operator": "add"}]}, "unknown component 'tag'"),  # case matters
    ({"commandOverriders": [{"containerName": "a", "operator": "replace", "value": []}]},
     "commandOverriders[0]: unknown operator 'replace'"),
    ({"argsOverriders": [{"containerName": "a", "operator": "set"}]}, "argsOverriders[0]: unknown operator"),
    ({"envOverriders": [{"containerName": "a", "operator": "upsert"}]}, "envOverriders[0]: unknown operator"),
    ({"replicas": -1}, "replicas must be a non-negative integer"),
])
def test_check_overriders_refuses_unknown_components_and_operators(overriders: dict[str, Any],
                                                                   fragment: str) -> None:
    problems = check_overriders(overriders)
    assert any(fragment in p for p in problems), problems
    with pytest.raises(OverrideError):
        apply_overriders(deployment({"name": "a", "image": "x"}), "g", overriders, group="g")


def test_no_overriders_only_name_and_node_selector() -> None:
    assert check_overriders(None) == [] and check_overriders({}) == []
    result = apply_overriders(deployment({"name": "a", "image": "nginx:1"}), "g", None, group="g")
    assert result["metadata"]["name"] == "web-g"
    assert containers_of(result)[0] == {"name": "a", "image": "nginx:1"}
