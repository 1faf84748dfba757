"""Reading and writing edgecore.yaml / cloudcore.yaml the way upstream does, with precise messages.

This module owns the file semantics of upstream's config parsing: start from the full defaults and
lay the file on top (nested objects merged key by key, maps merged, lists replaced, ``null`` keeps
the default of a field that cannot be empty), never check ``apiVersion``/``kind``, and apply the
bootstrap token file to ``edgeHub.token``. It also owns the messages: an unknown key is a warning
(``edgecore.yaml:12: unknown key modules.edgeHub.websockt (ignored)``, logged on the ``config``
logger by ``load_edgecore``/``load_cloudcore``); a missing file, bad YAML, a wrong type or a failed
check raise ``ConfigError`` naming the file, the line and the full key path. Finally it writes
configs back as YAML: the full tree (``--defaultconfig``) or the minimal one (``--minconfig``).
"""

from __future__ import annotations

import logging
import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from common.config.base import DURATION_EXPECTED, ConfigModel, FieldProblems, pick_keys
from common.config.cloudcore import (
    CLOUDCORE_MIN_KEYS,
    MIN_CONFIG_KUBE_CONFIG,
    MIN_CONFIG_NODE_LIMIT,
    CloudCoreConfig,
)
from common.config.edgecore import EDGECORE_MIN_KEYS, EdgeCoreConfig

try:
    from yaml import CSafeDumper as _Dumper
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

log = logging.getLogger("config")

DEFAULT_EDGECORE_CONFIG_PATH = Path("/etc/kubeedge/config/edgecore.yaml")
DEFAULT_CLOUDCORE_CONFIG_PATH = Path("/etc/kubeedge/config/cloudcore.yaml")
DEFAULT_BOOTSTRAP_TOKEN_PATH = Path("/etc/kubeedge/bootstrap-edgecore.conf")

M = TypeVar("M", bound=ConfigModel)
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One finding about a config file: where it is and what is wrong."""

    source: str
    line: int | None
    path: str
    """Full camelCase key path, e.g. ``modules.edgeHub.heartbeat`` (empty for the whole file)."""
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.message}"


class ConfigError(ValueError):
    """A config file that cannot be used.

    ``str()`` has one line per problem, followed by the unknown-key warnings of the same file (a
    misspelt key is often why a check failed). ``issues`` and ``warnings`` hold them separately.
    """

    def __init__(
        self, message: str, issues: Sequence[ConfigIssue] = (), warnings: Sequence[ConfigIssue] = ()
    ) -> None:
        super().__init__(message)
        self.issues = tuple(issues)
        self.warnings = tuple(warnings)


@dataclass(frozen=True)
class LoadResult(Generic[M]):
    config: M
    warnings: tuple[ConfigIssue, ...]


def load_config(path: str | os.PathLike[str], model: type[M]) -> LoadResult[M]:
    """Parse ``path`` into ``model`` on top of its defaults; warnings are returned, not logged."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {source} not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {source}: {exc}") from None
    root = _parse_yaml(text, source)
    if root is None:
        root = _LineMap()
    if not isinstance(root, dict):
        raise ConfigError(f"{source}:1: expected a mapping at the top level, got {_describe(root)}")
    warnings: list[ConfigIssue] = []
    cleaned = _clean(root, model, (), source, warnings)
    try:
        config = model.model_validate(cleaned)
    except ValidationError as exc:
        issues = _issues(exc, model, root, source)
        message = "\n".join(map(str, [*issues, *warnings]))
        raise ConfigError(message, issues, warnings) from None
    return LoadResult(config, tuple(warnings))


def load_edgecore(
    path: str | os.PathLike[str] = DEFAULT_EDGECORE_CONFIG_PATH,
    *,
    bootstrap_token_path: str | os.PathLike[str] = DEFAULT_BOOTSTRAP_TOKEN_PATH,
) -> EdgeCoreConfig:
    """Load edgecore.yaml; if the bootstrap token file exists, its trimmed content is the token."""
    result = load_config(path, EdgeCoreConfig)
    _log_warnings(result.warnings)
    config = result.config
    config._source_path = Path(path)
    token_file = Path(bootstrap_token_path)
    if token_file.exists():
        try:
            config.modules.edge_hub.token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read bootstrap token file {token_file}: {exc}") from None
    return config


def load_cloudcore(path: str | os.PathLike[str] = DEFAULT_CLOUDCORE_CONFIG_PATH) -> CloudCoreConfig:
    """Load cloudcore.yaml. Call ``adjust()`` on the result to apply the start-time corrections."""
    result = load_config(path, CloudCoreConfig)
    _log_warnings(result.warnings)
    return result.config


def dump_yaml(config: ConfigModel) -> str:
    """The whole config as YAML with upstream's keys; unset optional keys are left out."""
    return _to_yaml(_tree(config))


def default_config_yaml(kind: Literal["edgecore", "cloudcore"], minimal: bool = False) -> str:
    """What ``--defaultconfig`` (full tree) or ``--minconfig`` (``minimal=True``) prints."""
    if kind == "edgecore":
        edge = EdgeCoreConfig()
        return _to_yaml(pick_keys(_tree(edge), EDGECORE_MIN_KEYS) if minimal else _tree(edge))
    cloud = CloudCoreConfig()
    if not minimal:
        return _to_yaml(_tree(cloud))
    cloud.modules.cloud_hub.node_limit = MIN_CONFIG_NODE_LIMIT
    cloud.kube_api_config.kube_config = MIN_CONFIG_KUBE_CONFIG
    return _to_yaml(pick_keys(_tree(cloud), CLOUDCORE_MIN_KEYS))


def _log_warnings(warnings: Sequence[ConfigIssue]) -> None:
    for warning in warnings:
        log.warning("%s", warning)


def _tree(config: ConfigModel) -> dict[str, Any]:
    return config.model_dump(mode="json", by_alias=True, exclude_none=True)


def _to_yaml(tree: Mapping[str, Any]) -> str:
    return yaml.dump(tree, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


# --- YAML with line numbers -------------------------------------------------------------------


class _LineMap(dict[Any, Any]):
    """A YAML mapping that remembers the 1-based line of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}


class _LineSeq(list[Any]):
    """A YAML sequence that remembers the 1-based line of each item."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []


class _LineLoader(_BaseLoader):
    """The safe loader, building ``_LineMap``/``_LineSeq`` instead of plain dicts and lists."""


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Iterator[_LineMap]:
    data = _LineMap()
    yield data
    data.update(loader.construct_mapping(node))
    data.lines = {
        key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)
    }


def _construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> Iterator[_LineSeq]:
    data = _LineSeq()
    yield data
    data.extend(loader.construct_sequence(node))
    data.lines = [item.start_mark.line + 1 for item in node.value]


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        detail = exc.problem or "syntax error"
        if exc.context and exc.context_mark is not None:
            detail = f"{detail} ({exc.context} started at line {exc.context_mark.line + 1})"
        elif exc.context:
            detail = f"{detail} ({exc.context})"
        raise ConfigError(f"{where}: invalid YAML: {detail}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None


def _line_of(root: object, path: KeyPath) -> int | None:
    """The line of the deepest element of ``path`` present in the file."""
    line: int | None = None
    node = root
    for key in path:
        if isinstance(node, _LineMap) and isinstance(key, str) and key in node:
            line = node.lines.get(key, line)
            node = node[key]
        elif isinstance(node, _LineSeq) and isinstance(key, int) and 0 <= key < len(node):
            line = node.lines[key]
            node = node[key]
        else:
            break
    return line


# --- the shape of the models, by key ----------------------------------------------------------


class _Field(NamedTuple):
    shape: Literal["model", "list", "map", "scalar"]
    child: type[ConfigModel] | None
    """The model of the value (``model``) or of the items (``list``), if any."""
    nullable: bool
    info: FieldInfo


def _field_of(info: FieldInfo) -> _Field:
    annotation = info.annotation
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            return _Field("scalar", None, nullable, info)
        annotation = members[0]
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return _Field("model", annotation, nullable, info)
    if origin is list:
        (item,) = typing.get_args(annotation)
        child = item if isinstance(item, type) and issubclass(item, ConfigModel) else None
        return _Field("list", child, nullable, info)
    if origin is dict:
        return _Field("map", None, nullable, info)
    return _Field("scalar", None, nullable, info)


@cache
def _fields(model: type[ConfigModel]) -> dict[str, _Field]:
    """The fields of ``model`` by their key in the file."""
    return {(info.alias or name): _field_of(info) for name, info in model.model_fields.items()}


def _clean(
    data: Mapping[Any, Any], model: type[ConfigModel], path: KeyPath, source: str, warnings: list[ConfigIssue]
) -> dict[str, Any]:
    """Keep the known keys of ``data`` (warning about the rest) and merge maps with their defaults."""
    fields = _fields(model)
    lines = data.lines if isinstance(data, _LineMap) else {}
    cleaned: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            dotted = _dotted((*path, str(key)))
            warnings.append(
                ConfigIssue(source, lines.get(str(key)), dotted, f"unknown key {dotted} (ignored)")
            )
            continue
        if value is None and not field.nullable:
            continue
        if field.shape == "model" and field.child is not None and isinstance(value, Mapping):
            value = _clean(value, field.child, (*path, key), source, warnings)
        elif field.shape == "list" and field.child is not None and isinstance(value, list):
            child = field.child
            value = [
                _clean(item, child, (*path, key, index), source, warnings)
                if isinstance(item, Mapping)
                else item
                for index, item in enumerate(value)
            ]
        elif field.shape == "map" and isinstance(value, Mapping):
            default = field.info.get_default(call_default_factory=True)
            if default:
                value = {**default, **value}
        cleaned[key] = value
    return cleaned


def _key_path(model: type[ConfigModel], loc: tuple[str | int, ...]) -> KeyPath:
    """The file keys in a pydantic error location (dropping union member labels)."""
    path: list[str | int] = []
    shape: str = "model"
    child: type[ConfigModel] | None = model
    for element in loc:
        if shape == "model" and child is not None:
            field = _fields(child).get(element) if isinstance(element, str) else None
            if field is None:
                continue
            path.append(element)
            shape, child = field.shape, field.child
        elif shape == "list" and isinstance(element, int):
            path.append(element)
            shape = "model" if child is not None else "scalar"
        elif shape == "map":
            path.append(element)
            shape, child = "scalar", None
    return tuple(path)


def _dotted(path: Sequence[str | int]) -> str:
    """``modules.cloudHub.advertiseAddress[0]``; map keys holding dots are quoted: ``evictionHard["a.b"]``."""
    text = ""
    for element in path:
        if isinstance(element, int):
            text += f"[{element}]"
        elif "." in element or not element:
            text += f'["{element}"]'
        else:
            text += f".{element}" if text else element
    return text


# --- pydantic errors as messages --------------------------------------------------------------

_EXPECTED_BY_TYPE = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "string_type": "a string",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "go_duration": DURATION_EXPECTED,
}


def _expected(error: ErrorDetails) -> str | None:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind in _EXPECTED_BY_TYPE:
        return _EXPECTED_BY_TYPE[kind]
    if kind == "literal_error":
        return f"one of {ctx['expected']}"
    for bound, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx and kind.startswith(("greater_than", "less_than")):
            return f"a number {word} {ctx[bound]}"
    return None


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _issues(exc: ValidationError, model: type[ConfigModel], root: object, source: str) -> list[ConfigIssue]:
    """One issue per failing key; union members failing on the same key are merged."""
    expectations: dict[KeyPath, list[str]] = {}
    inputs: dict[KeyPath, object] = {}
    problems: list[tuple[KeyPath, str]] = []
    for error in exc.errors(include_url=False):
        path = _key_path(model, error["loc"])
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, FieldProblems):
            for relative, message in cause.problems:
                problems.append(((*path, *relative.split(".")), message))
            continue
        expected = _expected(error)
        if expected is None:
            message = str(cause) if cause is not None else error["msg"]
            problems.append((path, message))
            continue
        expectations.setdefault(path, [])
        if expected not in expectations[path]:
            expectations[path].append(expected)
        inputs[path] = error["input"]
    for path, expected_list in expectations.items():
        problems.append((path, f"expected {' or '.join(expected_list)}, got {_describe(inputs[path])}"))
    issues = []
    for path, message in problems:
        dotted = _dotted(path)
        issues.append(ConfigIssue(source, _line_of(root, path), dotted, f"{dotted or '<top>'}: {message}"))
    issues.sort(key=lambda issue: issue.line if issue.line is not None else 0)
    return issues
