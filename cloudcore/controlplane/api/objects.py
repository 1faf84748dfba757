"""Object semantics of the Kubernetes API: what create, update, patch and delete do to an object.

This is kube-apiserver's generic registry in one place: metadata the server owns (uid,
creationTimestamp, generation, resourceVersion via the store, deletionTimestamp), generateName,
namespace checks, status vs main-resource updates, defaulting and validation, optimistic
concurrency with retries for patches, graceful deletion, finalizers and propagation policies. The
HTTP handlers and the in-process controllers both call it, so both see the same semantics.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import orjson
import yaml

from cloudcore.controlplane.api import defaults, errors, patch, schemas, validation
from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.resources import Registry, ResourceInfo
from cloudcore.controlplane.api.selectors import FieldSelector, LabelSelector
from cloudcore.controlplane.store.store import Store
from cloudcore.controlplane.store.types import (
    AlreadyExistsError,
    ConflictError,
    Key,
    NotFoundError,
    StoredObject,
)

FieldValidation = Literal["Strict", "Warn", "Ignore"]
PatchType = Literal["json", "merge", "strategic", "apply"]

PATCH_CONTENT_TYPES: Final[dict[str, PatchType]] = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply",
}
_PATCH_RETRIES: Final = 8
_GENERATE_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
_SERVICE_CIDR: Final = ipaddress.ip_network("10.96.0.0/12")
_SERVER_OWNED_META: Final = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                             "generation", "managedFields")
_CREATE_ON_UPDATE: Final = frozenset({"endpoints", "leases.coordination.k8s.io"})
_SYSTEM_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")


def now_rfc3339(clock: datetime | None = None) -> str:
    return (clock or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class WriteOptions:
    dry_run: bool = False
    field_manager: str = ""
    field_validation: FieldValidation = "Strict"


@dataclass(slots=True)
class WriteResult:
    stored: StoredObject
    created: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[StoredObject]
    rv: int
    continue_token: str
    remaining: int


@dataclass(frozen=True, slots=True)
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str = ""
    precondition_uid: str = ""
    precondition_rv: str = ""
    dry_run: bool = False

    @classmethod
    def parse(cls, body: Mapping[str, Any], query: Mapping[str, str]) -> DeleteOptions:
        preconditions = body.get("preconditions") or {}
        grace = body.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        policy = body.get("propagationPolicy") or query.get("propagationPolicy", "")
        if body.get("orphanDependents") is True or query.get("orphanDependents") == "true":
            policy = policy or "Orphan"
        if policy not in ("", "Orphan", "Background", "Foreground"):
            raise errors.bad_request(f"unsupported propagationPolicy {policy!r}: use Orphan, Background or "
                                     f"Foreground")
        return cls(None if grace is None else int(grace), policy, preconditions.get("uid") or "",
                   preconditions.get("resourceVersion") or "", bool(body.get("dryRun") or query.get("dryRun")))


class ObjectAPI:
    """The generic registry over one store; one instance per control plane."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # -- reads --------------------------------------------------------------------------------------
    def get(self, info: ResourceInfo, namespace: str, name: str) -> StoredObject:
        stored = self.store.get(Key(info.gr, namespace if info.namespaced else "", name))
        if stored is None:
            raise errors.not_found(info.plural, name, info.group)
        return stored

    def list_objects(self, info: ResourceInfo, namespace: str | None, labels: LabelSelector | None = None,
             fields: FieldSelector | None = None, limit: int = 0, continue_token: str = "") -> ListResult:
        items, rv = self.store.list(info.gr, namespace if info.namespaced else None)
        start_after: tuple[str, str] | None = None
        if continue_token:
            rv, start_after = _decode_continue(continue_token, self.store.oldest_rv)
        selected = [o for o in items
                    if (start_after is None or (o.key.namespace, o.key.name) > start_after)
                    and (labels is None or labels.matches(o.labels))
                    and (fields is None or fields.matches(o.fields))]
        if limit and len(selected) > limit:
            last = selected[limit - 1].key
            return ListResult(selected[:limit], rv, _encode_continue(rv, (last.namespace, last.name)),
                              len(selected) - limit)
        return ListResult(selected, rv, "", 0)

    # -- create -------------------------------------------------------------------------------------
    async def create(self, info: ResourceInfo, namespace: str, body: Any, opts: WriteOptions) -> WriteResult:
        obj = self._check_body(info, body)
        meta = obj["metadata"]
        namespace = self._namespace_for(info, namespace, meta)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise errors.invalid(info.kind, "", [_cause("FieldValueRequired", "metadata.name",
                                                            "name or generateName is required")], info.group)
            meta["name"] = meta["generateName"] + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
        for key in (*_SERVER_OWNED_META, "resourceVersion", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if "status" in info.subresources and info.gr != "namespaces":
            obj.pop("status", None)
        if info.gr == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj.get("spec") or {})}
        defaults.apply_defaults(info.gr, obj)
        warnings = self._validate(info, obj, opts)
        if info.gr == "services":
            self._allocate_cluster_ip(obj)
        if opts.dry_run:
            return WriteResult(_unsaved(info, namespace, obj), True, warnings)
        try:
            stored = await self.store.create(Key(info.gr, namespace, meta["name"]), obj)
        except AlreadyExistsError:
            raise errors.already_exists(info.plural, meta["name"], info.group) from None
        return WriteResult(stored, True, warnings)

    # -- update -------------------------------------------------------------------------------------
    async def update(self, info: ResourceInfo, namespace: str, name: str, body: Any, opts: WriteOptions,
                     subresource: str = "") -> WriteResult:
        obj = self._check_body(info, body)
        meta = obj["metadata"]
        if meta.get("name", name) != name:
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                                     f"({name})")
        meta["name"] = name
        namespace = self._namespace_for(info, namespace, meta)
        key = Key(info.gr, namespace, name)
        current = self.store.get(key)
        if current is None:
            if subresource or info.gr not in _CREATE_ON_UPDATE:
                raise errors.not_found(info.plural, name, info.group)
            return await self.create(info, namespace, obj, opts)
        expected = meta.get("resourceVersion") or ""
        if expected and expected != str(current.rv):
            raise errors.conflict(info.plural, name, info.group)
        return await self._replace(info, current, obj, opts, subresource)

    async def _replace(self, info: ResourceInfo, current: StoredObject, obj: dict[str, Any], opts: WriteOptions,
                       subresource: str) -> WriteResult:
        """Write `obj` over `current` (both already checked to be the same object) with server rules."""
        old = current.decode()
        old_meta, meta = old["metadata"], obj["metadata"]
        if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
            raise errors.conflict(info.plural, current.key.name, info.group,
                                  f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                                  f"{old_meta.get('uid')}")
        if subresource == "status":
            new = old
            new["status"] = obj.get("status")
            if new["status"] is None:
                new.pop("status")
        elif subresource == "finalize":  # namespaces: only spec.finalizers changes
            new = old
            new.setdefault("spec", {})["finalizers"] = list((obj.get("spec") or {}).get("finalizers") or [])
        else:
            new = obj
            for key in _SERVER_OWNED_META:
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            if "status" in info.subresources and info.gr != "namespaces":
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if _spec_of(new) != _spec_of(old):
                meta["generation"] = int(old_meta.get("generation", 1)) + 1
            if info.gr == "pods":
                _check_pod_update(old, new)
        defaults.apply_defaults(info.gr, new)
        warnings = self._validate(info, new, opts)
        if info.gr == "services":
            self._keep_cluster_ip(old, new)
        if opts.dry_run:
            return WriteResult(_unsaved(info, current.key.namespace, new), False, warnings)
        if new["metadata"].get("deletionTimestamp") and not _has_finalizers(new):
            return WriteResult(await self._remove(info, current.key, str(current.rv), ""), False, warnings)
        try:
            stored = await self.store.update(current.key, new, expected_rv=current.rv)
        except ConflictError:
            raise errors.conflict(info.plural, current.key.name, info.group) from None
        except NotFoundError:
            raise errors.not_found(info.plural, current.key.name, info.group) from None
        return WriteResult(stored, False, warnings)

    # -- patch --------------------------------------------------------------------------------------
    async def patch(self, info: ResourceInfo, namespace: str, name: str, patch_type: PatchType, body: bytes,
                    opts: WriteOptions, subresource: str = "", force: bool = False) -> WriteResult:
        document = _parse_patch(patch_type, body)
        if patch_type == "strategic" and info.is_custom:
            raise errors.unsupported_media_type("application/strategic-merge-patch+json (custom resources "
                                                "accept merge, json and apply patches)")
        if patch_type == "apply" and not opts.field_manager:
            raise errors.bad_request("PATCH requests with apply content type must have fieldManager set")
        key = Key(info.gr, namespace if info.namespaced else "", name)
        for _ in range(_PATCH_RETRIES):
            current = self.store.get(key)
            if current is None:
                if patch_type == "apply" and not subresource:
                    applied = dict(document)
                    applied.setdefault("metadata", {})
                    applied["metadata"] = {**applied["metadata"], "name": name}
                    return await self.create(info, key.namespace, applied, opts)
                raise errors.not_found(info.plural, name, info.group)
            patched = self._apply_patch(info, current.decode(), patch_type, document)
            precondition = (patched.get("metadata") or {}).get("resourceVersion")
            if patch_type != "json" and isinstance(document, dict):
                precondition = (document.get("metadata") or {}).get("resourceVersion")
            if precondition and precondition != str(current.rv):
                raise errors.conflict(info.plural, name, info.group)
            obj = self._check_body(info, patched)
            try:
                return await self._replace(info, current, obj, opts, subresource)
            except APIError as exc:
                if exc.reason != "Conflict" or precondition or "Precondition failed" in exc.message:
                    raise
        raise errors.conflict(info.plural, name, info.group, "too many concurrent writers; try again")

    def _apply_patch(self, info: ResourceInfo, original: dict[str, Any], patch_type: PatchType,
                     document: Any) -> dict[str, Any]:
        try:
            if patch_type == "json":
                result = patch.json_patch(original, document)
            elif patch_type == "merge":
                result = patch.json_merge_patch(original, document)
            else:  # strategic, or apply: the applied configuration merged over the live object
                schema = self._schema_of(info)
                if schema is None:
                    result = patch.json_merge_patch(original, document)
                else:
                    result = patch.strategic_merge_patch(original, document, schema, schemas.resolve)
        except patch.PatchError as exc:
            raise errors.APIError(422, "Invalid", str(exc)) from None
        if not isinstance(result, dict):
            raise errors.bad_request("the patch did not produce an object")
        return result

    def _schema_of(self, info: ResourceInfo) -> Mapping[str, Any] | None:
        if info.is_custom:
            return None
        name = schemas.definition_for_gvk(info.group, info.version, info.kind)
        return None if name is None else schemas.definition(name)

    # -- delete -------------------------------------------------------------------------------------
    async def delete(self, info: ResourceInfo, namespace: str, name: str, options: DeleteOptions) -> StoredObject:
        """Delete now, or mark for deletion (deletionTimestamp) when finalizers or a grace period apply."""
        key = Key(info.gr, namespace if info.namespaced else "", name)
        for _ in range(_PATCH_RETRIES):
            current = self.store.get(key)
            if current is None:
                raise errors.not_found(info.plural, name, info.group)
            if options.precondition_uid and options.precondition_uid != current.uid:
                raise errors.conflict(info.plural, name, info.group,
                                      f"Precondition failed: UID in precondition: {options.precondition_uid}, "
                                      f"UID in object meta: {current.uid}")
            if options.precondition_rv and options.precondition_rv != str(current.rv):
                raise errors.conflict(info.plural, name, info.group,
                                      f"Precondition failed: ResourceVersion in precondition: "
                                      f"{options.precondition_rv}, ResourceVersion in object meta: {current.rv}")
            obj = current.decode()
            if not self._needs_graceful_delete(info, obj, options):
                if options.dry_run:
                    return current
                return await self._remove(info, key, str(current.rv), "")
            if options.dry_run:
                return current
            try:
                return await self.store.update(key, self._mark_deleting(info, obj, options), expected_rv=current.rv)
            except (ConflictError, NotFoundError):
                continue
        raise errors.conflict(info.plural, name, info.group, "the object kept changing during deletion")

    def _needs_graceful_delete(self, info: ResourceInfo, obj: dict[str, Any], options: DeleteOptions) -> bool:
        meta = obj["metadata"]
        if options.propagation_policy in ("Orphan", "Foreground") or meta.get("finalizers"):
            return True
        if info.gr == "namespaces":
            return True
        if info.gr == "pods" and (obj.get("spec") or {}).get("nodeName") and options.grace_period_seconds != 0:
            phase = (obj.get("status") or {}).get("phase")
            return phase not in ("Succeeded", "Failed")
        return False

    def _mark_deleting(self, info: ResourceInfo, obj: dict[str, Any], options: DeleteOptions) -> dict[str, Any]:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        wanted = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(options.propagation_policy)
        if wanted and wanted not in finalizers and not meta.get("deletionTimestamp"):
            finalizers.append(wanted)
        if finalizers:
            meta["finalizers"] = finalizers
        grace = 0
        if info.gr == "pods":
            default = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            grace = options.grace_period_seconds if options.grace_period_seconds is not None else int(default)
            current = meta.get("deletionGracePeriodSeconds")
            grace = grace if current is None else min(grace, int(current))
        if not meta.get("deletionTimestamp") or info.gr == "pods":
            meta["deletionTimestamp"] = now_rfc3339(datetime.now(UTC) + timedelta(seconds=grace))
            meta["deletionGracePeriodSeconds"] = grace
        if info.gr == "namespaces":
            obj.setdefault("status", {})["phase"] = "Terminating"
        return obj

    async def _remove(self, info: ResourceInfo, key: Key, expected_rv: str, expected_uid: str) -> StoredObject:
        try:
            return await self.store.delete(key, expected_rv=int(expected_rv) if expected_rv else None,
                                           expected_uid=expected_uid or None)
        except NotFoundError:
            raise errors.not_found(info.plural, key.name, info.group) from None
        except ConflictError:
            raise errors.conflict(info.plural, key.name, info.group) from None

    # -- helpers ------------------------------------------------------------------------------------
    def _check_body(self, info: ResourceInfo, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of a {info.kind} must be a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != info.api_version and not (info.is_custom and _same_group(api_version, info)):
            raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                                     f"version ({info.api_version})")
        if kind and kind != info.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match the expected kind ({info.kind})")
        body["apiVersion"] = info.storage_api_version if info.is_custom else info.api_version
        body["kind"] = info.kind
        metadata = body.setdefault("metadata", {})
        if not isinstance(metadata, dict):
            raise errors.bad_request("metadata must be an object")
        return body

    def _namespace_for(self, info: ResourceInfo, namespace: str, meta: dict[str, Any]) -> str:
        if not info.namespaced:
            meta.pop("namespace", None)
            return ""
        given = meta.get("namespace") or namespace
        if namespace and given != namespace:
            raise errors.bad_request(f"the namespace of the provided object ({given}) does not match the namespace "
                                     f"sent on the request ({namespace})")
        if not given:
            raise errors.bad_request("a namespace is required for a namespaced resource")
        meta["namespace"] = given
        owner = self.store.get(Key("namespaces", "", given))
        if owner is None:
            raise errors.not_found("namespaces", given)
        if owner.decode().get("metadata", {}).get("deletionTimestamp"):
            raise errors.forbidden(f'{info.plural} "{meta.get("name") or meta.get("generateName", "")}" is forbidden: '
                                   f"unable to create new content in namespace {given} because it is being terminated")
        return str(given)

    def _validate(self, info: ResourceInfo, obj: dict[str, Any], opts: WriteOptions) -> list[str]:
        if info.is_custom:
            result = validation.validate_custom(obj, info.crd_schema or {}, opts.field_validation,
                                                cache_key=f"{info.crd_name}/{info.version}")
        else:
            result = validation.validate_builtin(info.group, info.version, info.kind, obj, opts.field_validation)
            if info.gr == "customresourcedefinitions.apiextensions.k8s.io":
                crd = validation.validate_crd(obj)
                result.errors.extend(crd.errors)
        name = obj["metadata"].get("name", "")
        if result.unknown_fields and opts.field_validation == "Strict":  # decoding fails before validation
            listed = ", ".join(f'unknown field "{f}"' for f in result.unknown_fields)
            raise errors.bad_request(f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: '
                                     f"strict decoding error: {listed}")
        if result.errors:
            raise errors.invalid(info.kind, name, [_cause(e.type, e.field, e.message) for e in result.errors],
                                 info.group)
        warnings = list(result.warnings)
        if result.unknown_fields and opts.field_validation == "Warn":
            warnings.extend(f'unknown field "{f}"' for f in result.unknown_fields)
        return warnings

    def _allocate_cluster_ip(self, obj: dict[str, Any]) -> None:
        spec = obj["spec"]
        if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
            if spec.get("clusterIP") == "None":
                spec["clusterIPs"] = ["None"]
            return
        if spec.get("clusterIP"):
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            return
        used = {o.decode().get("spec", {}).get("clusterIP") for o in self.store.list("services")[0]}
        for host in _SERVICE_CIDR.hosts():
            if host.packed[-1] in (0, 1) and host.packed[-2] == 0:  # .0.1 is the kubernetes service
                continue
            if str(host) not in used:
                spec["clusterIP"] = str(host)
                spec["clusterIPs"] = [str(host)]
                return
        raise errors.internal("the service IP range is exhausted")

    @staticmethod
    def _keep_cluster_ip(old: dict[str, Any], new: dict[str, Any]) -> None:
        old_spec, new_spec = old.get("spec") or {}, new.setdefault("spec", {})
        if old_spec.get("clusterIP") and not new_spec.get("clusterIP"):
            new_spec["clusterIP"] = old_spec["clusterIP"]
            new_spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])
        elif old_spec.get("clusterIP") and new_spec["clusterIP"] != old_spec["clusterIP"]:
            raise errors.invalid("Service", new["metadata"]["name"], [_cause(
                "FieldValueInvalid", "spec.clusterIPs[0]", "field is immutable")])

    async def ensure_system_namespaces(self) -> None:
        info = self.registry.get("", "v1", "namespaces")
        assert info is not None
        for name in _SYSTEM_NAMESPACES:
            if self.store.get(Key("namespaces", "", name)) is None:
                await self.create(info, "", {"metadata": {"name": name}}, WriteOptions())


def _has_finalizers(obj: Mapping[str, Any]) -> bool:
    """Finalizers still pending; a namespace also waits for its spec.finalizers (the content cleaner)."""
    spec_finalizers = (obj.get("spec") or {}).get("finalizers") if obj.get("kind") == "Namespace" else None
    return bool(obj["metadata"].get("finalizers") or spec_finalizers)


def _cause(reason: str, field_path: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field_path}


def _same_group(api_version: str, info: ResourceInfo) -> bool:
    return api_version.rpartition("/")[0] == info.group


def _spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that counts as desired state for `generation`: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _check_pod_update(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Pod spec is immutable except images, activeDeadlineSeconds and added tolerations."""
    old_spec, new_spec = dict(old.get("spec") or {}), dict(new.get("spec") or {})
    for spec in (old_spec, new_spec):
        for key in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
            spec.pop(key, None)
        spec["containers"] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get("containers") or ()]
        spec["initContainers"] = [{k: v for k, v in c.items() if k != "image"}
                                  for c in spec.get("initContainers") or ()]
    if not old_spec.get("nodeName"):
        new_spec.pop("nodeName", None)
        old_spec.pop("nodeName", None)
    if old_spec != new_spec:
        raise errors.invalid("Pod", new["metadata"]["name"], [_cause(
            "FieldValueForbidden", "spec", "Forbidden: pod updates may not change fields other than "
            "`spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, "
            "`spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`")])


def _qos_class(spec: Mapping[str, Any]) -> str:
    containers = [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]
    requests_any = limits_all = False
    guaranteed = bool(containers)
    for container in containers:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        requests_any = requests_any or bool(requests) or bool(limits)
        has_both = all(k in limits for k in ("cpu", "memory"))
        same = all(requests.get(k, limits.get(k)) == limits.get(k) for k in ("cpu", "memory"))
        guaranteed = guaranteed and has_both and same
        limits_all = limits_all or bool(limits)
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if requests_any or limits_all else "BestEffort"


def _parse_patch(patch_type: PatchType, body: bytes) -> Any:
    try:
        document = yaml.safe_load(body) if patch_type == "apply" else orjson.loads(body)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise errors.bad_request(f"error decoding patch: {exc}") from None
    if patch_type == "json" and not isinstance(document, list):
        raise errors.bad_request("json patch must be a list of operations")
    if patch_type != "json" and not isinstance(document, dict):
        raise errors.bad_request("the patch must be a JSON object")
    return document


def _unsaved(info: ResourceInfo, namespace: str, obj: dict[str, Any]) -> StoredObject:
    """What a dry run returns: the object as it would be stored, without a revision."""
    meta = obj["metadata"]
    return StoredObject(Key(info.gr, namespace, meta.get("name", "")), 0, orjson.dumps(obj), meta.get("uid", ""),
                        meta.get("labels") or {}, {})


def _encode_continue(rv: int, after: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"rv": rv, "ns": after[0], "name": after[1]})).decode()


def _decode_continue(token: str, oldest_rv: int) -> tuple[int, tuple[str, str]]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        rv, after = int(data["rv"]), (str(data["ns"]), str(data["name"]))
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise errors.bad_request("continue key is not valid: malformed continue token") from None
    if rv < oldest_rv:
        raise errors.gone("The provided continue parameter is too old to display a consistent list result. "
                          "You can start a new list without the continue parameter.")
    return rv, after
