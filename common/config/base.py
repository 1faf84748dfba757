"""Building blocks shared by the edgecore and cloudcore config models.

This module owns:

- ``ConfigModel``: the pydantic base of every config object (camelCase aliases, Go-like strict
  types, validation on assignment, unknown keys ignored);
- ``Duration``: Go ``metav1.Duration`` values such as ``"1m0s"`` that keep their text on dump;
- the ``Int32`` / ``UInt32`` / ``UInt8`` ranges of upstream's integer fields;
- ``FieldProblems``: how cross-field checks report failures tied to a key path;
- small validators (DNS subdomain, IP, port, ``IP:port``) and ``pick_keys`` (subsets of a dumped tree);
- the host facts some upstream defaults depend on (hostname, local IP), computed lazily once.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, core_schema

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
UInt32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
UInt8 = Annotated[int, Field(ge=0, le=255)]

KeySpec: TypeAlias = Mapping[str, "KeySpec | bool"]
"""Which keys of a dumped config tree to keep: ``True`` keeps a whole subtree."""


class ConfigModel(BaseModel):
    """Base of all config models.

    Keys are upstream's camelCase JSON names (generated, or explicit where upstream is irregular);
    snake_case attribute names are accepted too when building models in code. Types are strict like
    Go's JSON decoder: ``"15"`` is not an integer and ``1`` is not a boolean.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
        strict=True,
        validate_assignment=True,
    )


_NANOS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_MAX_NANOS = 2**63 - 1
DURATION_EXPECTED = "a duration such as '1m0s', '10s' or '100ms'"


def parse_go_duration(text: str) -> int:
    """Return the nanoseconds of a Go ``time.ParseDuration`` string; raise ValueError if invalid."""
    body = text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    pos = 0
    while pos < len(body):
        match = _COMPONENT.match(body, pos)
        if match is None or not (match[1] or match[2]):
            raise ValueError(f"invalid duration {text!r}")
        whole, fraction, unit = match[1], match[2] or "", match[3]
        scale = _NANOS_PER_UNIT[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        pos = match.end()
    if total > _MAX_NANOS + (1 if sign < 0 else 0):
        raise ValueError(f"invalid duration {text!r}: out of range")
    return sign * total


class Duration:
    """A Go ``metav1.Duration``: parsed for use, written back exactly as it was given.

    Equality and hashing follow the length of time, so ``Duration("1m") == Duration("1m0s")``.
    """

    __slots__ = ("_nanoseconds", "_text")

    def __init__(self, text: str) -> None:
        self._nanoseconds = parse_go_duration(text)
        self._text = text

    @property
    def nanoseconds(self) -> int:
        return self._nanoseconds

    @property
    def seconds(self) -> float:
        return self._nanoseconds / 1e9

    @property
    def timedelta(self) -> datetime.timedelta:
        return datetime.timedelta(microseconds=self._nanoseconds // 1000)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Duration({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Duration):
            return self._nanoseconds == other._nanoseconds
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._nanoseconds)

    @classmethod
    def _coerce(cls, value: object) -> Duration:
        if isinstance(value, Duration):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        raise PydanticCustomError("go_duration", "expected " + DURATION_EXPECTED)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
        )


class FieldProblems(ValueError):
    """Failures found by a cross-field check, each tied to a key path below the checked model.

    ``problems`` holds ``(relative camelCase path, message)`` pairs such as
    ``("tailoredKubeletConfig.cgroupDriver", "expected 'cgroupfs' or 'systemd', got 'x'")``;
    the loader turns them into full key paths with file lines.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.problems))


def pick_keys(tree: Mapping[str, Any], spec: KeySpec) -> dict[str, Any]:
    """The part of ``tree`` named by ``spec``, in ``spec``'s order."""
    picked: dict[str, Any] = {}
    for key, sub in spec.items():
        if key not in tree:
            continue
        value = tree[key]
        picked[key] = (
            pick_keys(value, sub) if isinstance(sub, Mapping) and isinstance(value, Mapping) else value
        )
    return picked


def raise_problems(problems: Sequence[tuple[str, str]]) -> None:
    """Raise ``FieldProblems`` if a check found anything."""
    if problems:
        raise FieldProblems(problems)


_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")


def dns_subdomain_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes node name (RFC 1123 subdomain), or None if it is one."""
    if len(value) > 253:
        return f"must be no more than 253 characters, got {len(value)}"
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        return (
            "expected a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.', starting and ending "
            f"with an alphanumeric character), got {value!r}"
        )
    return None


def ip_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"expected a valid IP address, got {value!r}"
    return None


def port_problem(value: int) -> str | None:
    if not 1 <= value <= 65535:
        return f"expected a port between 1 and 65535, got {value}"
    return None


def host_port_problem(value: str) -> str | None:
    """Why ``value`` is not ``IP:port`` (IPv6 in brackets), or None."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return f"expected IP:port, got {value!r}"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return ip_problem(host) or port_problem(int(port))


@functools.cache
def default_hostname() -> str:
    """The OS hostname, trimmed and lowercased, as upstream uses for ``hostnameOverride``."""
    return socket.gethostname().strip().lower()


@functools.cache
def local_ip() -> str:
    """The address this host's name resolves to, or 127.0.0.1 when it does not resolve."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


@functools.cache
def first_host_ip() -> str:
    """The first non-loopback IPv4 address of this host, or ``local_ip()`` if there is none.

    The address of the interface holding the default route is preferred; finding it sends nothing
    (a UDP socket is only connected, never written to).
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    for info in infos:
        address = str(info[4][0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return local_ip()
