"""Map the dataclasses of edgecore.cri.types to CRI protobuf messages and back, by field name.

One generic walker instead of a hand-written function per message: the dataclasses name their proto
fields, their annotations say how each maps (see edgecore.cri.types), and the message descriptor is
checked against them once per type, so a dataclass that drifts from api.proto fails loudly on first use
(and in tests/unit/test_cri_convert.py) instead of silently dropping a field on the wire.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, TypeVar

from edgecore.cri.generate import CRIProto, load_protocol
from edgecore.cri.types import PROTO

T = TypeVar("T")


class Kind(StrEnum):
    """How one dataclass field maps onto its proto field."""

    SCALAR = "scalar"
    ENUM = "enum"
    MESSAGE = "message"  # always present
    OPTIONAL_MESSAGE = "optional message"  # None = unset
    WRAPPER = "wrapper"  # one-field wrapper message, None = unset
    REPEATED_SCALAR = "repeated scalar"
    REPEATED_ENUM = "repeated enum"
    REPEATED_MESSAGE = "repeated message"
    MAP = "map"


@dataclass(frozen=True)
class FieldPlan:
    name: str
    kind: Kind
    # The enum class, the nested dataclass, or the scalar type, depending on `kind`.
    target: Any
    # For WRAPPER: the name of the wrapper message's only field ("value" or "state").
    inner: str = ""


class CRIConvertError(TypeError):
    """A dataclass does not match its CRI message (a programming error, found on first use)."""


def _is_repeated(field: Any) -> bool:
    # `is_repeated` replaced `label` in newer protobuf releases; the dependency range spans both.
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else bool(field.label == field.LABEL_REPEATED)


def _is_map(field: Any) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


def _unoptional(hint: Any) -> tuple[Any, bool]:
    """(X, True) for `X | None`, (hint, False) otherwise."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
        raise CRIConvertError(f"unsupported union {hint!r}: only `X | None` maps onto a CRI field")
    return hint, False


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, IntEnum)


def _matches(hint: Any, field: Any) -> bool:
    """Whether a scalar or enum annotation fits the proto field's value type (str for a string, ...)."""
    if _is_enum(hint):
        return field.enum_type is not None
    if field.enum_type is not None or field.message_type is not None:
        return False
    cpp = field.cpp_type
    if hint is bool:
        return bool(cpp == field.CPPTYPE_BOOL)
    if hint is int:
        return cpp in (field.CPPTYPE_INT32, field.CPPTYPE_INT64, field.CPPTYPE_UINT32, field.CPPTYPE_UINT64)
    if hint is float:
        return cpp in (field.CPPTYPE_FLOAT, field.CPPTYPE_DOUBLE)
    if hint is bytes:
        return bool(field.type == field.TYPE_BYTES)
    if hint is str:
        return bool(field.type == field.TYPE_STRING)
    return False


def _classify(owner: type, name: str, hint: Any, field: Any) -> FieldPlan:
    where = f"{owner.__name__}.{name}"
    base, optional = _unoptional(hint)
    origin = typing.get_origin(base)
    if origin is dict:
        if not _is_map(field):
            raise CRIConvertError(f"{where} is a dict but the proto field is not a map")
        return FieldPlan(name, Kind.MAP, str)
    if origin is list:
        (item,) = typing.get_args(base)
        if not _is_repeated(field) or _is_map(field):
            raise CRIConvertError(f"{where} is a list but the proto field is not repeated")
        if dataclasses.is_dataclass(item):
            _expect_message(where, field, item)
            return FieldPlan(name, Kind.REPEATED_MESSAGE, item)
        if not _matches(item, field):
            raise CRIConvertError(f"{where}: list of {item!r} does not fit the proto field's type")
        return FieldPlan(name, Kind.REPEATED_ENUM if _is_enum(item) else Kind.REPEATED_SCALAR, item)
    if _is_repeated(field):
        raise CRIConvertError(f"{where} is not a list but the proto field is repeated")
    if dataclasses.is_dataclass(base):
        _expect_message(where, field, base)
        return FieldPlan(name, Kind.OPTIONAL_MESSAGE if optional else Kind.MESSAGE, base)
    if optional:
        wrapper = field.message_type
        if wrapper is None or len(wrapper.fields) != 1:
            raise CRIConvertError(f"{where} is `X | None` but the proto field is not a one-field wrapper message")
        if not _matches(base, wrapper.fields[0]):
            raise CRIConvertError(f"{where}: {base!r} does not fit the value of {wrapper.full_name}")
        return FieldPlan(name, Kind.WRAPPER, base, inner=wrapper.fields[0].name)
    if not _matches(base, field):
        raise CRIConvertError(f"{where}: {base!r} does not fit the proto field's type")
    return FieldPlan(name, Kind.ENUM if _is_enum(base) else Kind.SCALAR, base)


def _expect_message(where: str, field: Any, cls: Any) -> None:
    want = getattr(cls, "cri_message", None)
    got = field.message_type.name if field.message_type is not None else None
    if want != got:
        raise CRIConvertError(f"{where} holds {cls.__name__} ({want}) but the proto field is {got}")


_PLANS: dict[type, tuple[FieldPlan, ...]] = {}


def plan(cls: type) -> tuple[FieldPlan, ...]:
    """How each proto field of dataclass `cls` maps; raises CRIConvertError on any mismatch."""
    found = _PLANS.get(cls)
    if found is None:
        found = _PLANS[cls] = _plan(cls, load_protocol())
    return found


def _plan(cls: type, proto: CRIProto) -> tuple[FieldPlan, ...]:
    if not dataclasses.is_dataclass(cls):
        raise CRIConvertError(f"{cls!r} is not a dataclass")
    descriptor = proto.message(getattr(cls, "cri_message", cls.__name__)).DESCRIPTOR
    hints = typing.get_type_hints(cls)
    plans = []
    for item in dataclasses.fields(cls):
        if not item.metadata.get(PROTO, True):
            continue
        proto_field = descriptor.fields_by_name.get(item.name)
        if proto_field is None:
            raise CRIConvertError(f"{cls.__name__}.{item.name} is not a field of {descriptor.full_name}")
        plans.append(_classify(cls, item.name, hints[item.name], proto_field))
    return tuple(plans)


def message_class(cls: type) -> Any:
    """The protobuf class of dataclass `cls`'s message."""
    return load_protocol().message(getattr(cls, "cri_message", cls.__name__))


def to_proto(obj: Any, message: Any | None = None) -> Any:
    """`obj` (a CRI dataclass) as its protobuf message; fills `message` in place when one is given."""
    target = message if message is not None else message_class(type(obj))()
    for step in plan(type(obj)):
        value = getattr(obj, step.name)
        kind = step.kind
        if kind == Kind.SCALAR:
            setattr(target, step.name, value)
        elif kind == Kind.ENUM:
            setattr(target, step.name, int(value))
        elif kind in (Kind.MESSAGE, Kind.OPTIONAL_MESSAGE):
            if value is not None:
                sub = getattr(target, step.name)
                to_proto(value, sub)
                # A nested message whose fields are all default is still "set" (e.g. empty metadata).
                sub.SetInParent()
        elif kind == Kind.WRAPPER:
            if value is not None:
                sub = getattr(target, step.name)
                setattr(sub, step.inner, int(value))
                # Marks presence even for 0: run_as_user=0 means root, not "unspecified".
                sub.SetInParent()
        elif kind == Kind.REPEATED_SCALAR:
            getattr(target, step.name).extend(value)
        elif kind == Kind.REPEATED_ENUM:
            getattr(target, step.name).extend(int(v) for v in value)
        elif kind == Kind.REPEATED_MESSAGE:
            repeated = getattr(target, step.name)
            for item in value:
                to_proto(item, repeated.add())
        elif kind == Kind.MAP:
            getattr(target, step.name).update(value)
    if message is not None:
        # Filling a field of a parent message: present even when every field is at its default.
        message.SetInParent()
    return target


def from_proto(message: Any, cls: type[T], **extra: Any) -> T:
    """Dataclass `cls` from a protobuf message; `extra` sets fields that are not in the message."""
    values: dict[str, Any] = {}
    for step in plan(cls):
        value = getattr(message, step.name)
        kind = step.kind
        if kind == Kind.SCALAR:
            values[step.name] = value
        elif kind == Kind.ENUM:
            values[step.name] = step.target(value)
        elif kind == Kind.MESSAGE:
            values[step.name] = from_proto(value, step.target)
        elif kind == Kind.OPTIONAL_MESSAGE:
            values[step.name] = from_proto(value, step.target) if message.HasField(step.name) else None
        elif kind == Kind.WRAPPER:
            values[step.name] = step.target(getattr(value, step.inner)) if message.HasField(step.name) else None
        elif kind == Kind.REPEATED_SCALAR:
            values[step.name] = list(value)
        elif kind == Kind.REPEATED_ENUM:
            values[step.name] = [step.target(v) for v in value]
        elif kind == Kind.REPEATED_MESSAGE:
            values[step.name] = [from_proto(item, step.target) for item in value]
        elif kind == Kind.MAP:
            values[step.name] = dict(value)
    return cls(**values, **extra)
