"""Upstream's "Application": how an edge MetaServer asks the cloud to act for it (pure: parse and answer).

An Application (content of a message from source `metaserver`) names the request by `Key`
(`/<group|core>/<version>/<resource>[/<namespace|null>[/<name>]]`), `Verb` (get, list, watch, create,
update, updatestatus, patch, delete), `Subresource`, and carries `Option` (the request options) and `ReqBody`
(the object, or for a patch upstream's PatchInfo `{"Name","PatchType","Data","Options","Subresources"}`)
as JSON bytes, which Go marshals as base64. The answer is the same Application with `Status` Approved and
`RespBody` (the resulting object, base64 JSON), Rejected and `Error.ErrStatus` (the API's Status), or
Failed and `Reason`.

Node restriction: a node writes its own Node and its own Lease only, like the kubelet under the
NodeRestriction admission plugin, and reads no Secrets this way (the edgecontroller sends those its pods
use); other objects are read and written as upstream does (with cloudcore's access).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

import orjson

from common.constants import NODE_LEASE_NAMESPACE

_CORE: Final = "core"
_NULL: Final = "null"
_JSON: Final = "application/json"
_METHODS: Final = {"create": "POST", "update": "PUT", "updatestatus": "PUT", "patch": "PATCH", "delete": "DELETE",
                   "get": "GET", "list": "GET"}
_LIST_OPTIONS: Final = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion")
# A node reads its Secrets through the edgecontroller, which sends only those its pods use.
_UNREADABLE: Final = frozenset({"secrets"})
_QUERY_OPTIONS: Final = ("dryRun", "fieldManager", "fieldValidation", "force", "gracePeriodSeconds",
                         "propagationPolicy")


class ApplicationError(ValueError):
    """The Application cannot be carried out as asked (malformed, or not this node's to write)."""


@dataclass(frozen=True, slots=True)
class ApiCall:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str = _JSON


def decode_bytes(value: Any) -> Any:
    """A Go []byte field (base64 of JSON) as JSON; None when absent or empty."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return orjson.loads(base64.b64decode(value, validate=True))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ApplicationError(f"field is not base64 JSON: {exc}") from None


def api_call(app: dict[str, Any], node: str) -> ApiCall:
    """The API request an Application asks for, after the node restriction; ApplicationError otherwise."""
    verb = str(app.get("Verb") or "")
    method = _METHODS.get(verb)
    if method is None:
        raise ApplicationError(f"verb {verb!r} is not a write this cloud carries out")
    group, version, plural, namespace, name = _parse_key(str(app.get("Key") or ""))
    _restrict(node, plural, namespace, name, verb)
    if verb in ("get", "list"):
        options = decode_bytes(app.get("Option")) or {}
        query = {k: _query_value(options[k]) for k in _LIST_OPTIONS if verb == "list" and options.get(k)}
        return ApiCall("GET", _path(group, version, plural, namespace, name if verb == "get" else ""), query, None)
    subresource = "status" if verb == "updatestatus" else str(app.get("Subresource") or "")
    options = decode_bytes(app.get("Option")) or {}
    body = decode_bytes(app.get("ReqBody"))
    content_type = _JSON
    if verb == "patch":
        if not isinstance(body, dict):
            raise ApplicationError("a patch needs its PatchInfo")
        content_type = str(body.get("PatchType") or "application/merge-patch+json")
        data = base64.b64decode(str(body.get("Data") or ""))
        body = orjson.loads(data) if "json" in content_type else data.decode()
    elif verb == "create":
        name = ""
    path = "/".join(filter(None, (_path(group, version, plural, namespace, name), subresource)))
    query = {key: _query_value(options[key]) for key in _QUERY_OPTIONS if key in options and verb != "delete"}
    if verb == "delete":
        body = {"kind": "DeleteOptions", "apiVersion": "v1", **options}
    return ApiCall(method, path, query, body, content_type)


def watch_target(app: dict[str, Any], node: str) -> tuple[tuple[str, str, str], str]:
    """(group, version, plural) and namespace ("" = all) a `watch` Application subscribes to."""
    group, version, plural, namespace, _ = _parse_key(str(app.get("Key") or ""))
    _restrict(node, plural, namespace, "", "watch")
    return ("" if group == _CORE else group, version, plural), namespace


def _path(group: str, version: str, plural: str, namespace: str, name: str) -> str:
    base = f"/api/{version}" if group == _CORE else f"/apis/{group}/{version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return "/".join(filter(None, (f"{base}{scope}/{plural}", name)))


def _parse_key(key: str) -> tuple[str, str, str, str, str]:
    parts = key.strip("/").split("/")
    if len(parts) < 3 or len(parts) > 5 or not all(parts):
        raise ApplicationError(f"key {key!r} is not /<group>/<version>/<resource>[/<namespace>[/<name>]]")
    group, version, plural, *rest = parts
    namespace = rest[0] if rest and rest[0] != _NULL else ""
    name = rest[1] if len(rest) == 2 else ""
    return group, version, plural, namespace, name


def _restrict(node: str, plural: str, namespace: str, name: str, verb: str) -> None:
    if plural in _UNREADABLE:
        raise ApplicationError(f"node {node} gets the {plural} its pods use from the edgecontroller, not by {verb}")
    if plural == "nodes" and (name != node or verb in ("create", "delete")):
        raise ApplicationError(f"node {node} may only update its own Node, not {verb} node {name or '(new)'}")
    if plural == "leases" and namespace == NODE_LEASE_NAMESPACE and name != node:
        raise ApplicationError(f"node {node} may only write its own Lease, not {name or '(new)'}")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def approved(app: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    return {**app, "Status": "Approved", "RespBody": base64.b64encode(orjson.dumps(obj)).decode(), "Reason": ""}


def rejected(app: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {**app, "Status": "Rejected", "Error": {"ErrStatus": status}, "Reason": str(status.get("message") or "")}


def failed(app: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**app, "Status": "Failed", "Reason": reason}
