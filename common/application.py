"""Upstream's "Application" (pkg/metaserver/application.go): how an edge MetaServer asks CloudCore's
dynamiccontroller to act for it. The wire shape both sides share; pure, no I/O.

An Application is the content of a message from source `metaserver` to group `dynamiccontroller`
(resource and operation `null`). It names the request by `Key`
(`/<group|core>/<version>/<resource>[/<namespace|null>[/<name>]]`, upstream's KeyFuncReq), `Verb`,
`Nodename` and `Subresource`, and carries `Option` (the request options) and `ReqBody` (the object, or
for a patch upstream's PatchInfo) as JSON bytes, which Go marshals as base64. The answer is the same
Application with `Status` Approved and `RespBody` (the result, base64 JSON), Rejected and
`Error.ErrStatus` (the API's Status), or Failed and `Reason`.

The verb `discover` is ours (upstream's MetaServer has no discovery through the cloud): its answer's
`RespBody` is the cloud's API discovery as one `DiscoveryBundle` (see `cloudcore/dynamiccontroller/
discovery.py`); its Key is `/` and says nothing.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson

CORE_GROUP: Final = "core"  # the legacy group's name in a Key
NULL: Final = "null"  # a cluster-scoped object's namespace in a Key
SOURCE: Final = "metaserver"  # messages carrying Applications come from this edge module
DISCOVERY_KEY: Final = "/"
DISCOVERY_BUNDLE: Final = "DiscoveryBundle"  # the kind of a `discover` answer's body


class Verb:
    GET: Final = "get"
    LIST: Final = "list"
    WATCH: Final = "watch"
    CREATE: Final = "create"
    UPDATE: Final = "update"
    UPDATESTATUS: Final = "updatestatus"
    PATCH: Final = "patch"
    DELETE: Final = "delete"
    DISCOVER: Final = "discover"  # ours: the cloud's API discovery


class Status:
    IN_APPLYING: Final = "InApplying"
    APPROVED: Final = "Approved"
    REJECTED: Final = "Rejected"
    FAILED: Final = "Failed"


class ApplicationError(ValueError):
    """The Application cannot be carried out as asked (malformed, or not the node's to ask)."""


@dataclass(frozen=True, slots=True)
class Key:
    """A request's resource: a collection (no name), in one namespace or all, or one object."""

    group: str  # "" for the core group
    version: str
    plural: str
    namespace: str = ""  # "" for cluster-scoped objects and for every namespace
    name: str = ""

    def __str__(self) -> str:
        key = f"/{self.group or CORE_GROUP}/{self.version}/{self.plural}"
        if self.namespace:
            key += f"/{self.namespace}"
        if self.name:
            key += f"/{self.name}" if self.namespace else f"/{NULL}/{self.name}"
        return key

    @classmethod
    def parse(cls, text: str) -> Key:
        parts = text.strip("/").split("/")
        if len(parts) < 3 or len(parts) > 5 or not all(parts):
            raise ApplicationError(f"key {text!r} is not /<group>/<version>/<resource>[/<namespace>[/<name>]]")
        group, version, plural, *rest = parts
        namespace = rest[0] if rest and rest[0] != NULL else ""
        return cls("" if group == CORE_GROUP else group, version, plural, namespace, rest[1] if len(rest) == 2 else "")

    def collection(self) -> Key:
        return replace(self, name="")

    def everywhere(self) -> Key:
        """The collection across every namespace."""
        return replace(self, namespace="", name="")


def encode_bytes(value: Any) -> str:
    """JSON as a Go []byte field: base64."""
    return base64.b64encode(orjson.dumps(value)).decode()


def decode_bytes(value: Any) -> Any:
    """A Go []byte field (base64 of JSON) as JSON; None when absent or empty."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return orjson.loads(base64.b64decode(value, validate=True))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ApplicationError(f"field is not base64 JSON: {exc}") from None


def request(verb: str, key: str, node: str, *, option: Any = None, body: Any = None,
            subresource: str = "") -> dict[str, Any]:
    """The Application an edge sends (upstream's NewApplication; its ID is a digest of the request)."""
    option_bytes = orjson.dumps(option if option is not None else {})
    body_bytes = b"" if body is None else orjson.dumps(body)
    digest = hashlib.sha256(node.encode() + key.encode() + verb.encode() + option_bytes + body_bytes
                            + subresource.encode()).hexdigest()
    return {
        "ID": digest, "Key": key, "Verb": verb, "Nodename": node,
        "Option": base64.b64encode(option_bytes).decode(),
        "ReqBody": base64.b64encode(body_bytes).decode() if body_bytes else None,
        "Subresource": subresource, "RespBody": None, "Status": Status.IN_APPLYING, "Reason": "",
        "Error": {"ErrStatus": {"metadata": {}}},
    }


def approved(app: dict[str, Any], obj: Any) -> dict[str, Any]:
    return {**app, "Status": Status.APPROVED, "RespBody": encode_bytes(obj), "Reason": ""}


def rejected(app: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    reason = str(status.get("message") or "")
    return {**app, "Status": Status.REJECTED, "Error": {"ErrStatus": status}, "Reason": reason}


def failed(app: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**app, "Status": Status.FAILED, "Reason": reason}


@dataclass(frozen=True, slots=True)
class Answer:
    """The cloud's answer to an Application, as the edge reads it."""

    status: str
    body: Any = None  # the decoded RespBody (Approved); None when absent or not JSON
    error: dict[str, Any] = field(default_factory=dict)  # the Kubernetes Status (Rejected)
    reason: str = ""

    @property
    def approved(self) -> bool:
        return self.status == Status.APPROVED

    @property
    def rejected(self) -> bool:
        return self.status == Status.REJECTED

    @property
    def code(self) -> int:
        """The HTTP code of a rejection (500 when the Status carries none)."""
        code = self.error.get("code")
        return code if isinstance(code, int) else 500


def read_answer(content: Any) -> Answer | None:
    """An answer from a message's content (a JSON string on some paths); None when it is no Application."""
    if isinstance(content, str | bytes):
        try:
            content = orjson.loads(content)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(content, dict) or not isinstance(content.get("Status"), str):
        return None
    try:
        body = decode_bytes(content.get("RespBody"))
    except ApplicationError:
        body = None
    error = (content.get("Error") or {}).get("ErrStatus") if isinstance(content.get("Error"), dict) else None
    return Answer(content["Status"], body, error if isinstance(error, dict) else {}, str(content.get("Reason") or ""))
