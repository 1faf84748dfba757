"""Object validation: schema errors, unknown fields, semantic rules, worded as kube-apiserver words them."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudcore.controlplane.api import schemas, validation
from cloudcore.controlplane.api.validation import FieldError, validate_builtin, validate_crd, validate_custom


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default",
                     "labels": {"app": "web", "example.com/tier": "front"},
                     "annotations": {"kubernetes.io/description": "a web server"}},
        "spec": {
            "restartPolicy": "Always",
            "containers": [{
                "name": "web", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "prod"}],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": 0.25}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
            }],
        },
    }


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"},
                         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                         "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
        },
    }


def service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                                           {"name": "metrics", "port": 9090}]}}


CRON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "minLength": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "settings": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                             "properties": {"level": {"type": "integer"}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
                "empty": {"type": "object"},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab",
                      "listKind": "CronTabList", "shortNames": ["ct"]},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": CRON_SCHEMA},
                          "subresources": {"status": {}}}],
        },
    }


def crontab() -> dict[str, Any]:
    return {"apiVersion": "stable.example.com/v1", "kind": "CronTab",
            "metadata": {"name": "nightly", "namespace": "default", "labels": {"app": "cron"}},
            "spec": {"image": "busybox", "replicas": 3, "port": "http", "note": None, "mode": "fast",
                     "settings": {"level": 2, "anything": {"goes": [1, 2]}}, "labels": {"a": "b"},
                     "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}},
            "status": {"ready": True}}


def errors_of(group: str, kind: str, obj: dict[str, Any]) -> list[FieldError]:
    return validate_builtin(group, "v1", kind, obj, "Strict").errors


def only(errors: list[FieldError]) -> FieldError:
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


# -- valid objects ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("group", "kind", "obj"), [
    ("", "Pod", pod()),
    ("apps", "Deployment", deployment()),
    ("", "Service", service()),
    ("", "ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                       "data": {"app.properties": "a=b", "MODE": "x"},
                       "binaryData": {"logo.png": "iVBORw0KGgo="}}),
    ("", "Secret", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque",
                    "data": {"password": "c2VjcmV0"}, "stringData": {"user": "admin"}}),
    ("", "Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
    ("apiextensions.k8s.io", "CustomResourceDefinition", crd()),
])
def test_valid_objects_pass(group: str, kind: str, obj: dict[str, Any]) -> None:
    result = validate_builtin(group, "v1", kind, obj, "Strict")
    assert result.ok and result.errors == [] and result.unknown_fields == [] and result.warnings == []
    if kind == "CustomResourceDefinition":
        assert validate_crd(obj).errors == []


def test_unknown_kind_is_a_lookup_error() -> None:
    with pytest.raises(LookupError):
        validate_builtin("example.com", "v1", "Widget", {}, "Strict")


# -- schema errors ----------------------------------------------------------------------------------

def test_wrong_type_is_type_invalid_with_the_field_path() -> None:
    obj = pod()
    obj["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    error = only(errors_of("", "Pod", obj))
    path = "spec.containers[0].ports[0].containerPort"
    assert error == FieldError("FieldValueTypeInvalid", path,
                               f'Invalid value: "string": {path} in body must be of type integer: "string"')


def test_every_schema_error_is_reported_and_null_required_fields_are_missing() -> None:
    obj = pod()
    obj["spec"]["activeDeadlineSeconds"] = "soon"
    obj["spec"]["containers"][0]["env"][0]["name"] = None
    obj["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "lots"
    obj["metadata"]["labels"]["count"] = 3
    found = {(e.type, e.field) for e in errors_of("", "Pod", obj)}
    assert found == {
        ("FieldValueTypeInvalid", "spec.activeDeadlineSeconds"),
        ("FieldValueRequired", "spec.containers[0].env[0].name"),
        ("FieldValueInvalid", "spec.containers[0].resources.limits.cpu"),
        ("FieldValueTypeInvalid", "metadata.labels.count"),
    }


def test_int32_overflow_and_bad_base64_are_invalid() -> None:
    obj = deployment()
    obj["spec"]["replicas"] = 2**31
    error = only(errors_of("apps", "Deployment", obj))
    assert error.message.endswith("should be less than or equal to 2147483647")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}}
    assert only(errors_of("", "Secret", secret)).field == "data.k"


def test_jsonschema_fallback_reports_the_same_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise fastjsonschema.JsonSchemaDefinitionException("cannot compile")

    obj = crontab()
    obj["spec"].update(replicas=0, port=1.5, mode="medium")
    del obj["spec"]["image"]
    fast = validate_custom(obj, CRON_SCHEMA, "Strict", cache_key="fallback-fast").errors
    monkeypatch.setattr(fastjsonschema, "compile", refuse)
    slow = validate_custom(obj, CRON_SCHEMA, "Strict", cache_key="fallback-slow").errors
    assert sorted(map(str, slow)) == sorted(map(str, fast))
    assert len(slow) == 4


# -- metadata ---------------------------------------------------------------------------------------

def test_names_are_dns_subdomains_or_labels_by_kind() -> None:
    obj = pod()
    obj["metadata"]["name"] = "Web_1"
    error = only(errors_of("", "Pod", obj))
    assert error.type == "FieldValueInvalid" and error.field == "metadata.name"
    assert error.message.startswith('Invalid value: "Web_1": a lowercase RFC 1123 subdomain must consist of')
    assert error.message.endswith("regex used for validation is "
                                  r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}}
    assert "RFC 1123 label" in only(errors_of("", "Namespace", namespace)).message
    svc = service()
    svc["metadata"]["name"] = "1web"
    assert "DNS-1035 label" in only(errors_of("", "Service", svc)).message
    long_name = pod()
    long_name["metadata"]["name"] = "a" * 254
    assert only(errors_of("", "Pod", long_name)).message.endswith("must be no more than 253 characters")


def test_name_or_generate_name_is_required() -> None:
    obj = pod()
    del obj["metadata"]["name"]
    error = only(errors_of("", "Pod", obj))
    assert str(error) == "metadata.name: Required value: name or generateName is required"
    obj["metadata"]["generateName"] = "web-"
    assert errors_of("", "Pod", obj) == []


def test_label_and_annotation_syntax() -> None:
    obj = pod()
    obj["metadata"]["labels"] = {"bad key!": "ok", "good": "bad value!", "a/b/c": "x", "v": "x" * 64}
    obj["metadata"]["annotations"] = {"-nope": "fine"}
    errors = errors_of("", "Pod", obj)
    assert [(e.field, e.message.split(":")[1].strip()) for e in errors] == [
        ("metadata.labels", '"bad key!"'), ("metadata.labels", '"bad value!"'),
        ("metadata.labels", '"a/b/c"'), ("metadata.labels", '"' + "x" * 64 + '"'),
        ("metadata.annotations", '"-nope"')]
    assert "name part must consist of alphanumeric characters" in errors[0].message
    assert "(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is " in errors[0].message
    assert "a valid label must be an empty string or consist of alphanumeric characters" in errors[1].message
    assert errors[3].message.endswith("must be no more than 63 characters")


@given(st.from_regex(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?", fullmatch=True))
def test_every_label_value_matching_the_syntax_is_accepted(value: str) -> None:
    assert validation.label_value(value) == []


LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


@given(st.text(min_size=1, max_size=80))
def test_label_values_are_accepted_exactly_when_kubernetes_would(value: str) -> None:
    valid = len(value) <= 63 and LABEL_VALUE.fullmatch(value) is not None
    assert (validation.label_value(value) == []) == valid


def test_unqualified_finalizers_warn() -> None:
    obj = pod()
    obj["metadata"]["finalizers"] = ["cleanup", "example.com/cleanup"]
    result = validate_builtin("", "v1", "Pod", obj, "Warn")
    assert result.errors == []
    assert result.warnings == ['metadata.finalizers: "cleanup": prefer a domain-qualified finalizer name to '
                               "avoid accidental conflicts with other finalizer writers"]


# -- pods -------------------------------------------------------------------------------------------

def test_pod_needs_containers() -> None:
    obj = pod()
    obj["spec"]["containers"] = []
    assert str(only(errors_of("", "Pod", obj))) == "spec.containers: Required value"
    del obj["spec"]["containers"]
    assert str(only(errors_of("", "Pod", obj))) == "spec.containers: Required value"


def test_container_name_and_image_rules() -> None:
    obj = pod()
    first = obj["spec"]["containers"][0]
    del first["image"]
    obj["spec"]["containers"] += [{"name": "web", "image": "busybox"}, {"name": "Side_Car", "image": " x "},
                                  {"image": "busybox", "imagePullPolicy": "Sometimes"}]
    errors = errors_of("", "Pod", obj)
    assert [(e.type, e.field) for e in errors] == [
        ("FieldValueRequired", "spec.containers[0].image"),
        ("FieldValueDuplicate", "spec.containers[1].name"),
        ("FieldValueInvalid", "spec.containers[2].name"),
        ("FieldValueInvalid", "spec.containers[2].image"),
        ("FieldValueRequired", "spec.containers[3].name"),
        ("FieldValueNotSupported", "spec.containers[3].imagePullPolicy"),
    ]
    assert errors[1].message == 'Duplicate value: "web"'
    assert errors[3].message == 'Invalid value: " x ": must not have leading or trailing whitespace'
    assert errors[5].message == ('Unsupported value: "Sometimes": supported values: "Always", '
                                 '"IfNotPresent", "Never"')


def test_init_container_names_share_the_namespace_of_container_names() -> None:
    obj = pod()
    obj["spec"]["initContainers"] = [{"name": "web", "image": "busybox"}]
    assert str(only(errors_of("", "Pod", obj))) == 'spec.containers[0].name: Duplicate value: "web"'


def test_container_ports_and_restart_policy() -> None:
    obj = pod()
    obj["spec"]["containers"][0]["ports"] = [{"containerPort": 0}, {"containerPort": 80, "protocol": "ICMP"}]
    obj["spec"]["restartPolicy"] = "Sometimes"
    assert [str(e) for e in errors_of("", "Pod", obj)] == [
        "spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        'spec.containers[0].ports[1].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", '
        '"UDP"',
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", '
        '"Never"',
    ]


# -- workloads --------------------------------------------------------------------------------------

def test_deployment_selector_must_match_template_labels() -> None:
    obj = deployment()
    obj["spec"]["template"]["metadata"]["labels"] = {"tier": "front", "app": "other"}
    assert str(only(errors_of("apps", "Deployment", obj))) == (
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"other", "tier":"front"}: '
        "`selector` does not match template `labels`")
    obj["spec"]["template"]["metadata"]["labels"] = {"app": "web", "tier": "back"}  # matchExpressions fail
    assert only(errors_of("apps", "Deployment", obj)).field == "spec.template.metadata.labels"


def test_deployment_selector_is_required_and_not_empty() -> None:
    obj = deployment()
    del obj["spec"]["selector"]
    assert str(only(errors_of("apps", "Deployment", obj))) == "spec.selector: Required value"
    obj["spec"]["selector"] = {}
    error = only(errors_of("apps", "Deployment", obj))
    assert error.field == "spec.selector"
    assert error.message.endswith(": empty selector is invalid for deployment")


def test_selector_expressions_are_checked() -> None:
    obj = deployment()
    obj["spec"]["selector"]["matchExpressions"] = [
        {"key": "tier", "operator": "Near", "values": ["x"]}, {"key": "tier", "operator": "In"},
        {"key": "gone", "operator": "DoesNotExist", "values": ["x"]}]
    assert [(e.type, e.field) for e in errors_of("apps", "Deployment", obj)] == [
        ("FieldValueInvalid", "spec.selector.matchExpressions[0].operator"),
        ("FieldValueRequired", "spec.selector.matchExpressions[1].values"),
        ("FieldValueForbidden", "spec.selector.matchExpressions[2].values"),
        ("FieldValueInvalid", "spec.template.metadata.labels"),
    ]


def test_replicas_not_negative_and_template_restarts_always() -> None:
    obj = deployment()
    obj["spec"]["replicas"] = -1
    obj["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    obj["spec"]["template"]["spec"]["containers"][0]["name"] = ""
    assert [str(e) for e in errors_of("apps", "Deployment", obj)] == [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "spec.template.spec.containers[0].name: Required value",
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"',
    ]


def test_daemonset_has_no_replicas_rule_but_the_selector_rules() -> None:
    obj = deployment()
    obj["kind"] = "DaemonSet"
    del obj["spec"]["replicas"], obj["spec"]["strategy"]
    assert errors_of("apps", "DaemonSet", obj) == []
    obj["spec"]["template"]["metadata"]["labels"] = {}
    assert only(errors_of("apps", "DaemonSet", obj)).field == "spec.template.metadata.labels"


# -- services, config -------------------------------------------------------------------------------

def test_service_ports() -> None:
    obj = service()
    obj["spec"]["ports"] = [{"name": "http", "port": 0}, {"name": "http", "port": 70000, "targetPort": 0},
                            {"port": 81}]
    assert [str(e) for e in errors_of("", "Service", obj)] == [
        "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        'spec.ports[1].name: Duplicate value: "http"',
        "spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "spec.ports[1].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        "spec.ports[2].name: Required value",
    ]


def test_service_type_ports_required_and_external_name() -> None:
    obj = service()
    obj["spec"] = {"type": "Balanced"}
    assert [e.field for e in errors_of("", "Service", obj)] == ["spec.type", "spec.ports"]
    obj["spec"] = {"clusterIP": "None"}
    assert errors_of("", "Service", obj) == []
    obj["spec"] = {"type": "ExternalName"}
    assert str(only(errors_of("", "Service", obj))) == "spec.externalName: Required value"


def test_configmap_keys() -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
           "data": {"bad key": "x", "shared": "y"}, "binaryData": {"shared": "eQ=="}}
    errors = errors_of("", "ConfigMap", obj)
    assert [(e.field, e.message.split(": ", 2)[2]) for e in errors] == [
        ("data[bad key]", "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
                          "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
                          "'[-._a-zA-Z0-9]+')"),
        ("binaryData[shared]", "duplicate of key present in data"),
    ]


# -- unknown fields ---------------------------------------------------------------------------------

@pytest.mark.parametrize("directive", ["Strict", "Warn", "Ignore"])
def test_unknown_fields_are_listed_whatever_the_directive(directive: validation.FieldValidation) -> None:
    obj = pod()
    obj["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    obj["spec"]["foo"] = {"bar": 1}
    obj["metadata"]["labelz"] = {}
    obj["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:anything": {}}}}]
    result = validate_builtin("", "v1", "Pod", obj, directive)
    assert result.errors == [] and result.warnings == []
    assert result.unknown_fields == ["metadata.labelz", "spec.containers[0].imagePullPolcy", "spec.foo"]


# -- custom resources -------------------------------------------------------------------------------

def test_valid_custom_resource_passes() -> None:
    result = validate_custom(crontab(), CRON_SCHEMA, "Strict", cache_key="crontabs.stable.example.com/v1")
    assert result.errors == [] and result.unknown_fields == []


def test_custom_resource_schema_errors() -> None:
    obj = crontab()
    obj["spec"].update(replicas=0, port=1.5, mode="medium", image="")
    obj["spec"]["labels"]["n"] = 1
    errors = validate_custom(obj, CRON_SCHEMA, "Strict", cache_key="crontabs.stable.example.com/v1").errors
    assert sorted(map(str, errors)) == sorted([
        'spec.image: Invalid value: "": spec.image in body should be at least 1 chars long',
        "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
        'spec.port: Invalid value: "number": spec.port in body must be of type integer,string: "number"',
        'spec.mode: Unsupported value: "medium": supported values: "fast", "slow"',
        'spec.labels.n: Invalid value: "integer": spec.labels.n in body must be of type string: "integer"',
    ])
    del obj["spec"]["image"]
    errors = validate_custom(obj, CRON_SCHEMA, "Strict", cache_key="crontabs.stable.example.com/v1").errors
    assert FieldError("FieldValueRequired", "spec.image", "Required value") in errors


def test_int_or_string_takes_both() -> None:
    for port in (8080, "http"):
        obj = crontab()
        obj["spec"]["port"] = port
        assert validate_custom(obj, CRON_SCHEMA, "Strict", cache_key="crontabs/v1").errors == []


def test_nullable_takes_null_and_others_do_not() -> None:
    obj = crontab()
    obj["spec"]["note"] = None
    assert validate_custom(obj, CRON_SCHEMA, "Strict", cache_key="crontabs/v1").errors == []
    obj["spec"]["mode"] = None
    error = only(validate_custom(obj, CRON_SCHEMA, "Strict", cache_key="crontabs/v1").errors)
    assert error.type == "FieldValueTypeInvalid" and error.field == "spec.mode"
    assert error.message.endswith('must be of type string: "null"')


def test_custom_unknown_fields_follow_pruning() -> None:
    obj = crontab()
    obj["spec"]["bogus"] = 1                      # not in the schema
    obj["spec"]["settings"]["free"] = {"x": 1}    # preserve-unknown-fields
    obj["spec"]["empty"] = {"dropped": True}      # object without properties prunes everything
    obj["spec"]["template"]["metadata"]["nope"] = 1  # embedded resource metadata is an ObjectMeta
    obj["metadata"]["unknown"] = "x"
    obj["extra"] = 1
    result = validate_custom(obj, CRON_SCHEMA, "Ignore", cache_key="crontabs/v1")
    assert result.errors == []
    assert result.unknown_fields == ["metadata.unknown", "spec.template.metadata.nope", "spec.bogus",
                                     "spec.empty.dropped", "extra"]


def test_custom_metadata_follows_object_meta_rules() -> None:
    obj = crontab()
    obj["metadata"]["name"] = "Nightly"
    obj["metadata"]["labels"] = {"a": 1}
    errors = validate_custom(obj, CRON_SCHEMA, "Strict", cache_key="crontabs/v1").errors
    assert [(e.type, e.field) for e in errors] == [("FieldValueInvalid", "metadata.name"),
                                                   ("FieldValueTypeInvalid", "metadata.labels.a")]


def test_embedded_resources_need_kind_and_api_version() -> None:
    obj = crontab()
    obj["spec"]["template"] = {"metadata": {"name": "x"}}
    errors = validate_custom(obj, CRON_SCHEMA, "Strict", cache_key="crontabs/v1").errors
    assert {str(e) for e in errors} == {"spec.template.apiVersion: Required value",
                                        "spec.template.kind: Required value"}


def test_changed_schema_under_the_same_key_is_recompiled() -> None:
    schema = copy.deepcopy(CRON_SCHEMA)
    obj = crontab()
    obj["spec"]["replicas"] = 10
    assert validate_custom(obj, schema, "Strict", cache_key="recompiled/v1").errors == []
    schema = copy.deepcopy(schema)
    schema["properties"]["spec"]["properties"]["replicas"]["maximum"] = 5
    error = only(validate_custom(obj, schema, "Strict", cache_key="recompiled/v1").errors)
    assert error.field == "spec.replicas"


def test_exclusive_bounds_in_openapi_v3_form() -> None:
    schema = {"type": "object",
              "properties": {"n": {"type": "number", "minimum": 0, "exclusiveMinimum": True}}}
    obj = {"apiVersion": "x.io/v1", "kind": "N", "metadata": {"name": "n"}, "n": 0}
    error = only(validate_custom(obj, schema, "Strict", cache_key="n/v1").errors)
    assert error.message == "Invalid value: 0: n in body should be greater than 0"


# -- CRDs -------------------------------------------------------------------------------------------

def test_crd_rules() -> None:
    obj = crd()
    spec = obj["spec"]
    spec["group"] = "example"
    spec["scope"] = "Global"
    del spec["names"]["kind"]
    spec["versions"].append({"name": "V2", "served": True, "storage": True})
    builtin = validate_builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition", obj, "Strict").errors
    errors = builtin + validate_crd(obj).errors
    assert [str(e) for e in errors] == [
        'spec.group: Invalid value: "example": should be a domain with at least one dot',
        "spec.names.kind: Required value",
        'spec.versions[1].name: Invalid value: "V2": a DNS-1035 label must consist of lower case '
        "alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric "
        "character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
        "'[a-z]([-a-z0-9]*[a-z0-9])?')",
        "spec.versions[1].schema.openAPIV3Schema: Required value: schemas are required",
        'spec.versions: Invalid value: []string{"v1", "V2"}: must have exactly one version marked as storage '
        "version",
        'spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"',
        'metadata.name: Invalid value: "crontabs.stable.example.com": must be '
        'spec.names.plural+"."+spec.group',
    ]


def test_crd_missing_fields_are_reported_once() -> None:
    obj = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "x.example.com"}, "spec": {"names": {}}}
    builtin = validate_builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition", obj, "Strict").errors
    errors = builtin + validate_crd(obj).errors
    assert sorted(str(e) for e in errors) == sorted([
        "spec.group: Required value", "spec.names.plural: Required value", "spec.names.kind: Required value",
        "spec.versions: Required value", "spec.scope: Required value",
        'metadata.name: Invalid value: "x.example.com": must be spec.names.plural+"."+spec.group',
    ])


def test_crd_root_schema_must_be_an_object() -> None:
    obj = crd()
    obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = {"type": "string"}
    assert str(only(validate_crd(obj).errors)) == (
        'spec.versions[0].schema.openAPIV3Schema.type: Invalid value: "string": must be object at the root')


# -- schemas and speed ------------------------------------------------------------------------------

def test_definition_lookup() -> None:
    assert schemas.definition_for_gvk("", "v1", "Pod") == "io.k8s.api.core.v1.Pod"
    assert schemas.definition_for_gvk("apps", "v1", "Deployment") == "io.k8s.api.apps.v1.Deployment"
    assert schemas.definition_for_gvk("autoscaling", "v1", "Scale") == "io.k8s.api.autoscaling.v1.Scale"
    assert schemas.definition_for_gvk("", "v1", "Status") == "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
    assert schemas.definition_for_gvk("apps", "v1", "DeleteOptions") == \
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
    assert schemas.definition_for_gvk("stable.example.com", "v1", "CronTab") is None
    assert schemas.resolve("#/$defs/io.k8s.api.core.v1.Pod") is schemas.definition("io.k8s.api.core.v1.Pod")
    assert schemas.definitions() is schemas.definitions()  # parsed once, shared


def test_validating_a_typical_pod_takes_well_under_a_millisecond() -> None:
    obj = pod()
    validate_builtin("", "v1", "Pod", obj, "Strict")  # compile once
    started = time.perf_counter()
    for _ in range(1000):
        validate_builtin("", "v1", "Pod", obj, "Strict")
    assert time.perf_counter() - started < 1.0
