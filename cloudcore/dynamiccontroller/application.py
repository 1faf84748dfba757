"""What an edge MetaServer's Application asks of the API (pure: which request, and what a node may not ask).

The Application's wire shape (Key, Verb, Go []byte fields, the answer states) is `common/application.py`,
shared with the edge. Here: the API request each verb becomes (get, list, create, update, updatestatus,
patch, delete; `watch` and our `discover` are served by subscriptions.py and discovery.py).

Node restriction: a node writes its own Node and its own Lease only, like the kubelet under the
NodeRestriction admission plugin, and reads no Secrets this way (the edgecontroller sends those its pods
use); other objects are read and written as upstream does (with cloudcore's access).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

import orjson

from common.application import ApplicationError as ApplicationError
from common.application import Key, Verb
from common.application import approved as approved
from common.application import decode_bytes as decode_bytes
from common.application import failed as failed
from common.application import rejected as rejected
from common.constants import NODE_LEASE_NAMESPACE

_JSON: Final = "application/json"
_METHODS: Final = {Verb.CREATE: "POST", Verb.UPDATE: "PUT", Verb.UPDATESTATUS: "PUT", Verb.PATCH: "PATCH",
                   Verb.DELETE: "DELETE", Verb.GET: "GET", Verb.LIST: "GET"}
_LIST_OPTIONS: Final = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion")
# A node reads its Secrets through the edgecontroller, which sends only those its pods use.
_UNREADABLE: Final = frozenset({"secrets"})
_QUERY_OPTIONS: Final = ("dryRun", "fieldManager", "fieldValidation", "force", "gracePeriodSeconds",
                         "propagationPolicy")


@dataclass(frozen=True, slots=True)
class ApiCall:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str = _JSON


def api_call(app: dict[str, Any], node: str) -> ApiCall:
    """The API request an Application asks for, after the node restriction; ApplicationError otherwise."""
    verb = str(app.get("Verb") or "")
    method = _METHODS.get(verb)
    if method is None:
        raise ApplicationError(f"verb {verb!r} is not a write this cloud carries out")
    key = Key.parse(str(app.get("Key") or ""))
    _restrict(node, key, verb)
    if verb in (Verb.GET, Verb.LIST):
        options = decode_bytes(app.get("Option")) or {}
        query = {k: _query_value(options[k]) for k in _LIST_OPTIONS if verb == Verb.LIST and options.get(k)}
        return ApiCall("GET", _path(key if verb == Verb.GET else key.collection()), query, None)
    subresource = "status" if verb == Verb.UPDATESTATUS else str(app.get("Subresource") or "")
    options = decode_bytes(app.get("Option")) or {}
    body = decode_bytes(app.get("ReqBody"))
    content_type = _JSON
    if verb == Verb.PATCH:
        if not isinstance(body, dict):
            raise ApplicationError("a patch needs its PatchInfo")
        content_type = str(body.get("PatchType") or "application/merge-patch+json")
        data = base64.b64decode(str(body.get("Data") or ""))
        body = orjson.loads(data) if "json" in content_type else data.decode()
    elif verb == Verb.CREATE:
        key = key.collection()
    path = "/".join(filter(None, (_path(key), subresource)))
    query = {name: _query_value(options[name]) for name in _QUERY_OPTIONS if name in options and verb != Verb.DELETE}
    if verb == Verb.DELETE:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", **options}
    return ApiCall(method, path, query, body, content_type)


def watch_target(app: dict[str, Any], node: str) -> Key:
    """The collection (in one namespace, or all when it has none) a `watch` Application subscribes to."""
    key = Key.parse(str(app.get("Key") or "")).collection()
    _restrict(node, key, Verb.WATCH)
    return key


def _path(key: Key) -> str:
    base = f"/apis/{key.group}/{key.version}" if key.group else f"/api/{key.version}"
    scope = f"/namespaces/{key.namespace}" if key.namespace else ""
    return "/".join(filter(None, (f"{base}{scope}/{key.plural}", key.name)))


def _restrict(node: str, key: Key, verb: str) -> None:
    plural, namespace, name = key.plural, key.namespace, key.name
    if plural in _UNREADABLE:
        raise ApplicationError(f"node {node} gets the {plural} its pods use from the edgecontroller, not by {verb}")
    if plural == "nodes" and (name != node or verb in (Verb.CREATE, Verb.DELETE)):
        raise ApplicationError(f"node {node} may only update its own Node, not {verb} node {name or '(new)'}")
    if plural == "leases" and namespace == NODE_LEASE_NAMESPACE and name != node:
        raise ApplicationError(f"node {node} may only write its own Lease, not {name or '(new)'}")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
