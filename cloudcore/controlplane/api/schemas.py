"""The Kubernetes v1.30 API schemas: every built-in type's JSON schema, loaded once and shared.

The schemas come from the `kubernetes_validate` package (`v1.30.0-local/_definitions.json`): one
JSON-schema-2020 document whose `$defs` are keyed by the OpenAPI definition name
(`io.k8s.api.core.v1.Pod`), with nullable types written as `["string", "null"]`, references as
`#/$defs/<name>`, and the `x-kubernetes-*` extensions (group-version-kind, list and patch
strategies) kept. The file is parsed on first use and the parsed tree is shared read-only by the
validators, the strategic-merge patcher and the OpenAPI documents: nobody may modify it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

import orjson

BUILTIN_VERSION: Final = "v1.30.0"
REF_PREFIX: Final = "#/$defs/"

_PACKAGE: Final = "kubernetes_validate"
_SCHEMA_DIR: Final = "kubernetes-json-schema"


@functools.cache
def definitions() -> Mapping[str, Mapping[str, Any]]:
    """All definitions by name (`io.k8s.api.core.v1.Pod` -> its schema); parsed once."""
    path = resources.files(_PACKAGE) / _SCHEMA_DIR / f"{BUILTIN_VERSION}-local" / "_definitions.json"
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    defs: dict[str, Mapping[str, Any]] = document["$defs"]
    return defs


def definition(name: str) -> Mapping[str, Any]:
    """The schema of one definition; KeyError for a name v1.30 does not have."""
    return definitions()[name]


def ref_name(ref: str) -> str:
    """`#/$defs/io.k8s.api.core.v1.Pod` -> `io.k8s.api.core.v1.Pod`; ValueError for other refs."""
    if not ref.startswith(REF_PREFIX):
        raise ValueError(f"not a local definition reference: {ref!r}")
    return ref[len(REF_PREFIX):]


def resolve(ref: str) -> Mapping[str, Any]:
    """The schema a `$ref` (`#/$defs/...`) points at."""
    return definition(ref_name(ref))


@functools.cache
def _gvk_index() -> Mapping[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            index.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
        props = schema.get("properties", {})
        for api_version in props.get("apiVersion", {}).get("enum", ()):
            group, _, version = api_version.rpartition("/")
            for kind in props.get("kind", {}).get("enum", ()):
                index.setdefault((group, version, kind), name)
    return index


def definition_for_gvk(group: str, version: str, kind: str) -> str | None:
    """The definition name of a built-in kind, None for kinds v1.30 does not define (custom resources).

    `("apps", "v1", "Deployment")` -> `io.k8s.api.apps.v1.Deployment`; the core group is "".
    """
    return _gvk_index().get((group, version, kind))


def references(schema: Any) -> list[str]:
    """The definition names a schema refers to directly (not transitively), in document order."""
    found: list[str] = []
    _collect_refs(schema, found)
    return found


def _collect_refs(node: Any, found: list[str]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(ref_name(value))
            elif key == "properties" and isinstance(value, Mapping):
                for prop in value.values():  # property names such as "$ref" are not keywords
                    _collect_refs(prop, found)
            elif key != "enum":
                _collect_refs(value, found)
    elif isinstance(node, list):
        for item in node:
            _collect_refs(item, found)


def closure(names: list[str]) -> list[str]:
    """`names` and every definition they reach through `$ref`, each once, in discovery order."""
    seen: dict[str, None] = {}
    pending = list(reversed(names))
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen[name] = None
        pending.extend(reversed(references(definition(name))))
    return list(seen)
