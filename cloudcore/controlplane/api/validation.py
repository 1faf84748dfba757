"""Object validation as kube-apiserver does it: schema types, unknown fields, and the semantic rules.

Three layers, each reported the way Kubernetes reports it:

* schema errors (wrong types, missing required fields, enum and range violations) from a validator
  compiled with fastjsonschema, once per kind and cached (jsonschema's Draft 2020-12 validator
  when a schema does not compile); every error is collected, not only the first;
* unknown fields, found by walking the object along the schema: returned as dotted paths
  (`spec.containers[0].imagePullPolcy`) whatever the field validation directive; the caller turns
  them into a 400 `strict decoding error` (Strict), `Warning` headers (Warn) or nothing (Ignore);
* the semantic checks every Kubernetes server makes: name and label syntax, Pod containers, workload
  selectors, Service ports, CRD names and versions. One small function per rule set.

Errors are `FieldError`s whose `type` is the Kubernetes cause type (`FieldValueRequired`, ...),
`field` the field path and `message` the text kube-apiserver puts in a cause (`Required value`,
`Invalid value: "Foo": a lowercase RFC 1123 ...`). Built-in kinds follow Go's decoding semantics
where they differ from the JSON schema: a required boolean or list may be absent (it is then false
or empty), and `null` means absent.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import fastjsonschema
import jsonschema  # type: ignore[import-untyped]
import orjson

from cloudcore.controlplane.api import schemas

FieldValidation = Literal["Strict", "Warn", "Ignore"]

REQUIRED: Final = "FieldValueRequired"
INVALID: Final = "FieldValueInvalid"
NOT_SUPPORTED: Final = "FieldValueNotSupported"
TYPE_INVALID: Final = "FieldValueTypeInvalid"
DUPLICATE: Final = "FieldValueDuplicate"
FORBIDDEN: Final = "FieldValueForbidden"
TOO_LONG: Final = "FieldValueTooLong"
TOO_MANY: Final = "FieldValueTooMany"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One cause of a 422 Invalid: Kubernetes cause type, field path and the cause's message."""

    type: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass(slots=True)
class ValidationResult:
    """Errors (a 422 when any), warnings for `Warning` headers, and unknown field paths.

    `unknown_fields` are reported whatever the field validation directive; `warnings` never
    include them (the caller words them by directive).
    """

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# -- messages ---------------------------------------------------------------------------------------

def go_value(value: Any) -> str:
    """A value as kube-apiserver prints it after `Invalid value:` (Go's %v / %q / %#v)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()):
        items = ", ".join(f"{_quote(str(k))}:{_quote(v)}" for k, v in sorted(value.items()))
        return f"map[string]string{{{items}}}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(_quote(v) for v in value) + "}"
    return orjson.dumps(value).decode()


def _quote(text: str) -> str:
    return orjson.dumps(text).decode()


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError(REQUIRED, path, f"Required value: {detail}" if detail else "Required value")


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(INVALID, path, f"Invalid value: {go_value(value)}: {detail}")


def _not_supported(path: str, value: Any, supported: Iterable[Any]) -> FieldError:
    listed = ", ".join(go_value(v) for v in supported)
    return FieldError(NOT_SUPPORTED, path,
                      f"Unsupported value: {go_value(value)}: supported values: {listed}")


def _duplicate(path: str, value: Any) -> FieldError:
    return FieldError(DUPLICATE, path, f"Duplicate value: {go_value(value)}")


def _forbidden(path: str, detail: str) -> FieldError:
    return FieldError(FORBIDDEN, path, f"Forbidden: {detail}")


def _regex_error(message: str, pattern: str, *examples: str) -> str:
    shown = "".join(("or " if i else "") + f"'{example}',  " for i, example in enumerate(examples))
    return f"{message} (e.g. {shown.rstrip(' ')} regex used for validation is '{pattern}')"


# -- names and labels (each returns the problems, [] when valid) ------------------------------------

_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT: Final = _LABEL_FMT + r"(\." + _LABEL_FMT + ")*"
_DNS1035_FMT: Final = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QNAME_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT: Final = "(" + _QNAME_FMT + ")?"
_CONFIG_KEY_FMT: Final = "[-._a-zA-Z0-9]+"
_LABEL_RE: Final = re.compile(_LABEL_FMT)
_SUBDOMAIN_RE: Final = re.compile(_SUBDOMAIN_FMT)
_DNS1035_RE: Final = re.compile(_DNS1035_FMT)
_QNAME_RE: Final = re.compile(_QNAME_FMT)
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE_FMT)
_CONFIG_KEY_RE: Final = re.compile(_CONFIG_KEY_FMT)
_QNAME_MSG: Final = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                     "with an alphanumeric character")


def _too_long(limit: int) -> str:
    return f"must be no more than {limit} characters"


def dns1123_label(value: str) -> list[str]:
    problems = [_too_long(63)] if len(value) > 63 else []
    if not _LABEL_RE.fullmatch(value):
        problems.append(_regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
            "start and end with an alphanumeric character", _LABEL_FMT, "my-name", "123-abc"))
    return problems


def dns1123_subdomain(value: str) -> list[str]:
    problems = [_too_long(253)] if len(value) > 253 else []
    if not _SUBDOMAIN_RE.fullmatch(value):
        problems.append(_regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character", _SUBDOMAIN_FMT, "example.com"))
    return problems


def dns1035_label(value: str) -> list[str]:
    problems = [_too_long(63)] if len(value) > 63 else []
    if not _DNS1035_RE.fullmatch(value):
        problems.append(_regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
            "alphabetic character, and end with an alphanumeric character", _DNS1035_FMT, "my-name",
            "abc-123"))
    return problems


def qualified_name(value: str) -> list[str]:
    """Label and annotation keys: `[prefix/]name`, the prefix a DNS subdomain."""
    parts = value.split("/")
    if len(parts) > 2:
        return ["a qualified name " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    problems: list[str] = []
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            problems.extend("prefix part " + p for p in dns1123_subdomain(prefix))
    name = parts[-1]
    if not name:
        return [*problems, "name part must be non-empty"]
    if len(name) > 63:
        problems.append("name part " + _too_long(63))
    if not _QNAME_RE.fullmatch(name):
        problems.append("name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return problems


def label_value(value: str) -> list[str]:
    problems = [_too_long(63)] if len(value) > 63 else []
    if not _LABEL_VALUE_RE.fullmatch(value):
        problems.append(_regex_error("a valid label must be an empty string or " + _QNAME_MSG[len("must "):],
                                     _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return problems


def config_key(value: str) -> list[str]:
    """ConfigMap and Secret data keys."""
    problems = [_too_long(253)] if len(value) > 253 else []
    if not _CONFIG_KEY_RE.fullmatch(value):
        problems.append(_regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'", _CONFIG_KEY_FMT,
            "key.name", "KEY_NAME", "key-name"))
    if value == ".":
        problems.append("must not be '.'")
    elif value == "..":
        problems.append("must not be '..'")
    elif value.startswith(".."):
        problems.append("must not start with '..'")
    return problems


NameRule = Callable[[str], list[str]]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# -- metadata ---------------------------------------------------------------------------------------

_ANNOTATIONS_LIMIT: Final = 256 * 1024


def check_labels(labels: Any, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for key, value in _map(labels).items():
        errors.extend(_invalid(path, key, msg) for msg in qualified_name(key))
        if isinstance(value, str):
            errors.extend(_invalid(path, value, msg) for msg in label_value(value))
    return errors


def _check_annotations(annotations: Any, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    total = 0
    for key, value in _map(annotations).items():
        errors.extend(_invalid(path, key, msg) for msg in qualified_name(key.lower()))
        total += len(key) + (len(value) if isinstance(value, str) else 0)
    if total > _ANNOTATIONS_LIMIT:
        errors.append(FieldError(TOO_LONG, path, f"Too long: must have at most {_ANNOTATIONS_LIMIT} bytes"))
    return errors


def check_metadata(meta: Any, name_rule: NameRule,
                   path: str = "metadata") -> tuple[list[FieldError], list[str]]:
    """ObjectMeta rules: name (or generateName) present and valid, namespace, labels, annotations.

    Returns the errors and the warnings (finalizer names without a domain).
    """
    meta = _map(meta)
    errors: list[FieldError] = []
    name = meta.get("name")
    if not name:
        if not meta.get("generateName"):
            errors.append(_required(f"{path}.name", "name or generateName is required"))
    elif isinstance(name, str):
        errors.extend(_invalid(f"{path}.name", name, msg) for msg in name_rule(name))
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and namespace:
        errors.extend(_invalid(f"{path}.namespace", namespace, msg) for msg in dns1123_label(namespace))
    errors.extend(check_labels(meta.get("labels"), f"{path}.labels"))
    errors.extend(_check_annotations(meta.get("annotations"), f"{path}.annotations"))
    warnings = [f'{path}.finalizers: "{f}": prefer a domain-qualified finalizer name to avoid accidental '
                "conflicts with other finalizer writers"
                for f in meta.get("finalizers") or () if isinstance(f, str) and "/" not in f and "." not in f]
    return errors, warnings


# -- compiled schema validators ---------------------------------------------------------------------

_INT32: Final = (-(2**31), 2**31 - 1)
_INT64: Final = (-(2**63), 2**63 - 1)
_QUANTITY_FMT: Final = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_QUANTITY_RE: Final = re.compile(_QUANTITY_FMT)
_DATE_TIME_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _is_base64(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _matches(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    return lambda value: not isinstance(value, str) or pattern.fullmatch(value) is not None


_FORMATS: Final[Mapping[str, Callable[[Any], bool]]] = {
    "byte": _is_base64,
    "date-time": _matches(_DATE_TIME_RE),
    "date": _matches(_DATE_RE),
    "quantity": _matches(_QUANTITY_RE),
}

# The keywords that constrain values; everything else (descriptions, extensions) is dropped from the
# schemas handed to the validators, which keeps the generated code small.
_VALUE_KEYWORDS: Final = frozenset({
    "type", "enum", "required", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties",
})
_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf")
_OBJECT_META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    return list(kind) if isinstance(kind, list) else []


class _Normalizer:
    """Turns a Kubernetes schema (built-in 2020 style or a CRD's OpenAPI v3) into a validator schema."""

    def __init__(self, custom: bool) -> None:
        self.custom = custom
        self.refs: list[str] = []

    def node(self, schema: Any) -> dict[str, Any]:
        if not isinstance(schema, Mapping):
            return {}
        if "$ref" in schema and not self.custom:  # CRD schemas may not use $ref
            return self.ref(schemas.ref_name(schema["$ref"]))
        out: dict[str, Any] = {k: v for k, v in schema.items() if k in _VALUE_KEYWORDS}
        types = _types(schema)
        if self.custom:
            self._openapi_v3(schema, out, types)
        elif types:
            out["type"] = types if len(types) > 1 else types[0]
        self._format(schema, out, types)
        if "properties" in schema:
            props = schema["properties"]
            out["properties"] = {name: self.node(sub) for name, sub in props.items()}
            if not self.custom and "required" in out:
                out["required"] = [r for r in out["required"] if not self._zero_value_is_absent(props.get(r))]
        if isinstance(schema.get("additionalProperties"), Mapping):
            out["additionalProperties"] = self.node(schema["additionalProperties"])
        if isinstance(schema.get("items"), Mapping):
            out["items"] = self.node(schema["items"])
        if isinstance(schema.get("not"), Mapping):
            out["not"] = self.node(schema["not"])
        for keyword in _SCHEMA_LISTS:
            if isinstance(schema.get(keyword), list):
                out[keyword] = [self.node(sub) for sub in schema[keyword]]
        if not self.custom and "oneOf" in out and all(set(sub) == {"type"} for sub in out["oneOf"]):
            # IntOrString and Quantity: a union of plain types reads better as one type list.
            union = [t for sub in out.pop("oneOf") for t in _types(sub)]
            out["type"] = list(dict.fromkeys(union))
            if "number" in union:
                out["format"] = "quantity"
        return out

    def ref(self, name: str) -> dict[str, Any]:
        self.refs.append(name)
        return {"$ref": schemas.REF_PREFIX + name}

    def _openapi_v3(self, schema: Mapping[str, Any], out: dict[str, Any], types: list[str]) -> None:
        if schema.get("x-kubernetes-int-or-string") is True:
            types = ["integer", "string"]
        if types and schema.get("nullable") is True:
            types = [*types, "null"]
        if types:
            out["type"] = types if len(types) > 1 else types[0]
        for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            if schema.get(exclusive) is True and bound in schema:  # OpenAPI v3's boolean form
                out[exclusive] = out.pop(bound)
            elif isinstance(schema.get(exclusive), bool):
                del out[exclusive]
        if schema.get("x-kubernetes-embedded-resource") is True:
            self._embed(out)

    def _embed(self, out: dict[str, Any]) -> None:
        props = out.setdefault("properties", {})
        out["required"] = list(dict.fromkeys([*out.get("required", ()), "apiVersion", "kind"]))
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = self.ref(_OBJECT_META)

    def _format(self, schema: Mapping[str, Any], out: dict[str, Any], types: list[str]) -> None:
        fmt = schema.get("format")
        if not self.custom and "integer" in types and fmt in ("int32", "int64"):  # Go's decoder overflows
            low, high = _INT32 if fmt == "int32" else _INT64
            out.setdefault("minimum", low)
            out.setdefault("maximum", high)
        elif fmt in _FORMATS:
            out["format"] = fmt

    @staticmethod
    def _zero_value_is_absent(prop: Any) -> bool:
        return isinstance(prop, Mapping) and bool({"boolean", "array"} & set(_types(prop)))


@dataclass(frozen=True, slots=True)
class _RawError:
    rule: str
    path: str
    value: Any
    schema: Mapping[str, Any]


class _Compiled:
    """A validator for one schema: fastjsonschema code, or jsonschema when that does not compile."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._fast: Callable[[Any], Any] | None
        self._slow: jsonschema.Draft202012Validator | None = None
        try:
            self._fast = fastjsonschema.compile(document, formats=_FORMATS, use_default=False,
                                                fast_fail=False)
        except (fastjsonschema.JsonSchemaDefinitionException, RecursionError, re.error):
            self._fast = None
            checker = jsonschema.FormatChecker(formats=())
            for name, check in _FORMATS.items():
                checker.checks(name)(check)
            self._slow = jsonschema.Draft202012Validator(document, format_checker=checker)

    def errors(self, obj: Any) -> list[_RawError]:
        if self._fast is None:
            assert self._slow is not None
            return [_RawError(str(e.validator), _format_path(e.absolute_path), e.instance,
                              _as_schema(e.schema)) for e in self._slow.iter_errors(obj)]
        try:
            self._fast(obj)
        except fastjsonschema.JsonSchemaValuesException as many:
            return [self._raw(e) for e in many.errors]
        except fastjsonschema.JsonSchemaValueException as one:
            return [self._raw(one)]
        return []

    @staticmethod
    def _raw(error: fastjsonschema.JsonSchemaValueException) -> _RawError:
        path = (error.name or "data").removeprefix("data").lstrip(".")  # fastjsonschema calls the root "data"
        return _RawError(error.rule or "", path, error.value, _as_schema(error.definition))


def _as_schema(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _format_path(parts: Iterable[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _join(path: str, child: str) -> str:
    return f"{path}.{child}" if path else child


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _schema_errors(raw: _RawError, builtin: bool) -> Iterator[FieldError]:
    """Kubernetes causes for one schema violation (as kube-openapi words them).

    For built-in kinds `null` decodes to the zero value, so a null required field is a missing one.
    """
    path, value, schema, rule = raw.path, raw.value, raw.schema, raw.rule
    body = f"{path or 'body'} in body"
    if rule == "type" and value is None and builtin:
        yield _required(path)
    elif rule == "required":
        present = value if isinstance(value, Mapping) else {}
        for name in schema.get("required", ()):
            if name not in present or (builtin and present[name] is None):
                yield _required(_join(path, name))
    elif rule == "type":
        expected = ",".join(t for t in _types(schema) if t != "null")
        actual = _quote(_type_name(value))
        yield FieldError(TYPE_INVALID, path,
                         f"Invalid value: {actual}: {body} must be of type {expected}: {actual}")
    elif rule == "enum":
        yield _not_supported(path, value, schema.get("enum", ()))
    elif rule == "format" and schema.get("format") == "quantity":
        yield _invalid(path, value, f"quantities must match the regular expression '{_QUANTITY_FMT}'")
    elif rule == "format":
        yield _invalid(path, value, f"{body} must be of type {schema.get('format')}: {go_value(value)}")
    elif rule == "maxLength":
        yield FieldError(TOO_LONG, path, f"Too long: may not be longer than {schema.get('maxLength')}")
    elif rule in ("maxItems", "maxProperties"):
        count = len(value) if isinstance(value, list | Mapping) else 0
        yield FieldError(TOO_MANY, path, f"Too many: {count}: must have at most {schema.get(rule)} items")
    elif rule == "uniqueItems":
        yield _invalid(path, value, f"{body} shouldn't contain duplicates")
    else:
        yield _invalid(path, value, _value_rule_detail(rule, body, schema))


def _schema_error_list(raws: Iterable[_RawError], builtin: bool) -> list[FieldError]:
    """The causes of all violations; a value of the wrong type gets no others (enum, bounds) besides."""
    errors = [e for raw in raws for e in _schema_errors(raw, builtin)]
    mistyped = {e.field for e in errors if e.type == TYPE_INVALID}
    return [e for e in errors if e.type in (TYPE_INVALID, REQUIRED) or e.field not in mistyped]


def _value_rule_detail(rule: str, body: str, schema: Mapping[str, Any]) -> str:
    bound = schema.get(rule)
    details = {
        "minimum": f"{body} should be greater than or equal to {bound}",
        "maximum": f"{body} should be less than or equal to {bound}",
        "exclusiveMinimum": f"{body} should be greater than {bound}",
        "exclusiveMaximum": f"{body} should be less than {bound}",
        "multipleOf": f"{body} should be a multiple of {bound}",
        "minLength": f"{body} should be at least {bound} chars long",
        "minItems": f"{body} should have at least {bound} items",
        "minProperties": f"{body} should have at least {bound} properties",
        "pattern": f"{body} should match '{bound}'",
        "oneOf": f"{body} must validate one and only one schema (oneOf)",
        "anyOf": f"{body} must validate at least one schema (anyOf)",
        "allOf": f"{body} must validate all the schemas (allOf)",
        "not": f"{body} must not validate the schema (not)",
    }
    return details.get(rule, f"{body} failed the {rule} rule")


def _builtin_defs(names: Iterable[str]) -> dict[str, Any]:
    """The validator schemas of these definitions and of all they refer to, for `$defs`."""
    normalizer = _Normalizer(custom=False)
    defs: dict[str, Any] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in defs:
            defs[name] = normalizer.node(schemas.definition(name))
            pending.extend(normalizer.refs)
            normalizer.refs.clear()
    return defs


@functools.cache
def _builtin_validator(definition_name: str) -> _Compiled:
    defs = _builtin_defs([definition_name])
    return _Compiled({"$ref": schemas.REF_PREFIX + definition_name, "$defs": defs})


def _custom_document(openapi_v3_schema: Mapping[str, Any]) -> dict[str, Any]:
    normalizer = _Normalizer(custom=True)
    root = normalizer.node(openapi_v3_schema)
    props = root.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    meta_ref = normalizer.ref(_OBJECT_META)
    props["metadata"] = {"allOf": [meta_ref, props["metadata"]]} if "metadata" in props else meta_ref
    return {**root, "$defs": _builtin_defs(normalizer.refs)}


@dataclass(frozen=True, slots=True)
class _CustomEntry:
    schema: Mapping[str, Any]
    validator: _Compiled


_CUSTOM_CACHE_SIZE: Final = 256
_custom_cache: OrderedDict[str, _CustomEntry] = OrderedDict()


def _custom_validator(cache_key: str, openapi_v3_schema: Mapping[str, Any]) -> _Compiled:
    """Compiled once per key; recompiled when the schema under that key changes (a CRD update)."""
    entry = _custom_cache.get(cache_key)
    if entry is not None and (entry.schema is openapi_v3_schema or entry.schema == openapi_v3_schema):
        _custom_cache.move_to_end(cache_key)
        return entry.validator
    validator = _Compiled(_custom_document(openapi_v3_schema))
    _custom_cache[cache_key] = _CustomEntry(openapi_v3_schema, validator)
    while len(_custom_cache) > _CUSTOM_CACHE_SIZE:
        _custom_cache.popitem(last=False)
    return validator


# -- unknown fields ---------------------------------------------------------------------------------

def _deref(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        schema = schemas.resolve(schema["$ref"])
    return schema


def _unknown_fields(value: Any, schema: Mapping[str, Any], path: str, out: list[str], custom: bool) -> None:
    """Append the paths of fields the schema does not know.

    Built-in objects without `properties` (RawExtension, FieldsV1, JSON) take anything. In a CRD
    schema an object without properties, additionalProperties or x-kubernetes-preserve-unknown-fields
    takes nothing (Kubernetes prunes it all); an embedded resource knows apiVersion, kind, metadata.
    """
    schema = _deref(schema)
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                _unknown_fields(item, items, f"{path}[{index}]", out, custom)
        return
    if not isinstance(value, Mapping):
        return
    props: Mapping[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    embedded = custom and schema.get("x-kubernetes-embedded-resource") is True
    open_ = extra is True or schema.get("x-kubernetes-preserve-unknown-fields") is True or (
        not custom and "properties" not in schema)
    for key, item in value.items():
        child = _join(path, key)
        if key in props and not (embedded and key == "metadata"):
            _unknown_fields(item, props[key], child, out, custom)
        elif embedded and key in ("apiVersion", "kind", "metadata"):
            if key == "metadata":
                _unknown_fields(item, schemas.definition(_OBJECT_META), child, out, False)
        elif isinstance(extra, Mapping):
            _unknown_fields(item, extra, child, out, custom)
        elif not open_:
            out.append(child)


# -- semantic rules per kind ------------------------------------------------------------------------

def _port_range(path: str, value: Any) -> list[FieldError]:
    if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 65535:
        return [_invalid(path, value, "must be between 1 and 65535, inclusive")]
    return []


_PROTOCOLS: Final = ("SCTP", "TCP", "UDP")
_PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
_RESTART_POLICIES: Final = ("Always", "OnFailure", "Never")


def _containers(spec: Mapping[str, Any], path: str) -> list[FieldError]:
    """Containers and init containers: name (unique DNS label), image, pull policy, ports."""
    errors: list[FieldError] = []
    containers = _list(spec.get("containers"))
    if not containers:
        errors.append(_required(f"{path}.containers"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, ctr in enumerate(_list(spec.get(group))):
            ctr = _map(ctr)
            at = f"{path}.{group}[{index}]"
            name = ctr.get("name")
            if not name:
                errors.append(_required(f"{at}.name"))
            elif isinstance(name, str):
                errors.extend(_invalid(f"{at}.name", name, msg) for msg in dns1123_label(name))
                if name in seen:
                    errors.append(_duplicate(f"{at}.name", name))
                seen.add(name)
            image = ctr.get("image")
            if not image:
                errors.append(_required(f"{at}.image"))
            elif isinstance(image, str) and image != image.strip():
                errors.append(_invalid(f"{at}.image", image, "must not have leading or trailing whitespace"))
            policy = ctr.get("imagePullPolicy")
            if policy and policy not in _PULL_POLICIES:
                errors.append(_not_supported(f"{at}.imagePullPolicy", policy, _PULL_POLICIES))
            for p_index, port in enumerate(_list(ctr.get("ports"))):
                port = _map(port)
                errors.extend(_port_range(f"{at}.ports[{p_index}].containerPort", port.get("containerPort")))
                protocol = port.get("protocol")
                if protocol and protocol not in _PROTOCOLS:
                    errors.append(_not_supported(f"{at}.ports[{p_index}].protocol", protocol, _PROTOCOLS))
    return errors


def _pod_spec(spec: Any, path: str, restart_policies: Sequence[str] = _RESTART_POLICIES) -> list[FieldError]:
    spec = _map(spec)
    errors = _containers(spec, path)
    policy = spec.get("restartPolicy")
    if policy and policy not in restart_policies:
        errors.append(_not_supported(f"{path}.restartPolicy", policy, restart_policies))
    return errors


def _pod(obj: Mapping[str, Any]) -> list[FieldError]:
    return _pod_spec(obj.get("spec"), "spec")


_SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")


def _selector_syntax(selector: Mapping[str, Any], path: str) -> list[FieldError]:
    errors = check_labels(selector.get("matchLabels"), f"{path}.matchLabels")
    for index, expr in enumerate(_list(selector.get("matchExpressions"))):
        expr, at = _map(expr), f"{path}.matchExpressions[{index}]"
        operator, values = expr.get("operator"), _list(expr.get("values"))
        if operator not in _SELECTOR_OPERATORS:
            errors.append(_invalid(f"{at}.operator", operator, "not a valid selector operator"))
        elif operator in ("In", "NotIn") and not values:
            errors.append(_required(f"{at}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist") and values:
            errors.append(_forbidden(f"{at}.values", "may not be specified when `operator` is 'Exists' or "
                                                     "'DoesNotExist'"))
        key = expr.get("key")
        if isinstance(key, str):
            errors.extend(_invalid(f"{at}.key", key, msg) for msg in qualified_name(key))
    return errors


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels."""
    if any(labels.get(k) != v for k, v in _map(selector.get("matchLabels")).items()):
        return False
    for expr in _list(selector.get("matchExpressions")):
        expr = _map(expr)
        operator, values = expr.get("operator"), _list(expr.get("values"))
        value = labels.get(str(expr.get("key")))
        if ((operator == "In" and value not in values) or (operator == "NotIn" and value in values)
                or (operator == "Exists" and value is None)
                or (operator == "DoesNotExist" and value is not None)):
            return False
    return True


_EMPTY_SELECTOR: Final = ("Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
                          "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: "
                          "empty selector is invalid for deployment")


def _workload(obj: Mapping[str, Any], with_replicas: bool) -> list[FieldError]:
    """Deployment, ReplicaSet, DaemonSet: selector, template labels, template pod spec, replicas."""
    spec = _map(obj.get("spec"))
    errors: list[FieldError] = []
    replicas = spec.get("replicas")
    if with_replicas and isinstance(replicas, int) and replicas < 0:
        errors.append(_invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    template = _map(spec.get("template"))
    labels = _map(_map(template.get("metadata")).get("labels"))
    selector = spec.get("selector")
    if selector is None:
        errors.append(_required("spec.selector"))
    elif isinstance(selector, Mapping):
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            errors.append(FieldError(INVALID, "spec.selector", _EMPTY_SELECTOR))
        else:
            errors.extend(_selector_syntax(selector, "spec.selector"))
            if not selector_matches(selector, labels):
                errors.append(_invalid("spec.template.metadata.labels", dict(labels),
                                       "`selector` does not match template `labels`"))
    errors.extend(check_labels(labels, "spec.template.metadata.labels"))
    errors.extend(_pod_spec(template.get("spec"), "spec.template.spec", ("Always",)))
    return errors


_SERVICE_TYPES: Final = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def _service(obj: Mapping[str, Any]) -> list[FieldError]:
    """Service: type, ports (range, protocol, names unique and required when several), externalName."""
    spec = _map(obj.get("spec"))
    errors: list[FieldError] = []
    kind = spec.get("type") or "ClusterIP"
    if kind not in _SERVICE_TYPES:
        errors.append(_not_supported("spec.type", kind, _SERVICE_TYPES))
    ports = _list(spec.get("ports"))
    if kind == "ExternalName":
        if not spec.get("externalName"):
            errors.append(_required("spec.externalName"))
    elif not ports and spec.get("clusterIP") != "None":
        errors.append(_required("spec.ports"))
    names: set[str] = set()
    for index, port in enumerate(ports):
        port, at = _map(port), f"spec.ports[{index}]"
        name = port.get("name")
        if not name and len(ports) > 1:
            errors.append(_required(f"{at}.name"))
        elif isinstance(name, str) and name:
            errors.extend(_invalid(f"{at}.name", name, msg) for msg in dns1123_label(name))
            if name in names:
                errors.append(_duplicate(f"{at}.name", name))
            names.add(name)
        number = port.get("port")
        errors.extend(_port_range(f"{at}.port", number if number is not None else 0))
        errors.extend(_port_range(f"{at}.targetPort", port.get("targetPort")))
        protocol = port.get("protocol")
        if protocol and protocol not in _PROTOCOLS:
            errors.append(_not_supported(f"{at}.protocol", protocol, _PROTOCOLS))
    return errors


def _config_data(obj: Mapping[str, Any], fields: Sequence[str]) -> list[FieldError]:
    """ConfigMap and Secret keys: valid config keys, no key in two of the data maps."""
    errors: list[FieldError] = []
    owner: dict[str, str] = {}
    for name in fields:
        for key in _map(obj.get(name)):
            path = f"{name}[{key}]"
            errors.extend(_invalid(path, key, msg) for msg in config_key(key))
            if key in owner and {owner[key], name} != {"data", "stringData"}:
                errors.append(_invalid(path, key, f"duplicate of key present in {owner[key]}"))
            owner.setdefault(key, name)
    return errors


def _configmap(obj: Mapping[str, Any]) -> list[FieldError]:
    return _config_data(obj, ("data", "binaryData"))


def _secret(obj: Mapping[str, Any]) -> list[FieldError]:
    return _config_data(obj, ("data", "stringData"))


def _no_rules(obj: Mapping[str, Any]) -> list[FieldError]:
    return []


_Rules = Callable[[Mapping[str, Any]], list[FieldError]]

# (group, kind) -> (metadata.name rule, the kind's own rules)
_KIND_RULES: Final[Mapping[tuple[str, str], tuple[NameRule, _Rules]]] = {
    ("", "Namespace"): (dns1123_label, _no_rules),
    ("", "Service"): (dns1035_label, _service),
    ("", "Pod"): (dns1123_subdomain, _pod),
    ("", "ConfigMap"): (dns1123_subdomain, _configmap),
    ("", "Secret"): (dns1123_subdomain, _secret),
    ("apps", "Deployment"): (dns1123_subdomain, lambda obj: _workload(obj, True)),
    ("apps", "ReplicaSet"): (dns1123_subdomain, lambda obj: _workload(obj, True)),
    ("apps", "DaemonSet"): (dns1123_subdomain, lambda obj: _workload(obj, False)),
}

# Schema Required errors validate_crd reports itself (the caller runs both for CRDs).
_CRD_OWNED: Final = frozenset({"spec.group", "spec.names.plural", "spec.names.kind", "spec.scope",
                               "spec.versions"})


# -- entry points -----------------------------------------------------------------------------------

def _dedupe(errors: Iterable[FieldError]) -> list[FieldError]:
    seen: set[tuple[str, str]] = set()
    out: list[FieldError] = []
    for error in errors:
        key = (error.type, error.field)
        if error.type != REQUIRED:
            key = (error.type, error.field + "\0" + error.message)
        if key not in seen:
            seen.add(key)
            out.append(error)
    return out


def validate_builtin(group: str, version: str, kind: str, obj: Mapping[str, Any],
                     field_validation: FieldValidation) -> ValidationResult:
    """Validate a built-in kind's object (after defaulting): schema, unknown fields, semantic rules.

    `field_validation` does not change what is found (unknown fields are always listed); it is
    taken for symmetry with the API request. CustomResourceDefinitions get their semantic rules
    from `validate_crd`, which the caller runs as well. LookupError for a kind v1.30 does not have.
    """
    del field_validation  # the caller words unknown fields by directive
    name = schemas.definition_for_gvk(group, version, kind)
    if name is None:
        raise LookupError(f"no built-in schema for {group}/{version}, Kind={kind}")
    name_rule, rules = _KIND_RULES.get((group, kind), (dns1123_subdomain, _no_rules))
    errors, warnings = check_metadata(obj.get("metadata"), name_rule)
    schema_errors = _schema_error_list(_builtin_validator(name).errors(obj), builtin=True)
    if kind == "CustomResourceDefinition":
        schema_errors = [e for e in schema_errors if not (e.type == REQUIRED and e.field in _CRD_OWNED)]
    errors.extend(rules(obj))  # before the schema's: a cause both find is listed where the rules put it
    errors.extend(schema_errors)
    unknown: list[str] = []
    _unknown_fields(obj, schemas.definition(name), "", unknown, custom=False)
    return ValidationResult(_dedupe(errors), warnings, unknown)


def validate_custom(obj: Mapping[str, Any], openapi_v3_schema: Mapping[str, Any],
                    field_validation: FieldValidation, cache_key: str) -> ValidationResult:
    """Validate a custom resource against its CRD version's `openAPIV3Schema`.

    `cache_key` names the compiled validator (CRD name or uid plus version); a changed schema under
    the same key is recompiled. apiVersion, kind and metadata (an ObjectMeta) are implicit at the root.
    """
    del field_validation  # the caller words unknown fields by directive
    errors, warnings = check_metadata(obj.get("metadata"), dns1123_subdomain)
    validator = _custom_validator(cache_key, openapi_v3_schema)
    errors.extend(_schema_error_list(validator.errors(obj), builtin=False))
    unknown: list[str] = []
    root = {**openapi_v3_schema, "x-kubernetes-embedded-resource": True}
    _unknown_fields(obj, root, "", unknown, custom=True)
    return ValidationResult(_dedupe(errors), warnings, unknown)


def validate_crd(obj: Mapping[str, Any]) -> ValidationResult:
    """The CustomResourceDefinition rules: group, names, scope, versions, and the name they imply."""
    spec = _map(obj.get("spec"))
    names = _map(spec.get("names"))
    errors = _crd_group(spec.get("group")) + _crd_names(names) + _crd_versions(_list(spec.get("versions")))
    scope = spec.get("scope")
    if not scope:
        errors.append(_required("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        errors.append(_not_supported("spec.scope", scope, ("Cluster", "Namespaced")))
    name = _map(obj.get("metadata")).get("name")
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if isinstance(name, str) and name != expected:
        errors.append(_invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    return ValidationResult(_dedupe(errors))


def _crd_group(group: Any) -> list[FieldError]:
    if not group:
        return [_required("spec.group")]
    if not isinstance(group, str):
        return []
    errors = [_invalid("spec.group", group, msg) for msg in dns1123_subdomain(group)]
    if "." not in group:
        errors.append(_invalid("spec.group", group, "should be a domain with at least one dot"))
    return errors


def _crd_names(names: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    for key in ("plural", "singular"):
        value = names.get(key)
        if isinstance(value, str) and value:
            errors.extend(_invalid(f"spec.names.{key}", value, msg) for msg in dns1123_label(value))
        elif key == "plural":
            errors.append(_required("spec.names.plural"))
    kind = names.get("kind")
    if not kind:
        errors.append(_required("spec.names.kind"))
    if kind and names.get("listKind") == kind:
        errors.append(_invalid("spec.names.listKind", kind, "kind and listKind may not be the same"))
    return errors


def _crd_versions(versions: list[Any]) -> list[FieldError]:
    if not versions:
        return [_required("spec.versions")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, version in enumerate(versions):
        version, at = _map(version), f"spec.versions[{index}]"
        name = version.get("name")
        if not name:
            errors.append(_required(f"{at}.name"))
        elif isinstance(name, str):
            errors.extend(_invalid(f"{at}.name", name, msg) for msg in dns1035_label(name))
            if name in seen:
                errors.append(_duplicate(f"{at}.name", name))
            seen.add(name)
        schema = _map(version.get("schema")).get("openAPIV3Schema")
        schema_path = f"{at}.schema.openAPIV3Schema"
        if not isinstance(schema, Mapping):
            errors.append(_required(schema_path, "schemas are required"))
        elif not schema.get("type"):
            errors.append(_required(f"{schema_path}.type", "must not be empty at the root"))
        elif schema["type"] != "object":
            errors.append(_invalid(f"{schema_path}.type", schema["type"], "must be object at the root"))
    if sum(_map(v).get("storage") is True for v in versions) != 1:
        listed = [str(_map(v).get("name", "")) for v in versions]
        errors.append(_invalid("spec.versions", listed,
                               "must have exactly one version marked as storage version"))
    return errors
