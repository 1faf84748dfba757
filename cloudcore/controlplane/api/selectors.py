"""Kubernetes label selectors and field selectors: parsing, validation, matching and rendering.

Owns the string syntax of `?labelSelector=` and `?fieldSelector=` and the metav1.LabelSelector
objects controllers match with, behaving as apimachinery's `pkg/labels`, `pkg/fields` and
`metav1.LabelSelectorAsSelector` do, error texts included.

Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a` (exists), `!a` (does not
exist), `a>1` and `a<1` (integer comparisons), comma-separated and ANDed, whitespace anywhere between
tokens. Keys are qualified names (`example.com/name`), values label values; requirements are kept
sorted by key. `!=` and `notin` match objects that lack the key.

Three selectors select by a map and must not be confused:
- `label_selector_from_object(sel)`: a metav1.LabelSelector (`matchLabels` + `matchExpressions`, as
  in Deployment.spec.selector). An EMPTY one (`{}`) selects everything; a NULL one (None) selects
  nothing.
- `from_match_labels(map)`: a plain map (Service.spec.selector, ReplicationController.spec.selector)
  as labels.SelectorFromSet: every pair must match; an empty or missing map selects everything (a
  controller that wants "no selector, no pods" checks that itself, as the endpoints controller does).
- `LabelSelector.everything()` / `LabelSelector.nothing()`.

Field selectors: `k=v`, `k==v`, `k!=v`, comma-separated and ANDed, values escaped with `\\`
(`\\,`, `\\=`, `\\\\`); a field an object does not have matches as "". Which fields a resource
supports is the API layer's business (`FieldSelector.requirements` names them; Kubernetes answers
400 `field label not supported: <field>` for the others).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final


class SelectorError(ValueError):
    """A selector that does not parse or validate; the message is Kubernetes' own."""


class Operator(enum.StrEnum):
    """A requirement's operator, spelled as apimachinery's `selection.Operator`."""

    IN = "in"
    NOT_IN = "notin"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_BINARY_OPERATORS: Final = (Operator.IN, Operator.NOT_IN, Operator.EQUALS, Operator.DOUBLE_EQUALS,
                            Operator.NOT_EQUALS, Operator.GREATER_THAN, Operator.LESS_THAN)
_INT64: Final = re.compile(r"[+-]?[0-9]+")


def _parse_int64(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 10, 64); None where it fails."""
    if not _INT64.fullmatch(text):
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


# -- validation (apimachinery's util/validation, with its messages) ------------------------------------

_QNAME_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_RE: Final = re.compile(_QNAME_FMT)
_QNAME_MSG: Final = ("must consist of alphanumeric characters, '-', '_' or '.', "
                     "and must start and end with an alphanumeric character")
_QNAME_MAX: Final = 63
_LABEL_VALUE_FMT: Final = f"({_QNAME_FMT})?"
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE_FMT)
_LABEL_VALUE_MSG: Final = ("a valid label must be an empty string or consist of alphanumeric characters, "
                           "'-', '_' or '.', and must start and end with an alphanumeric character")
_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT: Final = f"{_DNS1123_LABEL_FMT}(\\.{_DNS1123_LABEL_FMT})*"
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1123_SUBDOMAIN_MSG: Final = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                                 "characters, '-' or '.', and must start and end with an alphanumeric "
                                 "character")
_DNS1123_SUBDOMAIN_MAX: Final = 253


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    examples_text = "".join(f"{' or ' if i else ''}'{example}', " for i, example in enumerate(examples))
    return f"{message} (e.g. {examples_text}regex used for validation is '{fmt}')"


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def _qualified_name_errors(value: str) -> list[str]:
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) > 2:
        return [f"a qualified name {_regex_error(_QNAME_MSG, _QNAME_FMT, 'MyName', 'my.name', '123-abc')}"
                " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix.encode()) > _DNS1123_SUBDOMAIN_MAX:
                errors.append(f"prefix part {_max_len_error(_DNS1123_SUBDOMAIN_MAX)}")
            if not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix):
                errors.append("prefix part " + _regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT,
                                                            "example.com"))
    if not name:
        errors.append("name part must be non-empty")
    elif len(name.encode()) > _QNAME_MAX:
        errors.append(f"name part {_max_len_error(_QNAME_MAX)}")
    if not _QNAME_RE.fullmatch(name):
        errors.append("name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return errors


def _label_value_errors(value: str) -> list[str]:
    errors: list[str] = []
    if len(value.encode()) > _QNAME_MAX:
        errors.append(_max_len_error(_QNAME_MAX))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errors.append(_regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errors


_GO_ESCAPES: Final = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                      "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def _go_quote(text: str) -> str:
    """Go's %q of a string."""
    quoted = "".join(_GO_ESCAPES.get(c, f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                     for c in text)
    return f'"{quoted}"'


def _invalid(path: str, value: str | Sequence[str], detail: str) -> str:
    """field.Invalid(path, value, detail).Error(); a sequence prints as Go's %#v of a []string.

    An empty sequence prints as a nil slice: NewRequirement's callers never pass an empty non-nil one.
    """
    if isinstance(value, str):
        shown = _go_quote(value)
    elif value:
        shown = "[]string{" + ", ".join(_go_quote(v) for v in value) + "}"
    else:
        shown = "[]string(nil)"
    return f"{path}: Invalid value: {shown}: {detail}"


def _aggregate(errors: Sequence[str]) -> str:
    """utilerrors.NewAggregate(errors).Error(): one error as is, several deduplicated in brackets."""
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# -- label selectors --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    """One `key op values` term of a label selector (build it with a parser or a `from_` function)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if op in (Operator.NOT_IN, Operator.NOT_EQUALS):
            return self.key not in labels or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        if self.key not in labels or len(self.values) != 1:
            return False
        actual, bound = _parse_int64(labels[self.key]), _parse_int64(self.values[0])
        if actual is None or bound is None:
            return False
        return actual > bound if op is Operator.GREATER_THAN else actual < bound

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        values = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({values})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{values}"


def _key_error(key: str, path: str) -> str | None:
    errors = _qualified_name_errors(key)
    return _invalid(path, key, "; ".join(errors)) if errors else None


def _new_requirement(key: str, operator: Operator, values: Sequence[str]) -> Requirement:
    """labels.NewRequirement: validate `key`, the number of values for `operator`, and each value."""
    errors: list[str] = []
    key_error = _key_error(key, "key")
    if key_error:
        errors.append(key_error)
    vals = list(values)
    if operator in (Operator.IN, Operator.NOT_IN):
        if not vals:
            errors.append(_invalid("values", vals, "for 'in', 'notin' operators, values set can't be empty"))
    elif operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS):
        if len(vals) != 1:
            errors.append(_invalid("values", vals, "exact-match compatibility requires one single value"))
    elif operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        if vals:
            errors.append(_invalid("values", vals, "values set must be empty for exists and does not exist"))
    else:
        if len(vals) != 1:
            errors.append(_invalid("values", vals,
                                   "for 'Gt', 'Lt' operators, exactly one value is required"))
        errors.extend(_invalid(f"values[{i}]", v, "for 'Gt', 'Lt' operators, the value must be an integer")
                      for i, v in enumerate(vals) if _parse_int64(v) is None)
    for i, value in enumerate(vals):
        value_errors = _label_value_errors(value)
        if value_errors:
            errors.append(_invalid(f"values[{i}][{key}]", value, "; ".join(value_errors)))
    if errors:
        raise SelectorError(_aggregate(errors))
    return Requirement(key, operator, tuple(vals))


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """An AND of requirements, sorted by key; `nothing()` is the selector that matches no object."""

    requirements: tuple[Requirement, ...] = ()
    selects_nothing: bool = False

    @classmethod
    def everything(cls) -> LabelSelector:
        return _EVERYTHING

    @classmethod
    def nothing(cls) -> LabelSelector:
        return _NOTHING

    @classmethod
    def of(cls, requirements: Iterable[Requirement]) -> LabelSelector:
        """A selector of these requirements, put in key order (as Selector.Add does)."""
        return cls(tuple(sorted(requirements, key=lambda r: r.key)))

    @property
    def empty(self) -> bool:
        """True when it does not restrict anything (matches every object)."""
        return not self.requirements and not self.selects_nothing

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.selects_nothing and all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_EVERYTHING: Final = LabelSelector()
_NOTHING: Final = LabelSelector(selects_nothing=True)


def from_match_labels(labels: Mapping[str, str] | None) -> LabelSelector:
    """labels.SelectorFromSet: every pair must match; an empty or missing map selects everything.

    Not validated: what the map holds was validated when its object was written.
    """
    if not labels:
        return _EVERYTHING
    return LabelSelector.of(Requirement(k, Operator.EQUALS, (v,)) for k, v in labels.items())


_EXPRESSION_OPERATORS: Final = {"In": Operator.IN, "NotIn": Operator.NOT_IN, "Exists": Operator.EXISTS,
                                "DoesNotExist": Operator.DOES_NOT_EXIST}


def label_selector_from_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """metav1.LabelSelectorAsSelector: None selects nothing, an empty selector everything."""
    if selector is None:
        return _NOTHING
    match_labels: Mapping[str, Any] = selector.get("matchLabels") or {}
    expressions: Sequence[Mapping[str, Any]] = selector.get("matchExpressions") or ()
    if not match_labels and not expressions:
        return _EVERYTHING
    requirements = [_new_requirement(str(key), Operator.EQUALS, [str(match_labels[key])])
                    for key in sorted(match_labels)]
    for expression in expressions:
        operator = _EXPRESSION_OPERATORS.get(str(expression.get("operator", "")))
        if operator is None:
            raise SelectorError(f"{_go_quote(str(expression.get('operator', '')))} "
                                "is not a valid label selector operator")
        values = [str(value) for value in expression.get("values") or ()]
        requirements.append(_new_requirement(str(expression.get("key", "")), operator, values))
    return LabelSelector.of(requirements)


# The lexer's tokens: the special symbols, the keywords, identifiers and the end.
_END: Final = "end"
_IDENTIFIER: Final = "identifier"
_SYMBOLS: Final = frozenset({"!", "!=", "(", ")", ",", "<", "=", "==", ">"})
_KEYWORDS: Final = frozenset({"in", "notin"})
_SPECIAL_CHARS: Final = frozenset("=!(),><")
_WHITESPACE: Final = frozenset(" \t\r\n")
_OPERATOR_TOKENS: Final = {"in": Operator.IN, "notin": Operator.NOT_IN, "=": Operator.EQUALS,
                           "==": Operator.DOUBLE_EQUALS, "!=": Operator.NOT_EQUALS,
                           ">": Operator.GREATER_THAN, "<": Operator.LESS_THAN}


def _lex(text: str) -> list[tuple[str, str]]:
    """(kind, literal) tokens; kind is the symbol or keyword itself, `identifier`, or `end`."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i == n:
            tokens.append((_END, ""))
            return tokens
        start = i
        if text[i] in _SPECIAL_CHARS:  # the longest run of special characters that is a symbol
            i += 1
            while i < n and text[i] in _SPECIAL_CHARS and text[start:i + 1] in _SYMBOLS:
                i += 1
            tokens.append((text[start:i], text[start:i]))
            continue
        while i < n and text[i] not in _SPECIAL_CHARS and text[i] not in _WHITESPACE:
            i += 1
        word = text[start:i]
        tokens.append((word if word in _KEYWORDS else _IDENTIFIER, word))


class _Parser:
    """labels.Parser: a recursive descent over the tokens, with its error messages."""

    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.position = 0

    def peek(self, *, values: bool = True) -> tuple[str, str]:
        """The next token; in a values context the keywords `in` and `notin` are identifiers."""
        kind, literal = self.tokens[self.position]
        return (_IDENTIFIER if values and kind in _KEYWORDS else kind), literal

    def take(self, *, values: bool = True) -> tuple[str, str]:
        token = self.peek(values=values)
        self.position += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            kind, literal = self.peek()
            if kind == _END:
                return requirements
            if kind not in (_IDENTIFIER, "!"):
                raise SelectorError(f"found '{literal}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self.requirement())
            except SelectorError as exc:
                raise SelectorError(f"unable to parse requirement: {exc}") from None
            kind, literal = self.take()
            if kind == _END:
                return requirements
            if kind != ",":
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            kind, literal = self.peek()
            if kind not in (_IDENTIFIER, "!"):
                raise SelectorError(f"found '{literal}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        kind, key = self.take()
        negated = kind == "!"
        if negated:
            kind, key = self.take()
        if kind != _IDENTIFIER:
            raise SelectorError(f"found '{key}', expected: identifier")
        key_error = _key_error(key, "<nil>")
        if key_error:
            raise SelectorError(key_error)
        if negated or self.peek()[0] in (_END, ","):
            return _new_requirement(key, Operator.DOES_NOT_EXIST if negated else Operator.EXISTS, [])
        kind, literal = self.take(values=False)
        operator = _OPERATOR_TOKENS.get(kind)
        if operator is None:
            raise SelectorError(f"found '{literal}', expected: {', '.join(_BINARY_OPERATORS)}")
        values = self.value_set() if operator in (Operator.IN, Operator.NOT_IN) else self.exact_value()
        return _new_requirement(key, operator, sorted(values))

    def value_set(self) -> set[str]:
        kind, literal = self.take()
        if kind != "(":
            raise SelectorError(f"found '{literal}' expected: '('")
        kind, literal = self.peek()
        if kind == ")":
            self.take()
            return {""}
        if kind not in (_IDENTIFIER, ","):
            raise SelectorError(f"found '{literal}', expected: ',', ')' or identifier")
        values: set[str] = set()
        while True:  # labels.Parser.parseIdentifiersList: empty items are "" values
            kind, literal = self.take()
            if kind == _IDENTIFIER:
                values.add(literal)
                kind, literal = self.peek()
                if kind == ")":
                    self.take()
                    return values
                if kind != ",":
                    raise SelectorError(f"found '{literal}', expected: ',' or ')'")
            elif kind == ",":
                if not values:
                    values.add("")
                kind, _ = self.peek()
                if kind == ")":
                    self.take()
                    values.add("")
                    return values
                if kind == ",":
                    self.take()
                    values.add("")
            else:
                raise SelectorError(f"found '{literal}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        if self.peek()[0] in (_END, ","):
            return {""}
        kind, literal = self.take()
        if kind != _IDENTIFIER:
            raise SelectorError(f"found '{literal}', expected: identifier")
        return {literal}


def parse_label_selector(text: str) -> LabelSelector:
    """labels.Parse: the selector a `labelSelector` string means; SelectorError if it is invalid."""
    return LabelSelector.of(_Parser(text).parse())


# -- field selectors --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    """`field=value` (operator EQUALS; `==` parses to it too) or `field!=value` (NOT_EQUALS)."""

    field: str
    operator: Operator
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        return (fields.get(self.field, "") == self.value) == (self.operator is Operator.EQUALS)

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{'=' if self.operator is Operator.EQUALS else '!='}{escaped}"


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """An AND of field requirements, in the sorted order of their terms (as fields.ParseSelector)."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _split_terms(text: str) -> list[str]:
    """Split on the commas that are not escaped; escapes stay in the terms."""
    terms: list[str] = []
    start, escaped = 0, False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _unescape(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out: list[str] = []
    escaped = False
    for c in value:
        if escaped:
            if c not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in ",=":  # Go prints the rune with %v: its code point
            raise SelectorError(f"invalid field selector: unescaped character in value: {ord(c)}")
        else:
            out.append(c)
    if escaped:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


_FIELD_OPERATORS: Final = (("!=", Operator.NOT_EQUALS), ("==", Operator.EQUALS), ("=", Operator.EQUALS))


def parse_field_selector(text: str) -> FieldSelector:
    """fields.ParseSelector: the selector a `fieldSelector` string means; SelectorError if invalid.

    Nothing is trimmed: `a = b` compares field "a " with " b", as in Kubernetes.
    """
    requirements: list[FieldRequirement] = []
    for term in sorted(_split_terms(text)) if text else ():
        if not term:
            continue
        for i in range(len(term)):  # the first operator in the term splits it
            match = next(((sym, op) for sym, op in _FIELD_OPERATORS if term.startswith(sym, i)), None)
            if match is not None:
                symbol, operator = match
                requirements.append(FieldRequirement(term[:i], operator, _unescape(term[i + len(symbol):])))
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
    return FieldSelector(tuple(requirements))
