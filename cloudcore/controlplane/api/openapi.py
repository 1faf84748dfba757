"""The OpenAPI documents kubectl reads: /openapi/v3, /openapi/v3/<api|apis/group>/<version>, /openapi/v2.

Built-in kinds take their schemas from `schemas` (the v1.30 definitions), converted from JSON
schema 2020 to what the two OpenAPI versions allow: nullable type lists become one type, refs point
at `#/components/schemas/` (v3, wrapped in `allOf` when they carry a description, as kube-apiserver
publishes them) or `#/definitions/` (v2). IntOrString (`format: int-or-string`,
`x-kubernetes-int-or-string`) and Quantity keep a `oneOf` of their types in v3 and are strings in
v2. Descriptions and `x-kubernetes-*` extensions stay. Custom resources publish their CRD
version's openAPIV3Schema with apiVersion, kind and an ObjectMeta `metadata` added, plus a
`<Kind>List` schema, named by reversed group (`com.example.stable.v1.CronTab`). Every top-level
kind carries `x-kubernetes-group-version-kind` (what `kubectl explain` looks kinds up by).

Each document also has the REST paths of its resources, with the query parameters kubectl checks
for: it sends `fieldValidation` only when the PATCH operation of the kind lists it.

Documents are large and asked for often: `OpenAPICache` builds each one once per set of kinds and
keeps its serialized bytes with their hash (the `?hash=` of the v3 index and the ETag).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from cloudcore.controlplane.api import schemas
from cloudcore.controlplane.api.resources import Registry

SERVER_VERSION: Final = "v1.30.7"

_META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1."
_OBJECT_META: Final = _META + "ObjectMeta"
_LIST_META: Final = _META + "ListMeta"
_STATUS: Final = _META + "Status"
_DELETE_OPTIONS: Final = _META + "DeleteOptions"
_PATCH: Final = _META + "Patch"
_V3_REFS: Final = "#/components/schemas/"
_V2_REFS: Final = "#/definitions/"
_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf")
_TYPE_META_DOC: Final = "io.k8s.api.core.v1.Pod"  # whose apiVersion/kind/metadata descriptions CRDs reuse


@dataclass(frozen=True, slots=True)
class KindInfo:
    """One kind a group-version serves.

    `definition` names a built-in schema (`io.k8s.api.core.v1.Pod`); custom resources leave it None
    and give their CRD version's `crd_schema` (openAPIV3Schema). `resource` is the plural the REST
    paths use; "" for kinds without paths of their own (List kinds, Status, Scale).
    """

    group: str
    version: str
    kind: str
    definition: str | None
    crd_schema: Mapping[str, Any] | None = field(default=None, hash=False)
    namespaced: bool = True
    resource: str = ""

    @property
    def schema_name(self) -> str:
        """The name of the kind's schema in the documents."""
        if self.definition:
            return self.definition
        return f"{_reverse_domain(self.group)}.{self.version}.{self.kind}"

    @property
    def list_schema_name(self) -> str | None:
        if self.definition is None:
            return self.schema_name + "List"
        return schemas.definition_for_gvk(self.group, self.version, self.kind + "List")

    def fingerprint(self) -> bytes:
        """Everything the documents depend on, as bytes (CRD schemas included)."""
        return orjson.dumps([self.group, self.version, self.kind, self.definition, self.crd_schema,
                             self.namespaced, self.resource], option=orjson.OPT_SORT_KEYS)


def _reverse_domain(group: str) -> str:
    return ".".join(reversed(group.split(".")))


def group_version_path(group: str, version: str) -> str:
    """`api/v1` for the core group, `apis/<group>/<version>` otherwise (the key in the v3 index)."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


# -- schema conversion ------------------------------------------------------------------------------

class _Converter:
    """JSON-schema-2020 (or a CRD's OpenAPI v3 schema) to OpenAPI v3 or Swagger 2.0 schema objects."""

    def __init__(self, v3: bool) -> None:
        self.v3 = v3
        self.prefix = _V3_REFS if v3 else _V2_REFS

    def ref(self, name: str, **siblings: Any) -> dict[str, Any]:
        if not siblings:
            return {"$ref": self.prefix + name}
        if self.v3:  # OpenAPI 3.0 ignores the siblings of a $ref
            return {"allOf": [{"$ref": self.prefix + name}], **siblings}
        return {"$ref": self.prefix + name, **siblings}

    def node(self, schema: Any) -> Any:
        if not isinstance(schema, Mapping):
            return schema
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "$ref":
                continue
            if key == "type":
                if isinstance(_one_type(value), str):  # a union of types has no OpenAPI form: no type
                    out["type"] = _one_type(value)
            elif key == "properties":
                out[key] = {name: self.node(sub) for name, sub in value.items()}
            elif key in ("items", "additionalProperties", "not"):
                out[key] = self.node(value)
            elif key in _SCHEMA_LISTS:
                out[key] = [self.node(sub) for sub in value]
            else:
                out[key] = value
        if "$ref" in schema:
            return self.ref(schemas.ref_name(schema["$ref"]), **out)
        _plain_type_union(out, self.v3)
        if not self.v3:
            for keyword in ("nullable", "anyOf", "oneOf", "not"):  # not in Swagger 2.0 schemas
                out.pop(keyword, None)
        return out


def _one_type(value: Any) -> Any:
    if isinstance(value, list):
        types = [t for t in value if t != "null"]
        return types[0] if len(types) == 1 else types
    return value


def _plain_type_union(out: dict[str, Any], v3: bool) -> None:
    """`oneOf` string-or-integer (IntOrString) and string-or-number (Quantity) as kube-apiserver has them.

    OpenAPI v3 keeps the `oneOf` and no `type` (so `kubectl explain` names the type after the
    schema: `<IntOrString>`, `<map[string]Quantity>`); Swagger 2.0 has `type: string`.
    """
    subs = out.get("oneOf")
    if not isinstance(subs, list) or not all(isinstance(s, Mapping) and set(s) == {"type"} for s in subs):
        return
    types = [s["type"] for s in subs]
    if set(types) not in ({"string", "integer"}, {"string", "number"}):
        return
    int_or_string = "integer" in types
    if int_or_string:
        out.update({"format": "int-or-string", "x-kubernetes-int-or-string": True})
    if v3:
        order = ("integer", "string") if int_or_string else ("string", "number")
        out["oneOf"] = [{"type": t} for t in order]
    else:
        del out["oneOf"]
        out["type"] = "string"


_PLAIN_UNION_DOCS: Final = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "An int32 or a string: a port number or name, a count "
                                                       "or a percentage.",
    "io.k8s.apimachinery.pkg.api.resource.Quantity": "A fixed-point number with an optional suffix: binary "
                                                     "(Ki, Mi, Gi, ...), decimal (m, k, M, G, ...) or an "
                                                     "exponent (e3).",
}


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


def _with_gvk(schema: dict[str, Any], gvk: dict[str, str]) -> None:
    listed = list(schema.get("x-kubernetes-group-version-kind") or [])
    if gvk not in listed:
        listed.append(gvk)
    schema["x-kubernetes-group-version-kind"] = listed


def _builtin_schema(name: str, conv: _Converter) -> dict[str, Any]:
    out: dict[str, Any] = conv.node(schemas.definition(name))
    if name in _PLAIN_UNION_DOCS:
        out.setdefault("description", _PLAIN_UNION_DOCS[name])
    if "x-kubernetes-group-version-kind" in out:
        for prop in ("apiVersion", "kind"):  # the enums are the validator's, kube-apiserver has none
            if isinstance(out.get("properties", {}).get(prop), dict):
                out["properties"][prop].pop("enum", None)
    return out


def _type_meta_doc(prop: str) -> str:
    description: str = schemas.definition(_TYPE_META_DOC)["properties"][prop]["description"]
    return description


def _custom_schemas(kind: KindInfo, conv: _Converter) -> dict[str, dict[str, Any]]:
    """The kind's schema from its CRD, and its List schema."""
    root: dict[str, Any] = conv.node(kind.crd_schema or {"type": "object"})
    root["type"] = "object"
    props = root.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "description": _type_meta_doc("apiVersion")}
    props["kind"] = {"type": "string", "description": _type_meta_doc("kind")}
    props["metadata"] = conv.ref(_OBJECT_META, description=_type_meta_doc("metadata"))
    _with_gvk(root, _gvk(kind.group, kind.version, kind.kind))
    list_name = kind.schema_name + "List"
    listed = {
        "description": f"{list_name.rpartition('.')[2]} is a list of {kind.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _type_meta_doc("apiVersion")},
            "items": {"type": "array", "description": f"List of {kind.kind} objects.",
                      "items": conv.ref(kind.schema_name)},
            "kind": {"type": "string", "description": _type_meta_doc("kind")},
            "metadata": conv.ref(_LIST_META, description="Standard list metadata."),
        },
        "x-kubernetes-group-version-kind": [_gvk(kind.group, kind.version, kind.kind + "List")],
    }
    return {kind.schema_name: root, list_name: listed}


def _component_schemas(kinds: Sequence[KindInfo], conv: _Converter) -> dict[str, Any]:
    """Every schema the kinds reach, built-in ones by `$ref` closure; sorted by name."""
    out: dict[str, Any] = {}
    builtin_roots = [_STATUS, _DELETE_OPTIONS]
    gvks: dict[str, list[dict[str, str]]] = {}
    for kind in kinds:
        if kind.definition is None:
            out.update(_custom_schemas(kind, conv))
            builtin_roots += [_OBJECT_META, _LIST_META]
            continue
        builtin_roots.append(kind.definition)
        gvks.setdefault(kind.definition, []).append(_gvk(kind.group, kind.version, kind.kind))
        list_name = kind.list_schema_name
        if kind.resource and list_name:
            builtin_roots.append(list_name)
    for name in schemas.closure(builtin_roots):
        out[name] = _builtin_schema(name, conv)
        for gvk in gvks.get(name, ()):
            _with_gvk(out[name], gvk)
    return dict(sorted(out.items()))


# -- paths ------------------------------------------------------------------------------------------

_RESPONSE_TYPES: Final = ("application/json", "application/yaml")
_PATCH_TYPES: Final = ("application/json-patch+json", "application/merge-patch+json",
                       "application/strategic-merge-patch+json", "application/apply-patch+yaml")
_WRITE_PARAMS: Final = (
    ("dryRun", "string", "When present, modifications are not persisted: All (every dry run stage)."),
    ("fieldManager", "string", "The name of the actor making the change, for field ownership."),
    ("fieldValidation", "string", "What to do with unknown or duplicate fields in the object: Ignore, Warn "
                                  "(the default) or Strict."),
)
_FORCE_PARAM: Final = ("force", "boolean", "Apply requests only: take the fields other managers own.")
_LIST_PARAMS: Final = (
    ("allowWatchBookmarks", "boolean", "Ask for BOOKMARK watch events."),
    ("continue", "string", "The continue token of the previous page of a list."),
    ("fieldSelector", "string", "Only objects whose fields match (metadata.name=x, ...)."),
    ("labelSelector", "string", "Only objects whose labels match."),
    ("limit", "integer", "At most this many objects per page."),
    ("resourceVersion", "string", "The resource version to list or watch from."),
    ("resourceVersionMatch", "string", "How resourceVersion applies: Exact or NotOlderThan."),
    ("sendInitialEvents", "boolean", "Start a watch with the current objects as ADDED events."),
    ("timeoutSeconds", "integer", "End the call after this many seconds."),
    ("watch", "boolean", "Watch for changes instead of listing."),
)
_DELETE_PARAMS: Final = (
    ("dryRun", "string", "When present, modifications are not persisted: All (every dry run stage)."),
    ("gracePeriodSeconds", "integer", "Seconds before the object is deleted; 0 deletes at once."),
    ("propagationPolicy", "string", "Garbage collection of dependents: Orphan, Background or Foreground."),
)


def _camel(group: str, version: str) -> str:
    if not group:
        return "CoreV" + version[1:]
    parts = group.removesuffix(".k8s.io").split(".")
    return "".join(p[:1].upper() + p[1:] for p in parts) + version[:1].upper() + version[1:]


class _Paths:
    """The REST paths of one kind's resource in OpenAPI v3 or Swagger 2.0 form."""

    def __init__(self, kind: KindInfo, conv: _Converter) -> None:
        self.kind = kind
        self.conv = conv
        self.gvk = _gvk(kind.group, kind.version, kind.kind)
        self.ids = _camel(kind.group, kind.version) + ("Namespaced" if kind.namespaced else "") + kind.kind
        self.all_ids = _camel(kind.group, kind.version) + kind.kind + "ForAllNamespaces"
        self.tag = f"{kind.group.removesuffix('.k8s.io').replace('.', '_') or 'core'}_{kind.version}"

    def param(self, name: str, kind: str, description: str, where: str = "query") -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "in": where, "description": description}
        if where == "path":
            out["required"] = True
        if self.conv.v3:
            out["schema"] = {"type": kind, "uniqueItems": True}
        else:
            out.update(type=kind, uniqueItems=True)
        return out

    def op(self, action: str, op_id: str, doc: str, schema: str, code: str = "200",
           params: Iterable[tuple[str, str, str]] = (), body: str | None = None,
           content_types: Sequence[str] = _RESPONSE_TYPES) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tags": [self.tag], "description": doc, "operationId": op_id,
            "parameters": [self.param(*p) for p in params],
            "x-kubernetes-action": action, "x-kubernetes-group-version-kind": self.gvk,
        }
        ok: dict[str, Any] = {"description": "OK" if code == "200" else "Created"}
        if self.conv.v3:
            ok["content"] = {t: {"schema": self.conv.ref(schema)} for t in _RESPONSE_TYPES}
            if body:
                out["requestBody"] = {"content": {t: {"schema": self.conv.ref(body)} for t in content_types},
                                      "required": action != "delete"}
        else:
            ok["schema"] = self.conv.ref(schema)
            out["produces"] = list(_RESPONSE_TYPES)
            out["consumes"] = list(content_types)
            if body:
                out["parameters"].append({"name": "body", "in": "body", "required": action != "delete",
                                          "schema": self.conv.ref(body)})
        out["responses"] = {code: ok, "401": {"description": "Unauthorized"}}
        return out

    def build(self) -> dict[str, Any]:
        kind, name = self.kind, self.kind.schema_name
        list_name = kind.list_schema_name or name
        prefix = f"/{group_version_path(kind.group, kind.version)}"
        scope = f"{prefix}/namespaces/{{namespace}}/{kind.resource}" if kind.namespaced else \
            f"{prefix}/{kind.resource}"
        scope_params = [self.param("namespace", "string", "object name and auth scope, such as for teams and "
                                   "projects", "path")] if kind.namespaced else []
        # custom resources have no patch strategies to merge by
        patch_types = tuple(t for t in _PATCH_TYPES if kind.definition or "strategic" not in t)
        paths: dict[str, Any] = {
            scope: {
                "parameters": scope_params,
                "get": self.op("list", f"list{self.ids}", f"list or watch objects of kind {kind.kind}",
                               list_name, params=_LIST_PARAMS),
                "post": self.op("post", f"create{self.ids}", f"create a {kind.kind}", name, "201",
                                _WRITE_PARAMS, name),
                "delete": self.op("deletecollection", f"deleteCollection{self.ids}",
                                  f"delete collection of {kind.kind}", _STATUS,
                                  params=_DELETE_PARAMS + _LIST_PARAMS, body=_DELETE_OPTIONS),
            },
            f"{scope}/{{name}}": {
                "parameters": [self.param("name", "string", f"name of the {kind.kind}", "path"),
                               *scope_params],
                "get": self.op("get", f"read{self.ids}", f"read the specified {kind.kind}", name),
                "put": self.op("put", f"replace{self.ids}", f"replace the specified {kind.kind}", name, "200",
                               _WRITE_PARAMS, name),
                "patch": self.op("patch", f"patch{self.ids}", f"partially update the specified {kind.kind}",
                                 name, "200", (*_WRITE_PARAMS, _FORCE_PARAM), _PATCH, patch_types),
                "delete": self.op("delete", f"delete{self.ids}", f"delete a {kind.kind}", _STATUS, "200",
                                  _DELETE_PARAMS, _DELETE_OPTIONS),
            },
        }
        if kind.namespaced:
            paths[f"{prefix}/{kind.resource}"] = {
                "get": self.op("list", f"list{self.all_ids}", f"list or watch objects of kind {kind.kind}",
                               list_name, params=_LIST_PARAMS)}
        return paths


def _paths(kinds: Sequence[KindInfo], conv: _Converter) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in kinds:
        if kind.resource and (kind.definition or kind.crd_schema is not None):
            paths.update(_Paths(kind, conv).build())
    return dict(sorted(paths.items()))


_PATCH_SCHEMA: Final = {"description": "A patch: a JSON patch, a merge patch, a strategic merge patch or an "
                                       "apply configuration, by the request's content type.",
                        "type": "object"}


_BEARER: Final = {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization",
                  "in": "header"}


# -- documents --------------------------------------------------------------------------------------

def openapi_v3_document(group: str, version: str, kinds: Sequence[KindInfo]) -> dict[str, Any]:
    """The OpenAPI 3.0 document of one group-version (GET /openapi/v3/api/v1, /openapi/v3/apis/<g>/<v>)."""
    conv = _Converter(v3=True)
    served = [k for k in kinds if (k.group, k.version) == (group, version)]
    components = _component_schemas(served, conv)
    paths = _paths(served, conv)
    if paths:
        components[_PATCH] = dict(_PATCH_SCHEMA)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"BearerToken": dict(_BEARER)},
        },
        "security": [{"BearerToken": []}],
    }


def openapi_v2_document(kinds: Sequence[KindInfo]) -> dict[str, Any]:
    """The Swagger 2.0 document of every group-version (GET /openapi/v2)."""
    conv = _Converter(v3=False)
    definitions = _component_schemas(kinds, conv)
    paths = _paths(kinds, conv)
    if paths:
        definitions[_PATCH] = dict(_PATCH_SCHEMA)
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION},
        "paths": paths,
        "definitions": dict(sorted(definitions.items())),
        "securityDefinitions": {"BearerToken": dict(_BEARER)},
        "security": [{"BearerToken": []}],
    }


def openapi_v3_index(hashes: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """The body of GET /openapi/v3 from each (group, version)'s document hash."""
    return {"paths": {
        group_version_path(group, version): {
            "serverRelativeURL": f"/openapi/v3/{group_version_path(group, version)}?hash={digest}"}
        for (group, version), digest in sorted(hashes.items())
    }}


class Document(NamedTuple):
    """A serialized document and its ETag (the quoted upper-case hex SHA-512 of the bytes)."""

    body: bytes
    etag: str

    @property
    def hash(self) -> str:
        """What the v3 index puts in `?hash=`."""
        return self.etag.strip('"')

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> Document:
        body = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        return cls(body, f'"{hashlib.sha512(body).hexdigest().upper()}"')


KindSource = Callable[[], Iterable[KindInfo]]


def kinds_from_registry(registry: Registry) -> list[KindInfo]:
    """The KindInfos of every resource a Registry serves (built-in kinds v1.30 lacks are left out)."""
    kinds = []
    for info in registry.all():
        if info.is_custom:
            kinds.append(KindInfo(info.group, info.version, info.kind, None, info.crd_schema or {},
                                  info.namespaced, info.plural))
        elif definition := schemas.definition_for_gvk(info.group, info.version, info.kind):
            kinds.append(KindInfo(info.group, info.version, info.kind, definition, None, info.namespaced,
                                  info.plural))
    return kinds


class OpenAPICache:
    """The serialized documents of what a Registry (or a KindInfo source) serves, built on first request.

    `invalidate()` (CRDs changed) drops the v3 index and the v2 document, as does a new
    `Registry.generation`; a group-version's v3 document is rebuilt only when its kinds changed.
    Thread-safe.
    """

    def __init__(self, source: Registry | KindSource) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._generation = -1
        self._by_gv: dict[tuple[str, str], tuple[list[KindInfo], bytes]] | None = None
        self._v3: dict[tuple[str, str], tuple[bytes, Document]] = {}
        self._index: Document | None = None
        self._v2: Document | None = None

    def invalidate(self) -> None:
        with self._lock:
            self._invalidate_locked()

    def _invalidate_locked(self) -> None:
        self._by_gv = None
        self._index = None
        self._v2 = None

    def _group_versions(self) -> dict[tuple[str, str], tuple[list[KindInfo], bytes]]:
        """The kinds of each group-version with their fingerprint."""
        if isinstance(self._source, Registry) and self._source.generation != self._generation:
            self._generation = self._source.generation
            self._invalidate_locked()
        if self._by_gv is None:
            source = self._source
            found = kinds_from_registry(source) if isinstance(source, Registry) else source()
            by_gv: dict[tuple[str, str], list[KindInfo]] = {}
            for kind in found:
                by_gv.setdefault((kind.group, kind.version), []).append(kind)
            self._by_gv = {gv: (kinds, b"\n".join(k.fingerprint() for k in kinds))
                           for gv, kinds in by_gv.items()}
        return self._by_gv

    def _v3_locked(self, group: str, version: str) -> Document | None:
        entry = self._group_versions().get((group, version))
        if entry is None:
            return None
        kinds, fingerprint = entry
        cached = self._v3.get((group, version))
        if cached is None or cached[0] != fingerprint:
            cached = (fingerprint, Document.of(openapi_v3_document(group, version, kinds)))
            self._v3[(group, version)] = cached
        return cached[1]

    def v3_document(self, path: str) -> Document | None:
        """The document at /openapi/v3/<path> (`api/v1`, `apis/apps/v1`); None when not served."""
        parts = path.split("/")
        if len(parts) == 2 and parts[0] == "api":
            group, version = "", parts[1]
        elif len(parts) == 3 and parts[0] == "apis" and parts[1]:
            group, version = parts[1], parts[2]
        else:
            return None
        with self._lock:
            return self._v3_locked(group, version)

    def v3_index(self) -> Document:
        with self._lock:
            gvs = self._group_versions()
            if self._index is None:
                for gone in set(self._v3) - set(gvs):
                    del self._v3[gone]
                hashes = {}
                for group, version in gvs:
                    document = self._v3_locked(group, version)
                    assert document is not None
                    hashes[(group, version)] = document.hash
                self._index = Document.of(openapi_v3_index(hashes))
            return self._index

    def v2(self) -> Document:
        with self._lock:
            gvs = self._group_versions()
            if self._v2 is None:
                self._v2 = Document.of(openapi_v2_document([k for kinds, _ in gvs.values() for k in kinds]))
            return self._v2
