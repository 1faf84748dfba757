"""An EdgeApplication's spec turned into the objects it should own, and the problems found (pure, no I/O).

Per manifest (ordinal = its index in `spec.workloadTemplate.manifests`): an `apps/v1` Deployment is
copied once per target group (`<name>-<group>`) and per label target (`<name>-ls-<hash>`), through the
overriders; a `v1` Service gets `apps.kubeedge.io/service-topology: range-nodegroup`; anything else is
kept as written. A manifest without a namespace takes the EdgeApplication's. Each object carries
`apps.kubeedge.io/last-applied-template` = its own JSON (keys sorted) without that annotation.

A problem (invalid manifest, unknown overrider, missing group, a name too long, a predicate path that is
not there) skips only what it concerns and is returned with a reason for the status condition and Event.
What it must never do: emit an object for a target it could not override correctly.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from cloudcore.controllermanager import keys
from cloudcore.controllermanager.overriders import (
    OverrideError,
    apply_overriders,
    check_overriders,
    label_target_suffix,
)

Object = dict[str, Any]

MAX_NAME: Final = 253
# Reasons (status condition and Event)
INVALID_MANIFEST: Final = "InvalidManifest"
UNKNOWN_OVERRIDER: Final = "UnknownOverrider"
NODEGROUP_NOT_FOUND: Final = "NodeGroupNotFound"
NAME_TOO_LONG: Final = "NameTooLong"
OVERRIDE_FAILED: Final = "OverrideFailed"
DUPLICATE_OBJECT: Final = "DuplicateObject"


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Desired:
    ordinal: int
    manifest: Object

    @property
    def ref(self) -> ObjectRef:
        return ref_of(self.manifest)


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str

    def as_json(self) -> Object:
        return {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace, "name": self.name}


@dataclass(slots=True)
class Rendering:
    objects: list[Desired] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def ref_of(obj: Mapping[str, Any]) -> ObjectRef:
    metadata = obj.get("metadata") or {}
    return ObjectRef(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""),
                     str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def manifest_problem(manifest: Any) -> str:
    """Why a manifest is not a usable object ("" if it is)."""
    if not isinstance(manifest, Mapping):
        return "not an object"
    for field_name in ("apiVersion", "kind"):
        if not isinstance(manifest.get(field_name), str) or not manifest.get(field_name):
            return f"{field_name} is missing"
    metadata = manifest.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str) or not metadata.get("name"):
        return "metadata.name is missing"
    if metadata.get("namespace") is not None and not isinstance(metadata.get("namespace"), str):
        return "metadata.namespace is not a string"
    return ""


def _spec(eapp: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = eapp.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _list(parent: Mapping[str, Any], key: str) -> list[Any]:
    found = parent.get(key) if isinstance(parent, Mapping) else None
    return found if isinstance(found, list) else []


def target_groups(eapp: Mapping[str, Any]) -> list[str]:
    scope = _spec(eapp).get("workloadScope") or {}
    return [str(t.get("name")) for t in _list(scope, "targetNodeGroups") if isinstance(t, Mapping) and t.get("name")]


def render(eapp: Mapping[str, Any], existing_groups: Collection[str]) -> Rendering:
    result = Rendering()
    namespace = str((eapp.get("metadata") or {}).get("namespace") or "")
    template = _spec(eapp).get("workloadTemplate") or {}
    raw = template.get("manifests") if isinstance(template, Mapping) else None
    if raw is not None and not isinstance(raw, list):
        result.problems.append(Problem(INVALID_MANIFEST, "spec.workloadTemplate.manifests is not a list"))
        raw = []
    scope = _spec(eapp).get("workloadScope") or {}
    groups = [t for t in _list(scope, "targetNodeGroups") if isinstance(t, Mapping)]
    label_targets = [t for t in _list(scope, "targetNodeLabels") if isinstance(t, Mapping)]
    usable_groups = _usable_groups(groups, existing_groups, result.problems)
    usable_labels = _usable_label_targets(label_targets, result.problems)
    seen: set[ObjectRef] = set()
    for ordinal, manifest in enumerate(raw or []):
        why = manifest_problem(manifest)
        if why:
            result.problems.append(Problem(INVALID_MANIFEST, f"manifests[{ordinal}]: {why}"))
            continue
        base: Object = copy.deepcopy(dict(manifest))
        if not base["metadata"].get("namespace"):
            base["metadata"]["namespace"] = namespace
        for obj in _expand(ordinal, base, usable_groups, usable_labels, result.problems):
            ref = ref_of(obj)
            if ref in seen:
                result.problems.append(Problem(DUPLICATE_OBJECT, f"manifests[{ordinal}]: {ref.kind} "
                                                                 f"{ref.namespace}/{ref.name} is generated twice"))
                continue
            seen.add(ref)
            result.objects.append(Desired(ordinal, stamp_last_applied(obj)))
    return result


def _usable_groups(groups: list[Mapping[str, Any]], existing: Collection[str],
                   problems: list[Problem]) -> list[Mapping[str, Any]]:
    usable = []
    for target in groups:
        name = str(target.get("name") or "")
        bad = check_overriders(target.get("overriders"))
        if bad:
            problems.append(Problem(UNKNOWN_OVERRIDER, f"targetNodeGroups {name}: {'; '.join(bad)}"))
        elif name not in existing:
            problems.append(Problem(NODEGROUP_NOT_FOUND, f"NodeGroup {name} does not exist"))
        else:
            usable.append(target)
    return usable


def _usable_label_targets(targets: list[Mapping[str, Any]], problems: list[Problem]) -> list[Mapping[str, Any]]:
    usable = []
    for index, target in enumerate(targets):
        bad = check_overriders(target.get("overriders"))
        selector = target.get("labelSelector")
        if bad:
            problems.append(Problem(UNKNOWN_OVERRIDER, f"targetNodeLabels[{index}]: {'; '.join(bad)}"))
        elif not isinstance(selector, Mapping) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
            problems.append(Problem(INVALID_MANIFEST, f"targetNodeLabels[{index}]: labelSelector selects nothing"))
        else:
            usable.append(target)
    return usable


def _expand(ordinal: int, base: Object, groups: list[Mapping[str, Any]], label_targets: list[Mapping[str, Any]],
            problems: list[Problem]) -> list[Object]:
    api_version, kind = base["apiVersion"], base["kind"]
    if (api_version, kind) == ("v1", "Service"):
        base["metadata"]["annotations"] = {**(base["metadata"].get("annotations") or {}),
                                           keys.SERVICE_TOPOLOGY: keys.RANGE_NODEGROUP}
        return [base]
    if (api_version, kind) != ("apps/v1", "Deployment"):
        return [base]
    copies: list[Object] = []
    name = base["metadata"]["name"]
    targets: list[tuple[str, Mapping[str, Any], str | None, Mapping[str, Any] | None]] = [
        (str(t["name"]), t, str(t["name"]), None) for t in groups]
    targets += [(label_target_suffix(t["labelSelector"].get("matchLabels") or {}), t, None, t["labelSelector"])
                for t in label_targets]
    for suffix, target, group, selector in targets:
        full = f"{name}-{suffix}"
        if len(full) > MAX_NAME:
            problems.append(Problem(NAME_TOO_LONG, f"manifests[{ordinal}]: Deployment name {full[:40]}... is "
                                                   f"{len(full)} characters, over {MAX_NAME}"))
            continue
        try:
            copies.append(apply_overriders(base, suffix, target.get("overriders"), group=group,
                                           label_selector=selector))
        except OverrideError as exc:
            problems.append(Problem(OVERRIDE_FAILED, f"manifests[{ordinal}] for {suffix}: {exc}"))
    return copies


def stamp_last_applied(obj: Object) -> Object:
    annotations = dict(obj["metadata"].get("annotations") or {})
    annotations.pop(keys.LAST_APPLIED, None)
    obj["metadata"]["annotations"] = annotations
    text = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
    obj["metadata"]["annotations"] = {**annotations, keys.LAST_APPLIED: text}
    return obj


def last_applied(obj: Mapping[str, Any]) -> Object | None:
    """The object a generated object was last applied from (its annotation), or None."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(keys.LAST_APPLIED)
    if not isinstance(text, str):
        return None
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> Object:
    """An RFC 7386 merge patch that turns `old` into `new` (removed keys become null; lists replace)."""
    patch: Object = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif before != value or key not in old:
            patch[key] = copy.deepcopy(value)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def contained_refs(text: str | None) -> list[ObjectRef]:
    """The refs in a last-contained-resources annotation (unreadable -> none)."""
    if not text:
        return []
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    refs = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping):
            refs.append(ObjectRef(str(item.get("apiVersion") or ""), str(item.get("kind") or ""),
                                  str(item.get("namespace") or ""), str(item.get("name") or "")))
    return [r for r in refs if r.api_version and r.kind and r.name]


def contained_text(refs: Collection[ObjectRef]) -> str:
    return orjson.dumps([r.as_json() for r in sorted(refs)]).decode()
