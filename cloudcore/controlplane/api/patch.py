"""The three PATCH bodies the API server applies: JSON merge patch, JSON patch, strategic merge patch.

Owns how a patch document changes a decoded JSON object, nothing else (no I/O, no validation of the
result, no HTTP status codes). Every function takes its inputs read-only and returns a fresh document
that shares no list or dict with them; a patch that cannot be applied raises `PatchError` and leaves
nothing half-done.

- `json_merge_patch`: RFC 7386 (`application/merge-patch+json`).
- `json_patch`: RFC 6902 (`application/json-patch+json`) with RFC 6901 pointers.
- `strategic_merge_patch`: Kubernetes' `application/strategic-merge-patch+json`, the apply half of
  apimachinery's `pkg/util/strategicpatch`, driven by the kind's JSON schema instead of Go struct
  tags: `x-kubernetes-patch-strategy` (`merge`, `replace`, `retainKeys`, `merge,retainKeys`) and
  `x-kubernetes-patch-merge-key` on a property say how its list or map merges. It honours the
  directives `$patch` (`replace`/`delete` on maps, `delete`/`replace` items in merging lists),
  `$retainKeys`, `$deleteFromPrimitiveList/<list>` and `$setElementOrder/<list>`, and the element
  order apimachinery gives merged lists: `$setElementOrder` first, then the order of the patch list,
  then the live order. That puts an item the patch adds ahead of the live items it is listed before
  (adding one container with kubectl patch makes it the first container), exactly as Kubernetes does.

  Kubernetes decodes the merged map into the Go type afterwards, which drops whatever directive or
  null is left in it; here the merge strips them itself, so no `$patch`, `$retainKeys`,
  `$setElementOrder/...` or `$deleteFromPrimitiveList/...` key ever reaches a stored object.

  Custom resources have no patch strategies: Kubernetes refuses a strategic merge patch for them
  with 415 Unsupported Media Type. `strategic_merge_supported(schema)` tells the API layer whether
  it can apply one; `strategic_merge_patch` called without a schema falls back to RFC 7386.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import orjson

Resolver = Callable[[str], Mapping[str, Any]]
"""Maps a `$ref` (`#/$defs/io.k8s.api.core.v1.Container`) to the definition it names."""


class PatchError(ValueError):
    """A patch that is malformed or does not apply to the object; the message says which and where."""


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value (orjson's round trip is several times faster than copy.deepcopy)."""
    if isinstance(value, dict | list):
        try:
            return orjson.loads(orjson.dumps(value))
        except orjson.JSONEncodeError as exc:
            raise PatchError(f"not a JSON document: {exc}") from None
    return value


# -- RFC 7386 ---------------------------------------------------------------------------------------


def json_merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386: null deletes a member, objects merge recursively, anything else replaces."""
    if not isinstance(patch, dict):
        return _copy(patch)
    target = _copy(original) if isinstance(original, dict) else {}
    _merge_into(target, patch)
    return target


def _merge_into(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            if not isinstance(current, dict):
                current = target[key] = {}
            _merge_into(current, value)
        else:
            target[key] = _copy(value)


# -- RFC 6902 ---------------------------------------------------------------------------------------

_ARRAY_INDEX: Final = re.compile(r"0|[1-9][0-9]*")
_POINTER_TOKEN: Final = re.compile(r"(?:[^~]|~[01])*")


def json_patch(original: Any, operations: Any) -> Any:
    """RFC 6902: apply `operations` (add, remove, replace, move, copy, test) in order.

    Pointers follow RFC 6901 (`~1` is `/`, `~0` is `~`); `-` as the last token of an `add` path
    appends to an array. Any failing operation fails the whole patch.
    """
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be an array of operations")
    document = _copy(original)
    for number, operation in enumerate(operations):
        document = _apply_operation(document, operation, number)
    return document


def _apply_operation(document: Any, operation: Any, number: int) -> Any:
    if not isinstance(operation, dict):
        raise PatchError(f"operation {number} is not a JSON object")
    op = operation.get("op")
    path = _string_member(operation, "path", number)
    tokens = _parse_pointer(path)
    if op == "add":
        return _add(document, tokens, path, _copy(_value_member(operation, op, path)))
    if op == "remove":
        _remove(document, tokens, path)
        return document
    if op == "replace":
        return _replace(document, tokens, path, _copy(_value_member(operation, op, path)))
    if op == "test":
        expected = _value_member(operation, op, path)
        if not _json_equal(_resolve(document, tokens, path), expected):
            raise PatchError(f"test operation failed at {path}")
        return document
    if op in ("move", "copy"):
        source = _string_member(operation, "from", number)
        source_tokens = _parse_pointer(source)
        if op == "copy":
            return _add(document, tokens, path, _copy(_resolve(document, source_tokens, source)))
        if source_tokens == tokens:
            _resolve(document, tokens, path)
            return document
        if tokens[: len(source_tokens)] == source_tokens:
            raise PatchError(f"cannot move {source} into its own child {path}")
        return _add(document, tokens, path, _remove(document, source_tokens, source))
    raise PatchError(f"operation {number} has an unsupported op {op!r}: "
                     "expected one of add, remove, replace, move, copy, test")


def _string_member(operation: Mapping[str, Any], member: str, number: int) -> str:
    value = operation.get(member)
    if not isinstance(value, str):
        raise PatchError(f"operation {number} needs a string {member!r}")
    return value


def _value_member(operation: Mapping[str, Any], op: str, path: str) -> Any:
    if "value" not in operation:
        raise PatchError(f"{op} operation at {path or '/'} has no 'value'")
    return operation["value"]


def _parse_pointer(pointer: str) -> list[str]:
    if not pointer:
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}: it must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    if "~" not in pointer:
        return tokens
    for token in tokens:
        if not _POINTER_TOKEN.fullmatch(token):
            raise PatchError(f"invalid JSON pointer {pointer!r}: '~' must be followed by '0' or '1'")
    return [token.replace("~1", "/").replace("~0", "~") for token in tokens]


def _index(token: str, length: int, path: str, *, append: bool) -> int:
    """The array position `token` names; `append` allows `-` and `length` (the add operation)."""
    if token == "-" and append:
        return length
    if not _ARRAY_INDEX.fullmatch(token):
        raise PatchError(f"path {path} does not exist: {token!r} is not an array index")
    index = int(token)
    if index > length or (index == length and not append):
        raise PatchError(f"path {path} does not exist: array index {index} is out of range")
    return index


def _resolve(document: Any, tokens: Sequence[str], path: str) -> Any:
    node = document
    for token in tokens:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path {path} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), path, append=False)]
        else:
            raise PatchError(f"path {path} does not exist")
    return node


def _parent(document: Any, tokens: Sequence[str], path: str) -> Any:
    parent = _resolve(document, tokens[:-1], path)
    if not isinstance(parent, dict | list):
        raise PatchError(f"path {path} does not exist: its parent is neither an object nor an array")
    return parent


def _add(document: Any, tokens: Sequence[str], path: str, value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(document, tokens, path)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent.insert(_index(tokens[-1], len(parent), path, append=True), value)
    return document


def _remove(document: Any, tokens: Sequence[str], path: str) -> Any:
    """Remove the value at `tokens` and return it."""
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(document, tokens, path)
    if isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise PatchError(f"path {path} does not exist")
        return parent.pop(tokens[-1])
    return parent.pop(_index(tokens[-1], len(parent), path, append=False))


def _replace(document: Any, tokens: Sequence[str], path: str, value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(document, tokens, path)
    if isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise PatchError(f"path {path} does not exist")
        parent[tokens[-1]] = value
    else:
        parent[_index(tokens[-1], len(parent), path, append=False)] = value
    return document


def _json_equal(left: Any, right: Any) -> bool:
    """JSON equality (RFC 6902 section 4.6): numbers by value, booleans never equal to numbers."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(v, right[k]) for k, v in left.items())
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and left == right


# -- strategic merge patch --------------------------------------------------------------------------

_DIRECTIVE: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_DELETE_FROM_PRIMITIVE_LIST: Final = "$deleteFromPrimitiveList"
_SET_ELEMENT_ORDER: Final = "$setElementOrder"
_BAD_PRIMITIVE_LIST: Final = "invalid patch format of primitive list"
_BAD_SET_ELEMENT_ORDER: Final = "invalid patch format of setElementOrder list"
_BAD_RETAIN_KEYS: Final = "invalid patch format of retainKeys"
_ABSENT: Final[Any] = object()


def strategic_merge_supported(schema: Mapping[str, Any] | None) -> bool:
    """Whether a strategic merge patch applies to objects of this schema.

    It needs the kind's definition (built-in kinds); custom resources have none (pass None), and
    Kubernetes answers a strategic merge patch for them with 415 Unsupported Media Type.
    """
    return schema is not None


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any],
                          schema: Mapping[str, Any] | None, resolve: Resolver) -> dict[str, Any]:
    """Kubernetes' strategic merge patch of `original` by `patch` (see the module docstring).

    `schema` is the definition of the object's kind (`io.k8s.api.core.v1.Pod`), `resolve` turns its
    `$ref`s into definitions. Without a schema this is an RFC 7386 merge patch.
    """
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    if not isinstance(original, dict):
        raise PatchError("a strategic merge patch applies to a JSON object")
    if schema is None:
        merged: dict[str, Any] = json_merge_patch(original, patch)
        return merged
    return _StrategicMerge(resolve).merge_map(_copy(original), patch, schema)


class _Field(NamedTuple):
    """What the schema says about one field: its schema (a list's: its items'), strategy, merge key."""

    schema: Mapping[str, Any] | None
    strategy: str
    merge_key: str


_UNKNOWN_FIELD: Final = _Field(None, "", "")


def _patch_strategy(text: str) -> str:
    """The merge strategy in `x-kubernetes-patch-strategy` once `retainKeys` is set aside."""
    strategies = text.split(",") if text else []
    if len(strategies) == 2 and "retainKeys" in strategies:
        strategies.remove("retainKeys")
    if len(strategies) > 1:
        raise PatchError(f"unexpected patch strategy: {text}")
    return "" if not strategies or strategies[0] == "retainKeys" else strategies[0]


def _is_directive_key(key: str) -> bool:
    return key == _RETAIN_KEYS or key.startswith((_SET_ELEMENT_ORDER, _DELETE_FROM_PRIMITIVE_LIST))


def _strip(value: Any) -> tuple[Any, bool]:
    """A copy of a patch value taken as is, without nulls in maps and directives; (_, False): drop it.

    A map carrying `$patch` is dropped whole, as apimachinery does for values new to the object.
    """
    if isinstance(value, dict):
        if _DIRECTIVE in value:
            return None, False
        stripped: dict[str, Any] = {}
        for key, item in value.items():
            if item is not None and not _is_directive_key(key):
                item, keep = _strip(item)
                if keep:
                    stripped[key] = item
        return stripped, True
    if isinstance(value, list):
        items = []
        for item in value:
            item, keep = _strip(item)
            if keep:
                items.append(item)
        return items, True
    return value, True


def _list_directive_key(key: str, prefix: str, error: str) -> str:
    """`$setElementOrder/containers` -> `containers`."""
    head, slash, rest = key.partition("/")
    if not slash or head != prefix:
        raise PatchError(error)
    return rest


def _element_kind(*lists: Sequence[Any]) -> str:
    """`map` or `scalar`: what all the items of `lists` are; mixed items or nested lists are errors."""
    kind = ""
    for items in lists:
        for item in items:
            if isinstance(item, list):
                raise PatchError("lists of lists are not supported")
            item_kind = "map" if isinstance(item, dict) else _scalar_class(item)
            if kind and kind != item_kind:
                raise PatchError("list element types are not identical")
            kind = item_kind
    return "map" if kind == "map" else "scalar"


def _scalar_class(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def _identity(value: Any) -> tuple[str, Any]:
    """A hashable stand-in for a scalar that keeps true and 1 apart (Go's == on interface values)."""
    if isinstance(value, dict | list):
        raise PatchError(f"cannot compare {value!r}: merge keys and merged list items must be scalars")
    return _scalar_class(value), value


def _merge_key_value(item: Any, merge_key: str) -> tuple[str, Any]:
    """The identity of a merging list's item: its merge key's value (itself for scalars)."""
    if not merge_key:
        return _identity(item)
    if not isinstance(item, dict):
        raise PatchError(f"expected a map, but received {item!r}")
    if merge_key not in item:
        raise PatchError(f"map: {item} does not contain declared merge key: {merge_key}")
    return _identity(item[merge_key])


def _positions(order: Sequence[Any], merge_key: str) -> dict[tuple[str, Any], int]:
    """The first position of each identity in `order`."""
    positions: dict[tuple[str, Any], int] = {}
    for position, item in enumerate(order):
        positions.setdefault(_merge_key_value(item, merge_key), position)
    return positions


def _partition(merged: Sequence[Any], by: Sequence[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    """(items of `merged` present in `by`, the others), each in `merged` order."""
    present = _positions(by, merge_key)
    inside: list[Any] = []
    outside: list[Any] = []
    for item in merged:
        (inside if _merge_key_value(item, merge_key) in present else outside).append(item)
    return inside, outside


def _normalize_order(patch_items: list[Any], server_only: list[Any], patch_order: Sequence[Any],
                     server_order: Sequence[Any], merge_key: str) -> list[Any]:
    """apimachinery's order for a merged list.

    The items named by the patch (`patch_items`) keep the patch order, the others the live order;
    the two runs are then interleaved, taking a live item first only when both it and the next patch
    item were in the live list and it came first there.
    """
    patch_positions = _positions(patch_order, merge_key)
    server_positions = _positions(server_order, merge_key)
    for items, positions, unknown in ((patch_items, patch_positions, len(patch_order)),
                                      (server_only, server_positions, len(server_order))):
        items.sort(key=lambda item: positions.get(_merge_key_value(item, merge_key), unknown))
    merged: list[Any] = []
    i = j = 0
    while i < len(server_only) and j < len(patch_items):
        left = server_positions.get(_merge_key_value(server_only[i], merge_key))
        right = server_positions.get(_merge_key_value(patch_items[j], merge_key))
        if left is not None and right is not None and left < right:
            merged.append(server_only[i])
            i += 1
        else:
            merged.append(patch_items[j])
            j += 1
    merged.extend(server_only[i:])
    merged.extend(patch_items[j:])
    return merged


class _StrategicMerge:
    """One strategic merge: merges patch maps into maps it owns (copies of the original), in place."""

    __slots__ = ("_resolve",)

    def __init__(self, resolve: Resolver) -> None:
        self._resolve = resolve

    def _definition(self, schema: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        while schema is not None and "$ref" in schema:
            schema = self._resolve(schema["$ref"])
        return schema

    def _field(self, schema: Mapping[str, Any] | None, key: str, *, items: bool) -> _Field:
        definition = self._definition(schema)
        if definition is None:
            return _UNKNOWN_FIELD
        field = (definition.get("properties") or {}).get(key)
        if field is None:
            field = definition.get("additionalProperties")
            if not isinstance(field, Mapping):
                return _UNKNOWN_FIELD
        strategy = _patch_strategy(field.get("x-kubernetes-patch-strategy", ""))
        merge_key = field.get("x-kubernetes-patch-merge-key", "")
        if items:
            field_definition = self._definition(field)
            item_schema = None if field_definition is None else field_definition.get("items")
            return _Field(item_schema, strategy, merge_key)
        return _Field(field, strategy, merge_key)

    def merge_map(self, original: dict[str, Any], patch: Mapping[str, Any],
                  schema: Mapping[str, Any] | None) -> dict[str, Any]:
        """Merge `patch` into `original` (changed in place) and return the result.

        The steps and their order are apimachinery's: a `$patch` directive, then `$retainKeys`, then
        the lists with a `$setElementOrder`, then every other key.
        """
        if _DIRECTIVE in patch:
            directive = patch[_DIRECTIVE]
            if directive == "replace":
                replaced: dict[str, Any] = _strip({k: v for k, v in patch.items() if k != _DIRECTIVE})[0]
                return replaced
            if directive == "delete":
                return {}
            raise PatchError(f"unknown patch type: {directive} in map: {dict(patch)}")
        if _RETAIN_KEYS in patch:
            _retain_keys(original, patch)
        done = self._set_element_orders(original, patch, schema) if any(
            key.startswith(_SET_ELEMENT_ORDER) for key in patch) else ()
        for key, value in patch.items():
            if key in done or key == _RETAIN_KEYS:
                continue
            delete_list = key.startswith(_DELETE_FROM_PRIMITIVE_LIST)
            if delete_list:
                key = _list_directive_key(key, _DELETE_FROM_PRIMITIVE_LIST, _BAD_PRIMITIVE_LIST)
            if value is None:
                original.pop(key, None)
                continue
            current = original.get(key, _ABSENT)
            if isinstance(current, dict) and isinstance(value, dict):
                field = self._field(schema, key, items=False)
                if field.strategy == "replace":
                    original[key], _ = _strip({k: v for k, v in value.items() if k != _DIRECTIVE})
                else:
                    original[key] = self.merge_map(current, value, field.schema)
            elif isinstance(current, list) and isinstance(value, list):
                original[key] = self._merge_list_field(current, value, self._field(schema, key, items=True),
                                                       delete_list)[0]
            elif delete_list and type(current) is not type(value):
                continue  # nothing to delete from (a scalar of the same type is set, as in Go)
            else:
                stripped, keep = _strip(value)
                if keep:
                    original[key] = stripped
                else:
                    original.pop(key, None)
        return original

    def _set_element_orders(self, original: dict[str, Any], patch: Mapping[str, Any],
                            schema: Mapping[str, Any] | None) -> set[str]:
        """Merge each list that has a `$setElementOrder`, put it in that order; the keys handled."""
        done: set[str] = set()
        for key, order in patch.items():
            if not key.startswith(_SET_ELEMENT_ORDER):
                continue
            done.add(key)
            if not isinstance(order, list):
                raise PatchError(_BAD_SET_ELEMENT_ORDER)
            list_key = _list_directive_key(key, _SET_ELEMENT_ORDER, _BAD_SET_ELEMENT_ORDER)
            live = original.get(list_key, _ABSENT)
            patch_list = patch.get(list_key, _ABSENT)
            for value in (live, patch_list):
                if value is not _ABSENT and not isinstance(value, list):
                    raise PatchError(f"{list_key}: expected a list, but received {value!r}")
            field = self._field(schema, list_key, items=True)
            _check_order(patch_list if patch_list is not _ABSENT else [], order, field.merge_key)
            if patch_list is _ABSENT:
                if live is _ABSENT:
                    continue
                merged, live_order = live, live
            elif live is _ABSENT:
                merged, live_order = _strip(patch_list)[0], []
            else:
                merged, live_order = self._merge_list_field(live, patch_list, field, False)
            done.add(list_key)
            patch_items, server_only = _partition(merged, order, field.merge_key)
            original[list_key] = _normalize_order(patch_items, server_only, order, live_order,
                                                  field.merge_key)
        return done

    def _merge_list_field(self, original: list[Any], patch: list[Any], field: _Field,
                          delete_list: bool) -> tuple[list[Any], list[Any]]:
        """Merge a list field: (the merged list, the live order a `$setElementOrder` then goes by).

        That live order is the live list, except after `$patch: delete` items: apimachinery deletes
        them in place in the live list's array and appends the new items to that same array, so the
        order it sees is the items left followed by as many new items as were deleted. The order of
        the result depends on it, hence the second value.
        """
        if field.strategy != "merge" and not delete_list:  # a deletion list deletes whatever the strategy
            return _strip(patch)[0], original
        if not original and not patch:
            return original, original
        if _element_kind(original, patch) == "scalar":
            if delete_list:
                dropped = {_identity(item) for item in patch}
                return [item for item in original if _identity(item) not in dropped], original
            seen: set[tuple[str, Any]] = set()
            merged = []
            for item in (*original, *patch):
                identity = _identity(item)
                if identity not in seen:
                    seen.add(identity)
                    merged.append(item)
            patch_items, server_only = _partition(merged, patch, "")
            return _normalize_order(patch_items, server_only, patch, original, ""), original
        merge_key = field.merge_key
        if not merge_key:
            raise PatchError("cannot merge lists of maps without a merge key")
        left, plain, replace = _apply_item_directives(original, patch, merge_key)
        base = [_strip(item)[0] for item in plain] if replace else left
        if replace:
            plain = []
        merged = list(base)
        added: list[Any] = []
        for item in plain:
            value = _merge_key_value(item, merge_key)
            for position, candidate in enumerate(merged):
                if merge_key in candidate and _identity(candidate[merge_key]) == value:
                    merged[position] = self.merge_map(candidate, item, field.schema)
                    break
            else:
                added.append(_strip(item)[0])
                merged.append(added[-1])
        patch_items, server_only = _partition(merged, plain, merge_key)
        live_order = left if replace else left + added[: len(original) - len(left)]
        return _normalize_order(patch_items, server_only, plain, base, merge_key), live_order


def _retain_keys(original: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """`$retainKeys`: drop the keys of `original` it does not list; the patch may only set listed keys."""
    retained = patch[_RETAIN_KEYS]
    if not isinstance(retained, list):
        raise PatchError(_BAD_RETAIN_KEYS)
    keys = {key for key in retained if isinstance(key, str)}
    for key, value in patch.items():
        if value is not None and key != _RETAIN_KEYS and key not in keys and not key.startswith(
                (_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
            raise PatchError(_BAD_RETAIN_KEYS)
    for key in [key for key in original if key not in keys]:
        del original[key]


def _apply_item_directives(original: list[Any], patch: list[Any],
                           merge_key: str) -> tuple[list[Any], list[Any], bool]:
    """Apply the `$patch` items of a merging list: (live items left, plain patch items, replace?)."""
    plain: list[Any] = []
    replace = False
    for item in patch:
        if _DIRECTIVE not in item:
            plain.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == "delete":
            deleted = _merge_key_value(item, merge_key)
            original = [live for live in original
                        if not (merge_key in live and _identity(live[merge_key]) == deleted)]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(f"unknown patch type: {directive} in map: {item}")
    return original, plain, replace


def _check_order(patch_list: Sequence[Any], order: Sequence[Any], merge_key: str) -> None:
    """The patch list's items (deletions aside) must appear in `$setElementOrder`, in the same order."""
    if not order or not patch_list:
        return
    items = [item for item in patch_list if not (merge_key and isinstance(item, dict)
                                                 and item.get(_DIRECTIVE) == "delete")]
    i = j = 0
    while i < len(items) and j < len(order):
        if isinstance(items[i], dict) and _DIRECTIVE in items[i]:
            i += 1
            continue
        if _merge_key_value(items[i], merge_key) == _merge_key_value(order[j], merge_key):
            i += 1
        j += 1
    if i < len(items):
        raise PatchError(f"the order in patch list:\n{list(patch_list)}\n doesn't match "
                         f"{_SET_ELEMENT_ORDER} list:\n{list(order)}")
