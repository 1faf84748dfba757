"""Per-target changes to a copied Deployment, in upstream's order (ref/devices-groups.md 6.3; pure, no I/O).

Order: name, replicas, image, nodeSelector, command, args, env, resources. Each overrider takes a deep
copy of the manifest and returns it changed; `check_overriders` finds what can never apply (an unknown
image component or operator, an unknown command/args/env operator) before anything is generated, and
`OverrideError` says why one target's copy could not be made (e.g. a predicate path that is not there).
What it must never do: touch the caller's manifest, or produce a copy for a target whose overriders are bad.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any, Final

from cloudcore.controllermanager.imageref import parse_image
from cloudcore.controllermanager.keys import BELONGING_TO

Object = dict[str, Any]

IMAGE_COMPONENTS: Final = {"Registry": "registry", "Repository": "repository", "Tag": "tag"}
IMAGE_OPERATORS: Final = frozenset({"add", "remove", "replace"})
LIST_OPERATORS: Final = frozenset({"add", "remove"})  # command and args
ENV_OPERATORS: Final = frozenset({"add", "remove", "replace"})
# Kinds whose pod template the image overrider walks when it has no predicate.
_POD_SPEC_PATHS: Final = {
    "Pod": ("spec",),
    "ReplicaSet": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
}


class OverrideError(ValueError):
    """This target's overriders cannot apply to this manifest; the text says why."""


# -- validation ---------------------------------------------------------------------------------------
def check_overriders(overriders: Mapping[str, Any] | None) -> list[str]:
    """Problems that make these overriders unusable for any manifest ([] when fine)."""
    if not overriders:
        return []
    problems: list[str] = []
    replicas = overriders.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0):
        problems.append(f"replicas must be a non-negative integer, not {replicas!r}")
    for index, item in enumerate(_items(overriders, "imageOverriders")):
        if item.get("component") not in IMAGE_COMPONENTS:
            problems.append(f"imageOverriders[{index}]: unknown component {item.get('component')!r} "
                            f"(want one of {', '.join(IMAGE_COMPONENTS)})")
        if item.get("operator") not in IMAGE_OPERATORS:
            problems.append(f"imageOverriders[{index}]: unknown operator {item.get('operator')!r} "
                            f"(want one of {', '.join(sorted(IMAGE_OPERATORS))})")
    for field, allowed in (("commandOverriders", LIST_OPERATORS), ("argsOverriders", LIST_OPERATORS),
                           ("envOverriders", ENV_OPERATORS)):
        for index, item in enumerate(_items(overriders, field)):
            if item.get("operator") not in allowed:
                problems.append(f"{field}[{index}]: unknown operator {item.get('operator')!r} "
                                f"(want one of {', '.join(sorted(allowed))})")
    return problems


def _items(overriders: Mapping[str, Any], field: str) -> list[Mapping[str, Any]]:
    found = overriders.get(field) or []
    return [item if isinstance(item, Mapping) else {} for item in found] if isinstance(found, list) else [{}]


# -- names --------------------------------------------------------------------------------------------
def group_copy_name(name: str, group: str) -> str:
    return f"{name}-{group}"


def label_target_suffix(match_labels: Mapping[str, str]) -> str:
    """`ls-<8 hex>`: the first 4 bytes of sha256 over the matchLabels' key+value pairs in key order."""
    digest = hashlib.sha256()
    for key in sorted(match_labels):
        digest.update(f"{key}{match_labels[key]}".encode())
    return f"ls-{digest.digest()[:4].hex()}"


def override_name(manifest: Object, suffix: str) -> Object:
    manifest["metadata"]["name"] = f"{manifest['metadata']['name']}-{suffix}"
    return manifest


# -- replicas -----------------------------------------------------------------------------------------
def override_replicas(manifest: Object, replicas: int | None) -> Object:
    if replicas is not None:
        manifest.setdefault("spec", {})["replicas"] = replicas
    return manifest


# -- image --------------------------------------------------------------------------------------------
def override_image(manifest: Object, overrider: Mapping[str, Any]) -> Object:
    """One imageOverrider: at `predicate.path` (a JSON pointer) if given, else every container image."""
    component = IMAGE_COMPONENTS[str(overrider["component"])]
    operator = str(overrider["operator"])
    value = str(overrider.get("value") or "")
    predicate = overrider.get("predicate")
    if isinstance(predicate, Mapping) and predicate.get("path"):
        parent, key = _pointer_parent(manifest, str(predicate["path"]))
        current = parent[key]
        if not isinstance(current, str):
            raise OverrideError(f"image predicate path {predicate['path']}: not a string")
        parent[key] = change_image(current, component, operator, value)
        return manifest
    for container in _containers(manifest):
        if isinstance(container.get("image"), str):
            container["image"] = change_image(container["image"], component, operator, value)
    return manifest


def change_image(image: str, component: str, operator: str, value: str) -> str:
    """`add` appends `value` to the component, `replace` sets it, `remove` drops it."""
    ref = parse_image(image)
    current = getattr(ref, component)
    if operator == "add":
        return str(ref.with_component(component, current + value))
    if operator == "replace":
        return str(ref.with_component(component, value))
    if operator == "remove":
        return str(ref.with_component(component, ""))
    raise OverrideError(f"unknown image operator {operator!r}")


def _pointer_parent(document: Object, pointer: str) -> tuple[Any, Any]:
    """The container and key a JSON pointer (RFC 6901) names; OverrideError when it names nothing."""
    if not pointer.startswith("/"):
        raise OverrideError(f"image predicate path {pointer!r} is not a JSON pointer (must start with /)")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
    node: Any = document
    for part in parts[:-1]:
        node = _step(node, part, pointer)
    last: Any = parts[-1]
    if isinstance(node, list):
        last = _index(node, last, pointer)
    elif not isinstance(node, dict) or last not in node:
        raise OverrideError(f"image predicate path {pointer} does not exist in the manifest")
    return node, last


def _step(node: Any, part: str, pointer: str) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list):
        return node[_index(node, part, pointer)]
    raise OverrideError(f"image predicate path {pointer} does not exist in the manifest")


def _index(node: list[Any], part: str, pointer: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise OverrideError(f"image predicate path {pointer} does not exist in the manifest")
    return int(part)


def _pod_spec(manifest: Object) -> Object:
    node: Any = manifest
    for part in _POD_SPEC_PATHS.get(str(manifest.get("kind")), ("spec", "template", "spec")):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _containers(manifest: Object) -> Iterator[Object]:
    spec = _pod_spec(manifest)
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                yield container


def _named(manifest: Object, name: str) -> Iterator[Object]:
    spec = _pod_spec(manifest)
    for container in spec.get("containers") or []:
        if isinstance(container, dict) and container.get("name") == name:
            yield container


# -- nodeSelector -------------------------------------------------------------------------------------
def override_node_selector_group(manifest: Object, group: str) -> Object:
    """The pod template's nodeSelector is replaced by `{belonging-to: <group>}`."""
    template = manifest.setdefault("spec", {}).setdefault("template", {})
    template.setdefault("spec", {})["nodeSelector"] = {BELONGING_TO: group}
    return manifest


def override_node_selector_labels(manifest: Object, selector: Mapping[str, Any]) -> Object:
    """A required node affinity: one `In` expression per matchLabels pair, plus the selector's expressions."""
    match_labels = selector.get("matchLabels") or {}
    expressions: list[Object] = [{"key": k, "operator": "In", "values": [str(match_labels[k])]}
                                 for k in sorted(match_labels)]
    expressions += [copy.deepcopy(dict(e)) for e in selector.get("matchExpressions") or [] if isinstance(e, Mapping)]
    pod_spec = manifest.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    node_affinity = pod_spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [{"matchExpressions": expressions}]}
    return manifest


# -- command and args ---------------------------------------------------------------------------------
def override_list(manifest: Object, field: str, overrider: Mapping[str, Any]) -> Object:
    """`field` is `command` or `args`: `add` appends the values, `remove` drops every element equal to one."""
    values = [str(v) for v in overrider.get("value") or []]
    for container in _named(manifest, str(overrider.get("containerName") or "")):
        current = [str(v) for v in container.get(field) or []]
        if overrider.get("operator") == "add":
            container[field] = current + values
        elif overrider.get("operator") == "remove":
            container[field] = [v for v in current if v not in values]
        else:
            raise OverrideError(f"unknown {field} operator {overrider.get('operator')!r}")
    return manifest


# -- env ----------------------------------------------------------------------------------------------
def override_env(manifest: Object, overrider: Mapping[str, Any]) -> Object:
    """`add` appends (a same-named variable is replaced in place), `remove` drops by name, `replace` swaps
    same-named variables and leaves absent ones absent."""
    values = [copy.deepcopy(dict(v)) for v in overrider.get("value") or [] if isinstance(v, Mapping)]
    operator = overrider.get("operator")
    for container in _named(manifest, str(overrider.get("containerName") or "")):
        env: list[Object] = [e for e in container.get("env") or [] if isinstance(e, dict)]
        by_name = {str(v.get("name")): v for v in values}
        if operator == "add":
            kept = [by_name.pop(str(e.get("name")), e) for e in env]
            container["env"] = kept + [v for v in values if str(v.get("name")) in by_name]
        elif operator == "remove":
            container["env"] = [e for e in env if str(e.get("name")) not in by_name]
        elif operator == "replace":
            container["env"] = [by_name.get(str(e.get("name")), e) for e in env]
        else:
            raise OverrideError(f"unknown env operator {operator!r}")
    return manifest


# -- resources ----------------------------------------------------------------------------------------
def override_resources(manifest: Object, overrider: Mapping[str, Any]) -> Object:
    """The named container's resources are set to the value (requests and limits replaced whole)."""
    value = overrider.get("value")
    for container in _named(manifest, str(overrider.get("containerName") or "")):
        container["resources"] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else {}
    return manifest


# -- all, in order ------------------------------------------------------------------------------------
def apply_overriders(manifest: Mapping[str, Any], suffix: str, overriders: Mapping[str, Any] | None, *,
                     group: str | None = None, label_selector: Mapping[str, Any] | None = None) -> Object:
    """A changed deep copy: name, replicas, image, nodeSelector, command, args, env, resources."""
    problems = check_overriders(overriders)
    if problems:
        raise OverrideError("; ".join(problems))
    spec: Mapping[str, Any] = overriders or {}
    result: Object = copy.deepcopy(dict(manifest))
    override_name(result, suffix)
    override_replicas(result, spec.get("replicas"))
    for item in _items(spec, "imageOverriders"):
        override_image(result, item)
    if group is not None:
        override_node_selector_group(result, group)
    if label_selector is not None:
        override_node_selector_labels(result, label_selector)
    for field, key in (("command", "commandOverriders"), ("args", "argsOverriders")):
        for item in _items(spec, key):
            override_list(result, field, item)
    for item in _items(spec, "envOverriders"):
        override_env(result, item)
    for item in _items(spec, "resourcesOverriders"):
        override_resources(result, item)
    return result

