"""cloudcore.controlplane.api.selectors: label and field selectors as apimachinery parses and matches them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudcore.controlplane.api.selectors import (
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    from_match_labels,
    label_selector_from_object,
    parse_field_selector,
    parse_label_selector,
)

_QNAME_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_DNS_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)

# -- label selector syntax --------------------------------------------------------------------------

# (selector, its canonical rendering: requirements sorted by key, set values sorted)
VALID_LABEL_SELECTORS = [
    ("", ""),
    ("a=b", "a=b"),
    ("a==b", "a==b"),
    ("a!=b", "a!=b"),
    ("a in (x,y)", "a in (x,y)"),
    ("a notin (x)", "a notin (x)"),
    ("a", "a"),
    ("!a", "!a"),
    ("a>1,b<2", "a>1,b<2"),
    ("a=", "a="),
    ("b=1,a=2", "a=2,b=1"),
    ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
    ("a in (,)", "a in ()"),
    ("a in (x,x,y,)", "a in (,x,y)"),
    (" a = b , c ", "a=b,c"),
    ("a\tin\n( y , x )", "a in (x,y)"),
    ("a in(x),!b", "a in (x),!b"),
    ("example.com/name=v", "example.com/name=v"),
    ("k8s.io/x-y_z.w=V-1.2_3", "k8s.io/x-y_z.w=V-1.2_3"),
    ("in in (in,notin)", "in in (in,notin)"),
    ("notin", "notin"),
    ("!in", "!in"),
    ("a=in", "a=in"),
]


@pytest.mark.parametrize(("text", "rendered"), VALID_LABEL_SELECTORS)
def test_valid_label_selectors(text: str, rendered: str) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == rendered
    assert parse_label_selector(rendered) == selector


def test_parsed_requirements() -> None:
    assert parse_label_selector("x in (foo,,baz),!y,z").requirements == (
        Requirement("x", Operator.IN, ("", "baz", "foo")),
        Requirement("y", Operator.DOES_NOT_EXIST),
        Requirement("z", Operator.EXISTS),
    )
    assert parse_label_selector("a==1,b>2").requirements == (
        Requirement("a", Operator.DOUBLE_EQUALS, ("1",)),
        Requirement("b", Operator.GREATER_THAN, ("2",)),
    )


INVALID_LABEL_SELECTORS = [
    ("a=-bad", f'unable to parse requirement: values[0][a]: Invalid value: "-bad": {_VALUE_RULE}'),
    (
        "a in (-x,-y)",
        f'unable to parse requirement: [values[0][a]: Invalid value: "-x": {_VALUE_RULE}, '
        f'values[1][a]: Invalid value: "-y": {_VALUE_RULE}]',
    ),
    (
        "a=" + "b" * 64,
        f'unable to parse requirement: values[0][a]: Invalid value: "{"b" * 64}": '
        "must be no more than 63 characters",
    ),
    ("-a", f'unable to parse requirement: <nil>: Invalid value: "-a": name part {_QNAME_RULE}'),
    (
        "a" * 64,
        f'unable to parse requirement: <nil>: Invalid value: "{"a" * 64}": '
        "name part must be no more than 63 characters",
    ),
    (
        "a/b/c",
        f'unable to parse requirement: <nil>: Invalid value: "a/b/c": a qualified name {_QNAME_RULE} '
        "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    ),
    (
        "Example.com/a",
        f'unable to parse requirement: <nil>: Invalid value: "Example.com/a": prefix part {_DNS_RULE}',
    ),
    ("/a", 'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty'),
    (
        "a/",
        f'unable to parse requirement: <nil>: Invalid value: "a/": name part must be non-empty; '
        f"name part {_QNAME_RULE}",
    ),
    ('a"b=c', f'unable to parse requirement: <nil>: Invalid value: "a\\"b": name part {_QNAME_RULE}'),
    ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    ("a!", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"),
    ("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'"),
    ("a in", "unable to parse requirement: found '' expected: '('"),
    ("a in x", "unable to parse requirement: found 'x' expected: '('"),
    ("a in (", "unable to parse requirement: found '', expected: ',', ')' or identifier"),
    ("a in (x,", "unable to parse requirement: found '', expected: ',', or identifier"),
    ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
    ("a=(", "unable to parse requirement: found '(', expected: identifier"),
    ("a!==b", "unable to parse requirement: found '=', expected: identifier"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    (
        "a>x",
        'unable to parse requirement: values[0]: Invalid value: "x": '
        "for 'Gt', 'Lt' operators, the value must be an integer",
    ),
    ("a>-1", f'unable to parse requirement: values[0][a]: Invalid value: "-1": {_VALUE_RULE}'),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("a,", "found '', expected: identifier after ','"),
    ("a,,b", "found ',', expected: identifier after ','"),
    ("=a", "found '=', expected: !, identifier, or 'end of string'"),
    (",", "found ',', expected: !, identifier, or 'end of string'"),
]


@pytest.mark.parametrize(("text", "message"), INVALID_LABEL_SELECTORS)
def test_invalid_label_selectors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(text)
    assert str(caught.value) == message


# -- label selector matching ------------------------------------------------------------------------

MATCHES = [
    ("", {}, True),
    ("a=b", {"a": "b"}, True),
    ("a=b", {"a": "c"}, False),
    ("a=b", {}, False),
    ("a==b", {"a": "b"}, True),
    ("a!=b", {}, True),
    ("a!=b", {"a": "b"}, False),
    ("a!=b", {"a": "c"}, True),
    ("a in (x,y)", {"a": "y"}, True),
    ("a in (x,y)", {"a": "z"}, False),
    ("a in (x,y)", {}, False),
    ("a notin (x)", {}, True),
    ("a notin (x)", {"a": "x"}, False),
    ("a notin (x)", {"a": "y"}, True),
    ("a", {"a": ""}, True),
    ("a", {"b": "a"}, False),
    ("!a", {}, True),
    ("!a", {"a": ""}, False),
    ("a=", {"a": ""}, True),
    ("a=", {}, False),
    ("a>5", {"a": "6"}, True),
    ("a>5", {"a": "5"}, False),
    ("a>5", {"a": "x"}, False),
    ("a>5", {}, False),
    ("a<5", {"a": "-7"}, True),
    ("a<5", {"a": "+4"}, True),
    ("a<5", {"a": " 4"}, False),
    ("a<5", {"a": "99999999999999999999"}, False),
    ("a=b,c", {"a": "b", "c": "x"}, True),
    ("a=b,c", {"a": "b"}, False),
    ("app=web,tier notin (db),!canary", {"app": "web", "tier": "front"}, True),
    ("app=web,tier notin (db),!canary", {"app": "web", "canary": "true"}, False),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MATCHES)
def test_label_selector_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


def test_everything_and_nothing() -> None:
    everything, nothing = LabelSelector.everything(), LabelSelector.nothing()
    assert everything.empty and everything.matches({}) and everything.matches({"a": "b"})
    assert not nothing.empty and not nothing.matches({}) and not nothing.matches({"a": "b"})
    assert parse_label_selector("").empty and not parse_label_selector("a").empty
    assert str(everything) == str(nothing) == ""


# -- metav1.LabelSelector and plain maps ------------------------------------------------------------


def test_label_selector_from_object_null_selects_nothing_and_empty_everything() -> None:
    assert label_selector_from_object(None) == LabelSelector.nothing()
    assert label_selector_from_object({}) == LabelSelector.everything()
    assert label_selector_from_object({"matchLabels": {}, "matchExpressions": []}).empty
    assert label_selector_from_object({"matchLabels": None}).matches({"x": "y"})


def test_label_selector_from_object() -> None:
    selector = label_selector_from_object(
        {
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "track", "operator": "NotIn", "values": ["canary"]},
                {"key": "owner", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []},
            ],
        }
    )
    assert str(selector) == "app=web,env in (prod,staging),!legacy,owner,tier=front,track notin (canary)"
    labels = {"app": "web", "tier": "front", "env": "prod", "owner": "me"}
    assert selector.matches(labels)
    assert not selector.matches({**labels, "track": "canary"})
    assert not selector.matches({**labels, "legacy": ""})
    assert not selector.matches({**labels, "env": "dev"})
    assert not selector.matches({k: v for k, v in labels.items() if k != "owner"})


INVALID_OBJECTS = [
    ({"matchExpressions": [{"key": "a", "operator": "Foo"}]}, '"Foo" is not a valid label selector operator'),
    ({"matchExpressions": [{"key": "a"}]}, '"" is not a valid label selector operator'),
    (
        {"matchExpressions": [{"key": "a", "operator": "In"}]},
        "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty",
    ),
    (
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]},
        'values: Invalid value: []string{"x", "y"}: values set must be empty for exists and does not exist',
    ),
    ({"matchLabels": {"-a": "b"}}, f'key: Invalid value: "-a": name part {_QNAME_RULE}'),
    ({"matchLabels": {"app": "-b"}}, f'values[0][app]: Invalid value: "-b": {_VALUE_RULE}'),
    (
        {"matchExpressions": [{"key": "-a", "operator": "NotIn", "values": ["ok", "-b"]}]},
        f'[key: Invalid value: "-a": name part {_QNAME_RULE}, '
        f'values[1][-a]: Invalid value: "-b": {_VALUE_RULE}]',
    ),
]


@pytest.mark.parametrize(("selector", "message"), INVALID_OBJECTS)
def test_invalid_label_selector_objects(selector: dict[str, object], message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        label_selector_from_object(selector)
    assert str(caught.value) == message


def test_from_match_labels() -> None:
    assert from_match_labels(None).empty and from_match_labels({}).empty
    selector = from_match_labels({"tier": "front", "app": "web"})
    assert str(selector) == "app=web,tier=front"
    assert selector.matches({"app": "web", "tier": "front", "x": "y"})
    assert not selector.matches({"app": "web"})
    assert not selector.matches({"app": "web", "tier": "back"})


# -- field selectors --------------------------------------------------------------------------------


def test_field_selector_parsing_and_matching() -> None:
    selector = parse_field_selector("spec.nodeName=edge-1,status.phase!=Succeeded,metadata.name==web")
    assert selector.requirements == (
        FieldRequirement("metadata.name", Operator.EQUALS, "web"),
        FieldRequirement("spec.nodeName", Operator.EQUALS, "edge-1"),
        FieldRequirement("status.phase", Operator.NOT_EQUALS, "Succeeded"),
    )
    assert [r.field for r in selector.requirements] == ["metadata.name", "spec.nodeName", "status.phase"]
    fields = {"metadata.name": "web", "spec.nodeName": "edge-1", "status.phase": "Running"}
    assert selector.matches(fields)
    assert selector.matches({"metadata.name": "web", "spec.nodeName": "edge-1"})  # missing phase is ""
    assert not selector.matches({**fields, "status.phase": "Succeeded"})
    assert not selector.matches({**fields, "spec.nodeName": "edge-2"})
    assert str(selector) == "metadata.name=web,spec.nodeName=edge-1,status.phase!=Succeeded"


def test_a_missing_field_matches_as_empty() -> None:
    assert parse_field_selector("spec.nodeName=").matches({})
    assert not parse_field_selector("spec.nodeName!=").matches({})
    assert parse_field_selector("spec.nodeName!=edge-1").matches({})


def test_empty_field_selectors() -> None:
    for text in ("", ",", ",,"):
        selector = parse_field_selector(text)
        assert selector.empty and selector.requirements == () and selector.matches({"a": "b"})
    assert not parse_field_selector("a=b").empty
    assert FieldSelector().empty


def test_field_selector_escapes() -> None:
    assert parse_field_selector(r"x=a\,b").requirements == (FieldRequirement("x", Operator.EQUALS, "a,b"),)
    assert parse_field_selector(r"x=a\=b").requirements == (FieldRequirement("x", Operator.EQUALS, "a=b"),)
    assert parse_field_selector(r"x=a\\b").requirements == (FieldRequirement("x", Operator.EQUALS, "a\\b"),)
    selector = parse_field_selector(r"y=c,x=a\,b\\")
    assert selector.requirements == (
        FieldRequirement("x", Operator.EQUALS, "a,b\\"),
        FieldRequirement("y", Operator.EQUALS, "c"),
    )
    assert str(selector) == r"x=a\,b\\,y=c"
    assert parse_field_selector(str(selector)) == selector


def test_field_selector_keeps_spaces() -> None:
    assert parse_field_selector("a = b").requirements == (FieldRequirement("a ", Operator.EQUALS, " b"),)


INVALID_FIELD_SELECTORS = [
    ("bad", "invalid selector: 'bad'; can't understand 'bad'"),
    ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
    ("x=a=b", "invalid field selector: unescaped character in value: 61"),
    ("x==a=b", "invalid field selector: unescaped character in value: 61"),
    ("x!==b", "invalid field selector: unescaped character in value: 61"),
    (r"x=a\q", "invalid field selector: invalid escape sequence: \\q"),
    ("x=a\\", "invalid field selector: invalid escape sequence: \\"),
]


@pytest.mark.parametrize(("text", "message"), INVALID_FIELD_SELECTORS)
def test_invalid_field_selectors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_field_selector(text)
    assert str(caught.value) == message


# -- properties -------------------------------------------------------------------------------------

_NAME = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", fullmatch=True)
_PREFIX = st.from_regex(
    r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?){0,3}", fullmatch=True
)
_KEY = st.one_of(_NAME, st.builds(lambda p, n: f"{p}/{n}", _PREFIX, _NAME), st.sampled_from(["in", "notin"]))
_VALUE = st.one_of(st.just(""), _NAME, st.sampled_from(["in", "notin"]))


@st.composite
def _requirements(draw: st.DrawFn) -> Requirement:
    key = draw(_KEY)
    operator = draw(st.sampled_from(list(Operator)))
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        values: tuple[str, ...] = ()
    elif operator in (Operator.IN, Operator.NOT_IN):
        values = tuple(sorted(draw(st.sets(_VALUE, min_size=1, max_size=4))))
    elif operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
        values = (str(draw(st.integers(0, 2**63 - 1))),)
    else:
        values = (draw(_VALUE),)
    return Requirement(key, operator, values)


@settings(max_examples=500, deadline=None)
@given(st.lists(_requirements(), max_size=5))
def test_label_selector_render_parse_round_trip(requirements: list[Requirement]) -> None:
    selector = LabelSelector.of(requirements)
    assert parse_label_selector(str(selector)) == selector


_LABELS = st.dictionaries(
    st.sampled_from(["a", "b", "c", "x.io/d"]), st.sampled_from(["", "1", "v"]), max_size=4
)


@settings(max_examples=300, deadline=None)
@given(_LABELS, _LABELS)
def test_match_labels_equal_the_equality_selector(wanted: dict[str, str], labels: dict[str, str]) -> None:
    text = ",".join(f"{k}={v}" for k, v in wanted.items())
    assert from_match_labels(wanted).matches(labels) == parse_label_selector(text).matches(labels)
    as_object = label_selector_from_object({"matchLabels": wanted})
    assert as_object.matches(labels) == from_match_labels(wanted).matches(labels)


_FIELD = st.from_regex(r"[a-zA-Z][a-zA-Z.]{0,15}", fullmatch=True)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.builds(
            FieldRequirement,
            _FIELD,
            st.sampled_from([Operator.EQUALS, Operator.NOT_EQUALS]),
            st.text(max_size=8),
        ),
        max_size=4,
    )
)
def test_field_selector_render_parse_round_trip(requirements: list[FieldRequirement]) -> None:
    rendered = ",".join(str(r) for r in requirements)
    parsed = parse_field_selector(rendered)
    assert sorted(parsed.requirements, key=str) == sorted(requirements, key=str)
    assert parse_field_selector(str(parsed)) == parsed
