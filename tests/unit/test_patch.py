"""cloudcore.controlplane.api.patch: RFC 7386, RFC 6902 and Kubernetes strategic merge patch."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudcore.controlplane.api.patch import (
    PatchError,
    json_merge_patch,
    json_patch,
    strategic_merge_patch,
    strategic_merge_supported,
)

# -- RFC 7386 ---------------------------------------------------------------------------------------

# RFC 7386 appendix A, one row per example: (target, patch, result).
RFC7386_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    # section 3's example
    (
        {
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged",
        },
        {
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": None},
            "tags": ["example"],
        },
        {
            "title": "Hello!",
            "author": {"givenName": "John"},
            "tags": ["example"],
            "content": "This will be unchanged",
            "phoneNumber": "+01-123-456-7890",
        },
    ),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_EXAMPLES)
def test_json_merge_patch_rfc7386_examples(target: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy((target, patch))
    assert json_merge_patch(target, patch) == expected
    assert (target, patch) == before


def test_json_merge_patch_result_shares_nothing_with_inputs() -> None:
    target = {"keep": {"deep": [1, 2]}, "a": 1}
    patch = {"new": {"list": [{"x": 1}]}, "a": 2}
    result = json_merge_patch(target, patch)
    result["keep"]["deep"].append(3)
    result["new"]["list"][0]["x"] = 9
    assert target == {"keep": {"deep": [1, 2]}, "a": 1}
    assert patch == {"new": {"list": [{"x": 1}]}, "a": 2}


def _reference_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386's pseudo code, verbatim."""
    if isinstance(patch, dict):
        result = dict(target) if isinstance(target, dict) else {}
        for name, value in patch.items():
            if value is None:
                result.pop(name, None)
            else:
                result[name] = _reference_merge_patch(result.get(name), value)
        return result
    return patch


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False)
)
_KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON, JSON)
def test_json_merge_patch_matches_the_rfc_pseudo_code(target: Any, patch: Any) -> None:
    before = copy.deepcopy((target, patch))
    assert json_merge_patch(target, patch) == _reference_merge_patch(target, patch)
    assert (target, patch) == before


# -- RFC 6902 ---------------------------------------------------------------------------------------

# RFC 6902 appendix A: (document, patch, result); A.13 (duplicate "op" members) cannot exist once
# the body is parsed into a dict, so it is not here.
RFC6902_EXAMPLES: list[tuple[str, Any, list[dict[str, Any]], Any]] = [
    (
        "A.1 add an object member",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux"}],
        {"baz": "qux", "foo": "bar"},
    ),
    (
        "A.2 add an array element",
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    (
        "A.3 remove an object member",
        {"baz": "qux", "foo": "bar"},
        [{"op": "remove", "path": "/baz"}],
        {"foo": "bar"},
    ),
    (
        "A.4 remove an array element",
        {"foo": ["bar", "qux", "baz"]},
        [{"op": "remove", "path": "/foo/1"}],
        {"foo": ["bar", "baz"]},
    ),
    (
        "A.5 replace a value",
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        "A.6 move a value",
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        "A.7 move an array element",
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        "A.8 test a value: success",
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (
        "A.10 add a nested member object",
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        "A.11 ignore unrecognized elements",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
    ),
    (
        "A.14 ~ escape ordering",
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": 10}],
        {"/": 9, "~1": 10},
    ),
    (
        "A.16 add an array value",
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
]


@pytest.mark.parametrize(
    ("name", "document", "operations", "expected"), RFC6902_EXAMPLES, ids=[e[0] for e in RFC6902_EXAMPLES]
)
def test_json_patch_rfc6902_examples(
    name: str, document: Any, operations: list[dict[str, Any]], expected: Any
) -> None:
    before = copy.deepcopy((document, operations))
    assert json_patch(document, operations) == expected
    assert (document, operations) == before


RFC6902_ERRORS: list[tuple[str, Any, list[Any], str]] = [
    (
        "A.9 test a value: error",
        {"baz": "qux"},
        [{"op": "test", "path": "/baz", "value": "bar"}],
        "test operation failed at /baz",
    ),
    (
        "A.12 add to a nonexistent target",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz/bat", "value": "qux"}],
        "path /baz/bat does not exist",
    ),
    (
        "A.15 compare strings and numbers",
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": "10"}],
        "test operation failed at /~01",
    ),
    (
        "test a label",
        {"metadata": {"labels": {"a": "x"}}},
        [{"op": "test", "path": "/metadata/labels/a", "value": "y"}],
        "test operation failed at /metadata/labels/a",
    ),
    (
        "remove a missing member",
        {"spec": {}},
        [{"op": "remove", "path": "/spec/x"}],
        "path /spec/x does not exist",
    ),
    (
        "replace a missing member",
        {"spec": {}},
        [{"op": "replace", "path": "/spec/x", "value": 1}],
        "path /spec/x does not exist",
    ),
    (
        "index past the end",
        {"a": [1]},
        [{"op": "replace", "path": "/a/1", "value": 1}],
        "path /a/1 does not exist",
    ),
    ("add past the end", {"a": [1]}, [{"op": "add", "path": "/a/2", "value": 1}], "path /a/2 does not exist"),
    ("leading zero index", {"a": [1, 2]}, [{"op": "remove", "path": "/a/01"}], "path /a/01 does not exist"),
    ("'-' outside add", {"a": [1]}, [{"op": "remove", "path": "/a/-"}], "path /a/- does not exist"),
    ("through a scalar", {"a": 1}, [{"op": "add", "path": "/a/b", "value": 1}], "path /a/b does not exist"),
    (
        "move into own child",
        {"a": {"b": {}}},
        [{"op": "move", "from": "/a", "path": "/a/b/c"}],
        "cannot move /a into its own child /a/b/c",
    ),
    (
        "move a missing value",
        {"a": 1},
        [{"op": "move", "from": "/x", "path": "/y"}],
        "path /x does not exist",
    ),
    (
        "copy a missing value",
        {"a": 1},
        [{"op": "copy", "from": "/x", "path": "/y"}],
        "path /x does not exist",
    ),
    ("unknown op", {}, [{"op": "frob", "path": "/a"}], "unsupported op 'frob'"),
    ("no op", {}, [{"path": "/a"}], "unsupported op None"),
    ("no path", {}, [{"op": "add", "value": 1}], "operation 0 needs a string 'path'"),
    ("no value", {}, [{"op": "add", "path": "/a"}], "add operation at /a has no 'value'"),
    ("no from", {"a": 1}, [{"op": "move", "path": "/b"}], "operation 0 needs a string 'from'"),
    ("not an object", {}, ["add"], "operation 0 is not a JSON object"),
    ("bad pointer", {}, [{"op": "add", "path": "a", "value": 1}], "must be empty or start with '/'"),
    ("bad escape", {}, [{"op": "add", "path": "/a~2", "value": 1}], "'~' must be followed by '0' or '1'"),
    ("remove the root", {}, [{"op": "remove", "path": ""}], "cannot remove the whole document"),
]


@pytest.mark.parametrize(
    ("name", "document", "operations", "message"), RFC6902_ERRORS, ids=[e[0] for e in RFC6902_ERRORS]
)
def test_json_patch_errors(name: str, document: Any, operations: list[Any], message: str) -> None:
    before = copy.deepcopy(document)
    with pytest.raises(PatchError) as caught:
        json_patch(document, operations)
    assert message in str(caught.value)
    assert document == before


def test_json_patch_must_be_a_list() -> None:
    with pytest.raises(PatchError, match="array of operations"):
        json_patch({}, {"op": "add", "path": "/a", "value": 1})


def test_json_patch_whole_document_operations() -> None:
    assert json_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]
    assert json_patch({"a": 1}, [{"op": "add", "path": "", "value": {"b": 2}}]) == {"b": 2}
    assert json_patch({"a": 1}, [{"op": "test", "path": "", "value": {"a": 1.0}}]) == {"a": 1}
    assert json_patch({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a"}]) == {"a": {"b": 1}}


def test_json_patch_is_atomic_and_copies_values() -> None:
    document = {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1]}}
    value = {"nested": [1]}
    with pytest.raises(PatchError):
        json_patch(
            document,
            [
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "test", "path": "/spec/list/0", "value": 2},
            ],
        )
    assert document == {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1]}}
    result = json_patch(
        document, [{"op": "add", "path": "/x", "value": value}, {"op": "copy", "from": "/x", "path": "/y"}]
    )
    result["x"]["nested"].append(2)
    assert result["y"] == {"nested": [1]} and value == {"nested": [1]}


def test_json_patch_test_uses_json_equality() -> None:
    document = {"n": 1, "b": True, "o": {"x": [1, {"y": None}]}}
    assert (
        json_patch(
            document,
            [
                {"op": "test", "path": "/n", "value": 1.0},
                {"op": "test", "path": "/o", "value": {"x": [1.0, {"y": None}]}},
            ],
        )
        == document
    )
    for path, value in (("/n", True), ("/b", 1), ("/o", {"x": [1]}), ("/n", "1")):
        with pytest.raises(PatchError, match=f"test operation failed at {path}"):
            json_patch(document, [{"op": "test", "path": path, "value": value}])


def test_json_patch_escaped_pointers() -> None:
    document = {"metadata": {"annotations": {"example.com/a~b": "x"}}}
    assert json_patch(
        document, [{"op": "replace", "path": "/metadata/annotations/example.com~1a~0b", "value": "y"}]
    ) == {"metadata": {"annotations": {"example.com/a~b": "y"}}}


def _containers(document: Any, pointer: list[str]) -> Iterator[list[str]]:
    """Pointers (as token lists) of every object and array in the document."""
    if isinstance(document, dict | list):
        yield pointer
        items = document.items() if isinstance(document, dict) else enumerate(document)
        for key, value in items:
            yield from _containers(value, [*pointer, str(key)])


def _pointer(tokens: list[str]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=3), JSON, max_size=4), JSON, st.data())
def test_json_patch_add_then_remove_is_the_identity(
    document: dict[str, Any], value: Any, data: st.DataObject
) -> None:
    before = copy.deepcopy(document)
    parent_tokens = data.draw(st.sampled_from(list(_containers(document, []))))
    parent = _resolve_tokens(document, parent_tokens)
    if isinstance(parent, dict):
        key = data.draw(st.text(max_size=4).filter(lambda k: k not in parent))
        path = _pointer([*parent_tokens, key])
    else:
        path = _pointer([*parent_tokens, str(data.draw(st.integers(0, len(parent))))])
    added = json_patch(document, [{"op": "add", "path": path, "value": value}])
    assert json_patch(added, [{"op": "test", "path": path, "value": value}]) == added
    assert json_patch(added, [{"op": "remove", "path": path}]) == before
    assert document == before


def _resolve_tokens(document: Any, tokens: list[str]) -> Any:
    for token in tokens:
        document = document[token] if isinstance(document, dict) else document[int(token)]
    return document


# -- strategic merge patch: apimachinery's behaviour on a MergeItem-like schema ---------------------

_MERGE_ITEM_REF = "#/$defs/mergeItem"
TEST_DEFS: dict[str, Mapping[str, Any]] = {
    "mergeItem": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "value": {"type": "string"},
            "other": {"type": "string"},
            "mergingList": {
                "type": "array",
                "items": {"$ref": _MERGE_ITEM_REF},
                "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-patch-merge-key": "name",
            },
            "nonMergingList": {"type": "array", "items": {"$ref": _MERGE_ITEM_REF}},
            "mergingIntList": {
                "type": "array",
                "items": {"type": "integer"},
                "x-kubernetes-patch-strategy": "merge",
            },
            "nonMergingIntList": {"type": "array", "items": {"type": "integer"}},
            "mergeItemPtr": {
                "type": "array",
                "items": {"$ref": _MERGE_ITEM_REF},
                "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-patch-merge-key": "name",
            },
            "simpleMap": {"type": "object", "additionalProperties": {"type": "string"}},
            "replacingItem": {"type": "object", "x-kubernetes-patch-strategy": "replace"},
            "retainKeysMap": {
                "$ref": "#/$defs/retainKeysMergeItem",
                "x-kubernetes-patch-strategy": "retainKeys",
            },
            "retainKeysMergingList": {
                "type": "array",
                "items": {"$ref": _MERGE_ITEM_REF},
                "x-kubernetes-patch-strategy": "merge,retainKeys",
                "x-kubernetes-patch-merge-key": "name",
            },
        },
    },
    "retainKeysMergeItem": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "value": {"type": "string"},
            "other": {"type": "string"},
            "simpleMap": {"type": "object", "additionalProperties": {"type": "string"}},
            "mergingIntList": {
                "type": "array",
                "items": {"type": "integer"},
                "x-kubernetes-patch-strategy": "merge",
            },
            "mergingList": {
                "type": "array",
                "items": {"$ref": _MERGE_ITEM_REF},
                "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-patch-merge-key": "name",
            },
            "nonMergingList": {"type": "array", "items": {"$ref": _MERGE_ITEM_REF}},
        },
    },
}


def _test_resolve(ref: str) -> Mapping[str, Any]:
    return TEST_DEFS[ref.removeprefix("#/$defs/")]


def _smp(original: Any, patch: Any) -> Any:
    return strategic_merge_patch(original, patch, TEST_DEFS["mergeItem"], _test_resolve)


# (description, live object, patch, result) in YAML: the behaviour apimachinery's own SMP tests pin
# down (strategicpatch/patch_test.go), applied to the same kind of MergeItem schema.
CONFORMANCE = """
- - unique scalars when merging lists
  - {mergingIntList: [1, 2]}
  - {mergingIntList: [2, 3]}
  - {mergingIntList: [1, 2, 3]}
- - delete map from nested map ($patch delete leaves an empty map)
  - {simpleMap: {key1: "1", key2: "1"}}
  - {simpleMap: {$patch: delete}}
  - {simpleMap: {}}
- - delete all items from merging list
  - {mergingList: [{name: 1}, {name: 2}]}
  - {mergingList: [{$patch: replace}]}
  - {mergingList: []}
- - merge empty merging lists
  - {mergingList: []}
  - {mergingList: []}
  - {mergingList: []}
- - delete all keys from map
  - {name: 1, value: 1}
  - {$patch: replace}
  - {}
- - add key and delete all keys from map
  - {name: 1, value: 1}
  - {other: a, $patch: replace}
  - {other: a}
- - delete all duplicate entries in a merging list
  - {mergingList: [{name: 1}, {name: 1}, {name: 2, value: a}, {name: 3}, {name: 3}]}
  - {mergingList: [{name: 1, $patch: delete}, {name: 3, $patch: delete}]}
  - {mergingList: [{name: 2, value: a}]}
- - retainKeys map can delete a field when no retainKeys directive present
  - {retainKeysMap: {name: foo, value: a}}
  - {retainKeysMap: {value: null}}
  - {retainKeysMap: {name: foo}}
- - retainKeys list can change a field when no retainKeys directive present
  - {retainKeysMergingList: [{name: bar}, {name: foo, value: a}]}
  - {retainKeysMergingList: [{name: foo, value: b}]}
  - {retainKeysMergingList: [{name: bar}, {name: foo, value: b}]}
- - preserve the order from the patch in a merging list
  - {mergingList: [{name: 1}, {name: 2, value: b}, {name: 3}]}
  - {mergingList: [{name: 3, value: c}, {name: 1, value: a}, {name: 2, other: x}]}
  - {mergingList: [{name: 3, value: c}, {name: 1, value: a}, {name: 2, value: b, other: x}]}
- - preserve the order from the patch in a merging list 2
  - {mergingList: [{name: 1}, {name: 2, value: b}, {name: 3}]}
  - {mergingList: [{name: 3, value: c}, {name: 1, value: a}]}
  - {mergingList: [{name: 2, value: b}, {name: 3, value: c}, {name: 1, value: a}]}
- - preserve the order from the patch in a merging int list
  - {mergingIntList: [1, 2, 3]}
  - {mergingIntList: [3, 1, 2]}
  - {mergingIntList: [3, 1, 2]}
- - preserve the order from the patch in a merging int list 2
  - {mergingIntList: [1, 2, 3]}
  - {mergingIntList: [3, 1]}
  - {mergingIntList: [2, 3, 1]}
- - $setElementOrder contains an item that is not present in the list to be merged
  - {mergingList: [{name: 1}, {name: 3}]}
  - {$setElementOrder/mergingList: [{name: 3}, {name: 2}, {name: 1}], mergingList: [{name: 3, value: 3},
      {name: 1, value: 1}]}
  - {mergingList: [{name: 3, value: 3}, {name: 1, value: 1}]}
- - $setElementOrder contains an item that is not present in the int list to be merged
  - {mergingIntList: [1, 3]}
  - {$setElementOrder/mergingIntList: [3, 2, 1]}
  - {mergingIntList: [3, 1]}
- - $deleteFromPrimitiveList of a missing item does not add it
  - {mergingIntList: [1, 2]}
  - {$deleteFromPrimitiveList/mergingIntList: [3]}
  - {mergingIntList: [1, 2]}
- - $deleteFromPrimitiveList on a null list leaves it alone
  - {mergingIntList: null}
  - {$deleteFromPrimitiveList/mergingIntList: [3]}
  - {mergingIntList: null}
- - $deleteFromPrimitiveList on a missing list does not add it
  - {foo: [bar]}
  - {$deleteFromPrimitiveList/mergingIntList: [3]}
  - {foo: [bar]}
- - $deleteFromPrimitiveList deletes from a merging list
  - {mergingIntList: [1, 2, 3]}
  - {$deleteFromPrimitiveList/mergingIntList: [2]}
  - {mergingIntList: [1, 3]}
- - $deleteFromPrimitiveList deletes from a list without the merge strategy
  - {nonMergingIntList: [1, 2, 3]}
  - {$deleteFromPrimitiveList/nonMergingIntList: [2]}
  - {nonMergingIntList: [1, 3]}
- - nil patch
  - {name: 1}
  - {}
  - {name: 1}
- - add field and delete field from map
  - {name: 1, other: a}
  - {name: null, value: 1}
  - {value: 1, other: a}
- - delete field from nested map
  - {simpleMap: {key1: "1", key2: "1", other: a}}
  - {simpleMap: {key2: null}}
  - {simpleMap: {key1: "1", other: a}}
- - replace list of scalars
  - {nonMergingIntList: [1, 4]}
  - {nonMergingIntList: [2, 3]}
  - {nonMergingIntList: [2, 3]}
- - delete all maps from merging list
  - {mergingList: [{name: 1, other: a}, {name: 2, other: b}]}
  - {mergingList: [{name: 1, $patch: delete}, {name: 2, $patch: delete}]}
  - {mergingList: []}
- - null values are not added
  - {name: a, other: a}
  - {name: 1, value: 1, other: null}
  - {name: 1, value: 1}
- - nested patch merge with an empty list drops the deletion
  - {name: hi}
  - {mergingList: [{name: hello}, {$patch: delete, name: doesntexist}]}
  - {name: hi, mergingList: [{name: hello}]}
- - nested patch merge with setElementOrder and a deletion
  - {name: hi, mergingList: [{name: hello2}]}
  - {$setElementOrder/mergingList: [{name: hello}, {name: doesntexist}], mergingList: [{name: hello},
      {$patch: delete, name: doesntexist}]}
  - {name: hi, mergingList: [{name: hello}, {name: hello2}]}
- - delete items in lists of scalars
  - {mergingIntList: [1, 2, 3, 4]}
  - {$setElementOrder/mergingIntList: [1, 2], $deleteFromPrimitiveList/mergingIntList: [3]}
  - {mergingIntList: [1, 2, 4]}
- - delete all duplicate items in lists of scalars
  - {mergingIntList: [1, 2, 3, 3, 4]}
  - {$setElementOrder/mergingIntList: [1, 2], $deleteFromPrimitiveList/mergingIntList: [3]}
  - {mergingIntList: [1, 2, 4]}
- - add and delete items in lists of scalars
  - {mergingIntList: [1, 2, 3, 4]}
  - {$setElementOrder/mergingIntList: [1, 2, 4], $deleteFromPrimitiveList/mergingIntList: [3],
      mergingIntList: [4]}
  - {mergingIntList: [1, 2, 4]}
- - merge lists of maps
  - {mergingList: [{name: 1, other: a}, {name: 2, value: 2, other: b}]}
  - {$setElementOrder/mergingList: [{name: 4}, {name: 1}, {name: 2}, {name: 3}], mergingList: [{name: 4,
      value: 4}, {name: 3, value: 3}]}
  - {mergingList: [{name: 4, value: 4}, {name: 1, other: a}, {name: 2, value: 2, other: b}, {name: 3,
      value: 3}]}
- - add field to map in merging list with conflict
  - {mergingList: [{name: 1, other: a}, {name: 3, value: 2, other: b}]}
  - {$setElementOrder/mergingList: [{name: 1}, {name: 2}], mergingList: [{name: 1, value: 1}, {name: 2,
      value: 2}]}
  - {mergingList: [{name: 1, value: 1, other: a}, {name: 2, value: 2}, {name: 3, value: 2, other: b}]}
- - delete map from merging list
  - {mergingList: [{name: 1}, {name: 2, other: b}]}
  - {$setElementOrder/mergingList: [{name: 2}], mergingList: [{name: 1, $patch: delete}]}
  - {mergingList: [{name: 2, other: b}]}
- - delete missing map from merging list with conflict
  - {mergingList: [{name: 3, other: a}]}
  - {$setElementOrder/mergingList: [{name: 2}], mergingList: [{name: 2}, {name: 1, $patch: delete}]}
  - {mergingList: [{name: 2}, {name: 3, other: a}]}
- - add map and delete map from merging list
  - {mergingList: [{name: 1}, {name: 2, other: b}, {name: 4, other: c}]}
  - {$setElementOrder/mergingList: [{name: 2}, {name: 3}], mergingList: [{name: 3}, {name: 1,
      $patch: delete}]}
  - {mergingList: [{name: 2, other: b}, {name: 4, other: c}, {name: 3}]}
- - add map and delete map from merging list with conflict
  - {mergingList: [{name: 1, other: a}, {name: 4, other: c}]}
  - {$setElementOrder/mergingList: [{name: 2}, {name: 3}], mergingList: [{name: 2}, {name: 3}, {name: 1,
      $patch: delete}]}
  - {mergingList: [{name: 4, other: c}, {name: 2}, {name: 3}]}
- - delete field from map in merging list
  - {mergingList: [{name: 1, value: 1, other: a}, {name: 2, value: 2, other: b}]}
  - {$setElementOrder/mergingList: [{name: 1}, {name: 2}], mergingList: [{name: 1, value: null}]}
  - {mergingList: [{name: 1, other: a}, {name: 2, value: 2, other: b}]}
- - replace non merging list nested in merging list
  - {mergingList: [{name: 1, other: a, nonMergingList: [{name: 1}, {name: 2, value: 2}]}, {name: 2,
      other: b}]}
  - {$setElementOrder/mergingList: [{name: 1}, {name: 2}], mergingList: [{name: 1,
      nonMergingList: [{name: 1, value: 1}]}]}
  - {mergingList: [{name: 1, other: a, nonMergingList: [{name: 1, value: 1}]}, {name: 2, other: b}]}
- - add field to map in merging list nested in merging list with deletion conflict
  - {mergingList: [{name: 1, other: a, mergingList: [{name: 2, value: 2, other: d}]}, {name: 2, other: b}]}
  - {$setElementOrder/mergingList: [{name: 1}, {name: 2}],
      mergingList: [{$setElementOrder/mergingList: [{name: 2}, {name: 1}], name: 1, mergingList: [{name: 1,
      value: 1}]}]}
  - {mergingList: [{name: 1, other: a, mergingList: [{name: 2, value: 2, other: d}, {name: 1, value: 1}]},
      {name: 2, other: b}]}
- - add map to merging list by pointer
  - {mergeItemPtr: [{name: 1, other: a}, {name: 3}]}
  - {$setElementOrder/mergeItemPtr: [{name: 1}, {name: 2}], mergeItemPtr: [{name: 2}]}
  - {mergeItemPtr: [{name: 1, other: a}, {name: 2}, {name: 3}]}
- - add map to merging list by pointer with conflict
  - {mergeItemPtr: [{name: 3}]}
  - {$setElementOrder/mergeItemPtr: [{name: 1}, {name: 2}], mergeItemPtr: [{name: 1}, {name: 2}]}
  - {mergeItemPtr: [{name: 1}, {name: 2}, {name: 3}]}
- - merge lists of scalars
  - {mergingIntList: [1, 2, 4]}
  - {$setElementOrder/mergingIntList: [1, 2, 3], mergingIntList: [3]}
  - {mergingIntList: [1, 2, 3, 4]}
- - add an item in a list of primitives and preserve order
  - {mergingIntList: [1, 4, 2]}
  - {$setElementOrder/mergingIntList: [3, 1, 2], mergingIntList: [3]}
  - {mergingIntList: [3, 1, 4, 2]}
- - add an item in a list and preserve order
  - {mergingList: [{name: 1, other: a}, {name: 2, value: 2, other: b}]}
  - {$setElementOrder/mergingList: [{name: 3}, {name: 1}, {name: 2}], mergingList: [{name: 3, value: 3}]}
  - {mergingList: [{name: 3, value: 3}, {name: 1, other: a}, {name: 2, value: 2, other: b}]}
- - add multiple items in a list and preserve order
  - {mergingList: [{name: 1, other: a}, {name: 2, value: 2, other: b}]}
  - {$setElementOrder/mergingList: [{name: 1}, {name: 4}, {name: 2}, {name: 3}], mergingList: [{name: 4,
      value: 4}, {name: 3, value: 3}]}
  - {mergingList: [{name: 1, other: a}, {name: 4, value: 4}, {name: 2, value: 2, other: b}, {name: 3,
      value: 3}]}
- - delete an item in a list and preserve order
  - {mergingList: [{name: 1, other: a}, {name: 2, value: 2, other: b}, {name: 3, value: 3}]}
  - {$setElementOrder/mergingList: [{name: 2}, {name: 1}], mergingList: [{name: 3, $patch: delete}]}
  - {mergingList: [{name: 2, value: 2, other: b}, {name: 1, other: a}]}
- - add and delete an item in a list and preserve order
  - {mergingList: [{name: 1, other: a}, {name: 2, value: 2, other: b}, {name: 3, value: 3}]}
  - {$setElementOrder/mergingList: [{name: 4}, {name: 2}, {name: 1}], mergingList: [{name: 4, value: 4},
      {name: 3, $patch: delete}]}
  - {mergingList: [{name: 4, value: 4}, {name: 2, value: 2, other: b}, {name: 1, other: a}]}
- - set elements order in a list with server-only items 3
  - {mergingList: [{name: 1, other: a}, {name: 2, value: 2}, {name: 7}, {name: 9}, {name: 8}, {name: 3,
      value: 3}, {name: 4, value: 4}]}
  - {$setElementOrder/mergingList: [{name: 2}, {name: 1}, {name: 4}, {name: 3}]}
  - {mergingList: [{name: 2, value: 2}, {name: 1, other: a}, {name: 7}, {name: 9}, {name: 8}, {name: 4,
      value: 4}, {name: 3, value: 3}]}
- - set elements order in a int list with server-only items 2
  - {mergingIntList: [1, 2, 9, 3, 4]}
  - {$setElementOrder/mergingIntList: [2, 1, 4, 3]}
  - {mergingIntList: [2, 1, 9, 4, 3]}
- - add and delete an item in a int list and preserve order
  - {mergingIntList: [1, 2, 3]}
  - {$setElementOrder/mergingIntList: [4, 2, 1], mergingIntList: [4],
      $deleteFromPrimitiveList/mergingIntList: [3]}
  - {mergingIntList: [4, 2, 1]}
- - set element order for a merging list with duplicates
  - {mergingList: [{name: 1}, {name: 2, value: dup1}, {name: 3}, {name: 2, value: dup2}, {name: 4}]}
  - {$setElementOrder/mergingList: [{name: 2}, {name: 1}, {name: 4}, {name: 3}, {name: 2}]}
  - {mergingList: [{name: 2, value: dup1}, {name: 2, value: dup2}, {name: 1}, {name: 4}, {name: 3}]}
- - set element order for a merging int list with duplicates
  - {mergingIntList: [1, 2, 3, 2, 4]}
  - {$setElementOrder/mergingIntList: [2, 1, 4, 3, 2]}
  - {mergingIntList: [2, 2, 1, 4, 3]}
- - retainKeys map should clear defaulted field with conflict (discriminated union)
  - {retainKeysMap: {name: type1, value: foo}}
  - {retainKeysMap: {$retainKeys: [name, other], name: type2, other: bar}}
  - {retainKeysMap: {name: type2, other: bar}}
- - retainKeys map deletes a field and clears a field
  - {retainKeysMap: {name: foo, value: bar, other: a}}
  - {retainKeysMap: {$retainKeys: [name], value: null}}
  - {retainKeysMap: {name: foo}}
- - retainKeys map adds a field in a nested map
  - {retainKeysMap: {name: foo, value: bar, simpleMap: {key1: a, key3: c}}}
  - {retainKeysMap: {$retainKeys: [name, simpleMap, value], simpleMap: {key2: b}}}
  - {retainKeysMap: {name: foo, value: bar, simpleMap: {key1: a, key2: b, key3: c}}}
- - retainKeys map nested merging int list with no change
  - {retainKeysMap: {name: foo, mergingIntList: [1, 2, 3]}}
  - {retainKeysMap: {$retainKeys: [mergingIntList, name, value], $setElementOrder/mergingIntList: [1, 2],
      value: bar}}
  - {retainKeysMap: {name: foo, value: bar, mergingIntList: [1, 2, 3]}}
- - retainKeys map adds an item and deletes an item in nested merging int list
  - {retainKeysMap: {name: foo, mergingIntList: [1, 2, 3, 4]}}
  - {retainKeysMap: {$retainKeys: [mergingIntList, name], mergingIntList: [5],
      $deleteFromPrimitiveList/mergingIntList: [2], $setElementOrder/mergingIntList: [1, 3, 5]}}
  - {retainKeysMap: {name: foo, mergingIntList: [1, 3, 5, 4]}}
- - retainKeys map deletes nested merging list
  - {retainKeysMap: {name: foo, mergingList: [{name: a}, {name: b}]}}
  - {retainKeysMap: {$retainKeys: [name, value], value: bar, mergingList: null}}
  - {retainKeysMap: {name: foo, value: bar}}
- - retainKeys map deletes an item in nested merging list
  - {retainKeysMap: {name: foo, mergingList: [{name: a}, {name: b}, {name: x}]}}
  - {retainKeysMap: {$retainKeys: [mergingList, name], $setElementOrder/mergingList: [{name: a}],
      mergingList: [{name: b, $patch: delete}]}}
  - {retainKeysMap: {name: foo, mergingList: [{name: a}, {name: x}]}}
- - retainKeys list of maps clears a field
  - {retainKeysMergingList: [{name: bar}, {name: foo, value: a, other: x}]}
  - {$setElementOrder/retainKeysMergingList: [{name: bar}, {name: foo}],
      retainKeysMergingList: [{$retainKeys: [name, value], name: foo}]}
  - {retainKeysMergingList: [{name: bar}, {name: foo, value: a}]}
- - replace strategy replaces a map
  - {replacingItem: {a: 1, b: 2}}
  - {replacingItem: {b: 3}}
  - {replacingItem: {b: 3}}
"""

CONFORMANCE_CASES: list[list[Any]] = yaml.safe_load(CONFORMANCE)


@pytest.mark.parametrize(
    ("description", "live", "patch", "expected"),
    CONFORMANCE_CASES,
    ids=[case[0] for case in CONFORMANCE_CASES],
)
def test_strategic_merge_patch_as_apimachinery(
    description: str, live: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]
) -> None:
    before = copy.deepcopy((live, patch))
    assert _smp(live, patch) == expected
    assert (live, patch) == before


SMP_ERRORS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "setElementOrder and patch list disagree",
        {"mergingList": [{"name": 1}, {"name": 3}, {"name": 2}]},
        {
            "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
            "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}],
        },
        "doesn't match",
    ),
    (
        "setElementOrder and int patch list disagree",
        {"mergingIntList": [1, 3, 2]},
        {"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3, 1]},
        "doesn't match",
    ),
    (
        "missing merge key",
        {"mergingList": [{"name": 1, "value": "a"}]},
        {"mergingList": [{"value": "b"}]},
        "does not contain declared merge key: name",
    ),
    (
        "delete without merge key",
        {"mergingList": [{"name": 1}]},
        {"mergingList": [{"$patch": "delete"}]},
        "does not contain declared merge key: name",
    ),
    (
        "unknown map directive",
        {"simpleMap": {"a": "b"}},
        {"simpleMap": {"$patch": "frob"}},
        "unknown patch type: frob",
    ),
    (
        "unknown list directive",
        {"mergingList": [{"name": 1}]},
        {"mergingList": [{"name": 1, "$patch": "frob"}]},
        "unknown patch type: frob",
    ),
    (
        "merge directive in a list",
        {"mergingList": [{"name": 1}]},
        {"mergingList": [{"$patch": "merge"}]},
        "merging lists cannot yet be specified in the patch",
    ),
    ("list of lists", {"mergingIntList": [1]}, {"mergingIntList": [[2]]}, "lists of lists are not supported"),
    (
        "mixed element types",
        {"mergingIntList": [1]},
        {"mergingIntList": ["a"]},
        "list element types are not identical",
    ),
    (
        "retainKeys not a list",
        {"retainKeysMap": {"name": "a"}},
        {"retainKeysMap": {"$retainKeys": "name"}},
        "invalid patch format of retainKeys",
    ),
    (
        "patch field missing from retainKeys",
        {"retainKeysMap": {"name": "a"}},
        {"retainKeysMap": {"$retainKeys": ["name"], "value": "x"}},
        "invalid patch format of retainKeys",
    ),
    (
        "setElementOrder not a list",
        {"mergingList": []},
        {"$setElementOrder/mergingList": {}},
        "invalid patch format of setElementOrder list",
    ),
    (
        "malformed setElementOrder key",
        {},
        {"$setElementOrderX/a": []},
        "invalid patch format of setElementOrder list",
    ),
    (
        "malformed deleteFromPrimitiveList key",
        {},
        {"$deleteFromPrimitiveListX": [1]},
        "invalid patch format of primitive list",
    ),
]


@pytest.mark.parametrize(("name", "live", "patch", "message"), SMP_ERRORS, ids=[e[0] for e in SMP_ERRORS])
def test_strategic_merge_patch_errors(
    name: str, live: dict[str, Any], patch: dict[str, Any], message: str
) -> None:
    with pytest.raises(PatchError) as caught:
        _smp(live, patch)
    assert message in str(caught.value)


def test_strategic_merge_patch_needs_objects() -> None:
    with pytest.raises(PatchError, match="must be a JSON object"):
        strategic_merge_patch({}, [], TEST_DEFS["mergeItem"], _test_resolve)  # type: ignore[arg-type]
    with pytest.raises(PatchError, match="applies to a JSON object"):
        strategic_merge_patch([], {}, TEST_DEFS["mergeItem"], _test_resolve)  # type: ignore[arg-type]


# -- strategic merge patch on the real v1.30 schemas ------------------------------------------------


def _load_definitions() -> dict[str, Mapping[str, Any]]:
    path = (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / "v1.30.0-local"
        / "_definitions.json"
    )
    definitions: dict[str, Mapping[str, Any]] = orjson.loads(path.read_bytes())["$defs"]
    return definitions


DEFS = _load_definitions()


def _resolve(ref: str) -> Mapping[str, Any]:
    return DEFS[ref.removeprefix("#/$defs/")]


def _patcher(kind: str) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    schema = DEFS[kind]

    def apply(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        before = copy.deepcopy((original, patch))
        result = strategic_merge_patch(original, patch, schema, _resolve)
        assert (original, patch) == before, "an input was modified"
        assert not _directive_keys(result), f"directives leaked: {_directive_keys(result)}"
        return result

    return apply


def _directive_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [
            k
            for k in value
            if k == "$patch"
            or k == "$retainKeys"
            or k.startswith(("$setElementOrder", "$deleteFromPrimitiveList"))
        ]
        return own + [k for v in value.values() for k in _directive_keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _directive_keys(v)]
    return []


pod_patch = _patcher("io.k8s.api.core.v1.Pod")
deployment_patch = _patcher("io.k8s.api.apps.v1.Deployment")
node_patch = _patcher("io.k8s.api.core.v1.Node")


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "tier": "front"},
            "finalizers": ["a.example.com/x", "b.example.com/y"],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.25",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [
                        {"containerPort": 80, "protocol": "TCP"},
                        {"containerPort": 443, "protocol": "TCP"},
                    ],
                },
                {"name": "sidecar", "image": "envoy:1", "args": ["--a", "--b"]},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
            "tolerations": [{"key": "k1", "operator": "Exists"}, {"key": "k2", "operator": "Exists"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "z", "operator": "In", "values": ["a"]}]}
                        ]
                    }
                }
            },
            "nodeName": "edge-1",
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _names(items: list[dict[str, Any]]) -> list[Any]:
    return [item.get("name", item.get("containerPort")) for item in items]


def test_pod_containers_merge_by_name_and_keep_what_the_patch_does_not_name() -> None:
    result = pod_patch(_pod(), {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}})
    app, sidecar = result["spec"]["containers"]
    assert app["image"] == "nginx:1.27" and app["env"] == _pod()["spec"]["containers"][0]["env"]
    assert sidecar == _pod()["spec"]["containers"][1]


def test_new_list_items_go_where_apimachinery_puts_them() -> None:
    # The patch order wins over the live order: an added container listed alone comes first
    # (kubernetes.io "Update API Objects in Place Using kubectl patch": patch-demo-ctr-2 comes first).
    result = pod_patch(_pod(), {"spec": {"containers": [{"name": "redis", "image": "redis"}]}})
    assert _names(result["spec"]["containers"]) == ["redis", "app", "sidecar"]
    # Listed after a live item, it follows it.
    result = pod_patch(
        _pod(), {"spec": {"containers": [{"name": "app"}, {"name": "redis", "image": "redis"}]}}
    )
    assert _names(result["spec"]["containers"]) == ["app", "redis", "sidecar"]
    # kubectl apply sends $setElementOrder, which puts it exactly where the user wrote it.
    result = pod_patch(
        _pod(),
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}, {"name": "redis"}],
                "containers": [{"name": "redis", "image": "redis"}],
            }
        },
    )
    assert _names(result["spec"]["containers"]) == ["app", "sidecar", "redis"]


def test_env_and_ports_merge_by_their_keys() -> None:
    result = pod_patch(
        _pod(),
        {
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "env": [{"name": "B", "value": "two"}, {"name": "A", "$patch": "delete"}],
                        "ports": [{"containerPort": 443, "name": "https"}, {"containerPort": 8080}],
                    }
                ]
            }
        },
    )
    app = result["spec"]["containers"][0]
    assert app["env"] == [{"name": "B", "value": "two"}]
    assert app["ports"] == [
        {"containerPort": 80, "protocol": "TCP"},
        {"containerPort": 443, "protocol": "TCP", "name": "https"},
        {"containerPort": 8080},
    ]


def test_volumes_merge_by_name_and_honour_retain_keys() -> None:
    result = pod_patch(
        _pod(),
        {
            "spec": {
                "volumes": [
                    {"name": "data", "$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/srv"}}
                ]
            }
        },
    )
    assert result["spec"]["volumes"] == [
        {"name": "data", "hostPath": {"path": "/srv"}},
        {"name": "cfg", "configMap": {"name": "cfg"}},
    ]


def test_lists_without_a_strategy_are_replaced() -> None:
    result = pod_patch(
        _pod(),
        {
            "spec": {
                "tolerations": [{"key": "k3", "operator": "Exists"}],
                "containers": [{"name": "sidecar", "args": ["--c"]}],
            }
        },
    )
    assert result["spec"]["tolerations"] == [{"key": "k3", "operator": "Exists"}]
    assert result["spec"]["containers"][1]["args"] == ["--c"]


def test_finalizers_merge_as_a_set() -> None:
    live = _pod()
    assert pod_patch(live, {"metadata": {"finalizers": ["b.example.com/y", "c.example.com/z"]}})["metadata"][
        "finalizers"
    ] == ["a.example.com/x", "b.example.com/y", "c.example.com/z"]
    assert pod_patch(live, {"metadata": {"finalizers": ["c.example.com/z"]}})["metadata"]["finalizers"] == [
        "c.example.com/z",
        "a.example.com/x",
        "b.example.com/y",
    ]
    assert pod_patch(live, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example.com/x"]}})[
        "metadata"
    ]["finalizers"] == ["b.example.com/y"]
    assert "finalizers" not in pod_patch(live, {"metadata": {"finalizers": None}})["metadata"]


def test_labels_null_deletes_and_patch_replace_replaces() -> None:
    result = pod_patch(_pod(), {"metadata": {"labels": {"tier": None, "track": "canary"}}})
    assert result["metadata"]["labels"] == {"app": "web", "track": "canary"}
    result = pod_patch(_pod(), {"metadata": {"labels": {"$patch": "replace", "only": "this"}}})
    assert result["metadata"]["labels"] == {"only": "this"}


def test_patch_delete_of_a_container_and_of_a_map() -> None:
    result = pod_patch(
        _pod(),
        {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}], "affinity": {"$patch": "delete"}}},
    )
    assert _names(result["spec"]["containers"]) == ["app"]
    assert result["spec"]["affinity"] == {}  # apimachinery leaves an empty map, as Kubernetes stores it


def test_patch_replace_of_a_list() -> None:
    result = pod_patch(
        _pod(), {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}
    )
    assert result["spec"]["containers"] == [{"name": "only", "image": "x"}]


def test_set_element_order_reorders_a_live_list() -> None:
    result = pod_patch(
        _pod(), {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}
    )
    assert _names(result["spec"]["containers"]) == ["sidecar", "app"]


def test_node_status_conditions_merge_by_type() -> None:
    node = {
        "metadata": {"name": "edge-1"},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "t0"},
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "t0", "reason": "KubeletReady"},
            ],
            "capacity": {"cpu": "4", "memory": "8Gi"},
        },
    }
    # the shape kubelet (and edged) sends: a two-way merge patch with $setElementOrder
    patch = {
        "status": {
            "$setElementOrder/conditions": [
                {"type": "MemoryPressure"},
                {"type": "Ready"},
                {"type": "DiskPressure"},
            ],
            "conditions": [
                {"type": "Ready", "lastHeartbeatTime": "t1"},
                {"type": "DiskPressure", "status": "False", "lastHeartbeatTime": "t1"},
            ],
            "capacity": {"memory": "16Gi"},
        }
    }
    status = node_patch(node, patch)["status"]
    assert status["conditions"] == [
        {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "t0"},
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "t1", "reason": "KubeletReady"},
        {"type": "DiskPressure", "status": "False", "lastHeartbeatTime": "t1"},
    ]
    assert status["capacity"] == {"cpu": "4", "memory": "16Gi"}


def _deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.25"},
                        {"name": "log", "image": "fluent-bit:2"},
                    ]
                },
            },
        },
    }


def test_deployment_set_image_patch_shapes() -> None:
    plain = deployment_patch(
        _deployment(),
        {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}},
    )
    # what `kubectl set image` sends: a two-way merge patch with $setElementOrder
    kubectl = deployment_patch(
        _deployment(),
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "log"}],
                        "containers": [{"image": "nginx:1.27", "name": "nginx"}],
                    }
                }
            }
        },
    )
    expected = _deployment()
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.27"
    assert plain == expected and kubectl == expected


def test_deployment_strategy_retain_keys() -> None:
    result = deployment_patch(
        _deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    )
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    result = deployment_patch(_deployment(), {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 2}}}})
    assert result["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0},
    }


def test_rollout_restart_annotation() -> None:
    patch = {
        "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}
    }
    result = deployment_patch(_deployment(), patch)
    assert result["spec"]["template"]["metadata"] == {
        "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "now"},
    }


def test_directives_never_reach_the_result() -> None:
    # values new to the object: directives and nulls are dropped the way apimachinery drops them
    live: dict[str, Any] = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "x"}]},
    }
    result = pod_patch(
        live,
        {
            "metadata": {"labels": {"a": "1", "b": None}, "$retainKeys": ["name", "labels"]},
            "spec": {
                "containers": [
                    {
                        "name": "new",
                        "image": "y",
                        "env": [{"name": "X", "$patch": "delete"}, {"name": "Y"}],
                        "$setElementOrder/env": [{"name": "Y"}],
                        "resources": {"limits": None},
                    }
                ],
                "initContainers": [{"$patch": "replace"}, {"name": "init", "image": "z"}],
                "volumes": [{"name": "v", "emptyDir": {"$patch": "delete"}}],
                "affinity": {"$patch": "replace", "podAffinity": {}},
                "$setElementOrder/imagePullSecrets": [{"name": "s"}],
                "imagePullSecrets": [{"name": "s"}],
            },
        },
    )
    assert result["metadata"] == {"name": "p", "labels": {"a": "1"}}
    spec = result["spec"]
    assert spec["containers"][0] == {"name": "new", "image": "y", "env": [{"name": "Y"}], "resources": {}}
    assert spec["initContainers"] == [{"name": "init", "image": "z"}]
    assert spec["volumes"] == [{"name": "v"}]
    assert "affinity" not in spec  # a new map carrying $patch is dropped, as apimachinery does
    assert spec["imagePullSecrets"] == [{"name": "s"}]


def test_no_schema_means_json_merge_patch() -> None:
    live = {"spec": {"list": [{"name": "a", "x": 1}]}, "keep": 1}
    patch = {"spec": {"list": [{"name": "b"}], "$patch": "replace"}}
    assert strategic_merge_patch(live, patch, None, _resolve) == json_merge_patch(live, patch)
    assert strategic_merge_supported(None) is False
    assert strategic_merge_supported(DEFS["io.k8s.api.core.v1.Pod"]) is True


def test_result_shares_nothing_with_the_inputs() -> None:
    live = _pod()
    patch: dict[str, Any] = {"spec": {"containers": [{"name": "new", "env": [{"name": "E", "value": "1"}]}]}}
    result = pod_patch(live, patch)
    result["metadata"]["labels"]["x"] = "y"
    result["spec"]["volumes"].clear()
    result["spec"]["containers"][0]["env"][0]["value"] = "2"
    assert live == _pod()
    assert patch["spec"]["containers"][0]["env"][0]["value"] == "1"


_CONTAINER_NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
_CONTAINER_PATCH = st.fixed_dictionaries(
    {"name": _CONTAINER_NAMES}, optional={"image": st.sampled_from(["i1", "i2"]), "$patch": st.just("delete")}
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_CONTAINER_NAMES, unique=True, max_size=5), st.lists(_CONTAINER_PATCH, max_size=5))
def test_container_merge_matches_a_keyed_model(
    live_names: list[str], patch_items: list[dict[str, Any]]
) -> None:
    live = {"spec": {"containers": [{"name": n, "image": f"live-{n}"} for n in live_names]}}
    result = pod_patch(live, {"spec": {"containers": patch_items}})
    model: dict[str, str | None] = {n: f"live-{n}" for n in live_names}
    for item in (i for i in patch_items if i.get("$patch") == "delete"):
        model.pop(item["name"], None)
    for item in (i for i in patch_items if "$patch" not in i):
        model[item["name"]] = item.get("image", model.get(item["name"]))
    got = {c["name"]: c.get("image") for c in result["spec"]["containers"]}
    assert got == model
    assert len(result["spec"]["containers"]) == len(got)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        _SCALARS,
        lambda inner: st.lists(_SCALARS, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
        max_leaves=20,
    ).filter(lambda v: isinstance(v, dict)),
    st.recursive(
        _SCALARS,
        lambda inner: st.lists(_SCALARS, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
        max_leaves=20,
    ).filter(lambda v: isinstance(v, dict)),
)
def test_without_patch_strategies_smp_is_a_merge_patch(live: dict[str, Any], patch: dict[str, Any]) -> None:
    schema: Mapping[str, Any] = {"type": "object"}
    assert strategic_merge_patch(live, patch, schema, _resolve) == json_merge_patch(live, patch)
