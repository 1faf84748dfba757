"""OpenAPI documents: converted schemas, resolvable refs, GVK extensions, paths for kubectl, stable hashes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from cloudcore.controlplane.api import openapi, schemas
from cloudcore.controlplane.api.openapi import KindInfo, OpenAPICache
from cloudcore.controlplane.api.resources import Registry, infos_from_crd

CRON_SCHEMA: dict[str, Any] = {
    "type": "object", "description": "CronTab runs a command on a schedule.",
    "properties": {"spec": {"type": "object", "properties": {
        "cronSpec": {"type": "string", "description": "When, in cron syntax."},
        "port": {"x-kubernetes-int-or-string": True,
                 "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "note": {"type": "string", "nullable": True}}}},
}


def builtin(group: str, kind: str, resource: str, namespaced: bool = True) -> KindInfo:
    definition = schemas.definition_for_gvk(group, "v1", kind)
    return KindInfo(group, "v1", kind, definition, None, namespaced, resource)


CRONTAB = KindInfo("stable.example.com", "v1", "CronTab", None, CRON_SCHEMA, True, "crontabs")
KINDS = [builtin("", "Pod", "pods"), builtin("", "Namespace", "namespaces", False),
         builtin("", "Service", "services"), builtin("apps", "Deployment", "deployments"), CRONTAB]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every mapping entry, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk(item, f"{path}/{index}")


def schema_nodes(schema: Any) -> Iterator[dict[str, Any]]:
    """A schema and all its subschemas (property names are not keywords)."""
    if not isinstance(schema, dict):
        return
    yield schema
    for sub in schema.get("properties", {}).values():
        yield from schema_nodes(sub)
    for key in ("items", "additionalProperties", "not"):
        yield from schema_nodes(schema.get(key))
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, ()):
            yield from schema_nodes(sub)


def refs(document: dict[str, Any]) -> set[str]:
    return {value for _, key, value in walk(document) if key == "$ref" and isinstance(value, str)}


@pytest.fixture(scope="module")
def core() -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(orjson.dumps(openapi.openapi_v3_document("", "v1", KINDS)))
    return document


@pytest.fixture(scope="module")
def apps() -> dict[str, Any]:
    return openapi.openapi_v3_document("apps", "v1", KINDS)


@pytest.fixture(scope="module")
def custom() -> dict[str, Any]:
    return openapi.openapi_v3_document("stable.example.com", "v1", KINDS)


def test_v3_document_is_openapi_3_with_every_ref_resolvable(core: dict[str, Any], apps: dict[str, Any],
                                                           custom: dict[str, Any]) -> None:
    for document in (core, apps, custom):
        assert document["openapi"] == "3.0.0" and document["info"]["title"] == "Kubernetes"
        assert document["paths"]
        found = refs(document)
        assert found and all(r.startswith("#/components/schemas/") for r in found)
        names = set(document["components"]["schemas"])
        assert {r.removeprefix("#/components/schemas/") for r in found} <= names
        assert b"#/$defs/" not in orjson.dumps(document)


def test_v3_types_are_single_types_and_refs_with_descriptions_are_wrapped(core: dict[str, Any]) -> None:
    nodes = [n for s in core["components"]["schemas"].values() for n in schema_nodes(s)]
    assert len(nodes) > 1000
    assert all(isinstance(n.get("type", ""), str) for n in nodes)
    pod = core["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert pod["type"] == "object"
    assert pod["properties"]["spec"]["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]
    assert pod["properties"]["spec"]["description"].startswith("Specification of the desired behavior")
    assert "enum" not in pod["properties"]["apiVersion"]
    container = core["components"]["schemas"]["io.k8s.api.core.v1.Container"]
    assert container["required"] == ["name"]
    env = container["properties"]["env"]
    assert env["x-kubernetes-patch-merge-key"] == "name" and env["x-kubernetes-patch-strategy"] == "merge"
    assert env["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.EnvVar"}


def test_gvk_extensions_on_kinds(core: dict[str, Any], apps: dict[str, Any]) -> None:
    schemas_ = core["components"]["schemas"]
    assert schemas_["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"] == [
        {"group": "", "kind": "Pod", "version": "v1"}]
    assert schemas_["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"] == [
        {"group": "", "kind": "PodList", "version": "v1"}]
    assert {"group": "", "kind": "Status", "version": "v1"} in \
        schemas_["io.k8s.apimachinery.pkg.apis.meta.v1.Status"]["x-kubernetes-group-version-kind"]
    deployment = apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
    assert deployment["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}]
    assert "io.k8s.api.core.v1.Pod" not in apps["components"]["schemas"]  # only what apps/v1 reaches
    assert "io.k8s.api.core.v1.PodTemplateSpec" in apps["components"]["schemas"]


def test_int_or_string_and_quantity(core: dict[str, Any]) -> None:
    schemas_ = core["components"]["schemas"]
    int_or_string = schemas_["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string["x-kubernetes-int-or-string"] is True and int_or_string["format"] == "int-or-string"
    assert int_or_string["oneOf"] == [{"type": "integer"}, {"type": "string"}] and "type" not in int_or_string
    quantity = schemas_["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert quantity["oneOf"] == [{"type": "string"}, {"type": "number"}] and quantity["description"]


def test_patch_operations_list_field_validation(core: dict[str, Any], custom: dict[str, Any]) -> None:
    patch = core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "kind": "Pod", "version": "v1"}
    assert patch["x-kubernetes-action"] == "patch"
    query = {p["name"] for p in patch["parameters"] if p["in"] == "query"}
    assert query >= {"fieldValidation", "dryRun", "fieldManager", "force"}
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    assert "/api/v1/pods" in core["paths"] and "/api/v1/namespaces/{name}" in core["paths"]
    cron_item = "/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"
    cron_patch = custom["paths"][cron_item]["patch"]
    assert "application/strategic-merge-patch+json" not in cron_patch["requestBody"]["content"]


def test_custom_resource_schema(custom: dict[str, Any]) -> None:
    schemas_ = custom["components"]["schemas"]
    cron = schemas_["com.example.stable.v1.CronTab"]
    assert cron["x-kubernetes-group-version-kind"] == [
        {"group": "stable.example.com", "kind": "CronTab", "version": "v1"}]
    assert cron["description"] == "CronTab runs a command on a schedule."
    assert cron["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert cron["properties"]["apiVersion"]["type"] == "string" and cron["properties"]["kind"]["description"]
    spec = cron["properties"]["spec"]["properties"]
    assert spec["port"]["x-kubernetes-int-or-string"] is True and spec["note"]["nullable"] is True
    listed = schemas_["com.example.stable.v1.CronTabList"]
    assert listed["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/com.example.stable.v1.CronTab"}
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas_


def test_v2_document() -> None:
    document = orjson.loads(orjson.dumps(openapi.openapi_v2_document(KINDS)))
    assert document["swagger"] == "2.0"
    found = refs(document)
    assert found and all(r.startswith("#/definitions/") for r in found)
    assert {r.removeprefix("#/definitions/") for r in found} <= set(document["definitions"])
    definitions = document["definitions"]
    assert definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] == "string"
    assert definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    assert definitions["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["$ref"] == \
        "#/definitions/io.k8s.api.core.v1.PodSpec"
    assert definitions["com.example.stable.v1.CronTab"]["x-kubernetes-group-version-kind"]
    nodes = [n for s in definitions.values() for n in schema_nodes(s)]
    assert not any(key in node for node in nodes for key in ("oneOf", "anyOf", "nullable"))
    patch = document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patch["parameters"])


def test_hashes_are_stable_and_index_points_at_them() -> None:
    first, second = OpenAPICache(lambda: KINDS), OpenAPICache(lambda: list(KINDS))
    index = orjson.loads(first.v3_index().body)
    assert set(index["paths"]) == {"api/v1", "apis/apps/v1", "apis/stable.example.com/v1"}
    for path, entry in index["paths"].items():
        document = first.v3_document(path)
        assert document is not None and document == second.v3_document(path)
        assert entry["serverRelativeURL"] == f"/openapi/v3/{path}?hash={document.hash}"
        assert document.etag == f'"{document.hash}"' and len(document.hash) == 128
    assert first.v3_index() == second.v3_index() and first.v2() == second.v2()
    assert first.v3_document("apis/nope/v1") is None and first.v3_document("api") is None


def test_cache_rebuilds_only_what_changed() -> None:
    kinds = list(KINDS)
    cache = OpenAPICache(lambda: kinds)
    core, cron, index = cache.v3_document("api/v1"), cache.v3_document("apis/stable.example.com/v1"), \
        cache.v3_index()
    changed = dict(CRON_SCHEMA, description="changed")
    kinds[-1] = KindInfo("stable.example.com", "v1", "CronTab", None, changed, True, "crontabs")
    assert cache.v3_document("apis/stable.example.com/v1") == cron  # not invalidated yet
    cache.invalidate()
    assert cache.v3_document("api/v1") is core  # same kinds: the same serialized document
    new_cron = cache.v3_document("apis/stable.example.com/v1")
    assert new_cron is not None and cron is not None and new_cron.hash != cron.hash
    assert cache.v3_index() != index


def test_cache_follows_a_registry() -> None:
    registry = Registry()
    cache = OpenAPICache(registry)
    index = orjson.loads(cache.v3_index().body)
    assert {"api/v1", "apis/apps/v1", "apis/apiextensions.k8s.io/v1"} <= set(index["paths"])
    assert "apis/stable.example.com/v1" not in index["paths"]
    crd = {"metadata": {"name": "crontabs.stable.example.com"},
           "spec": {"group": "stable.example.com", "scope": "Namespaced",
                    "names": {"plural": "crontabs", "kind": "CronTab"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": CRON_SCHEMA}}]}}
    registry.set_crd("crontabs.stable.example.com", infos_from_crd(crd))
    assert "apis/stable.example.com/v1" in orjson.loads(cache.v3_index().body)["paths"]
    document = cache.v3_document("apis/stable.example.com/v1")
    assert document is not None and b"com.example.stable.v1.CronTab" in document.body
