"""cloudcore.yaml and edgecore.yaml as keadm writes them: only the keys that differ from the defaults.

Owns `--set` and `--labels` parsing, the override trees built from flags, and validation through the
daemons' own loader (common.config), so a file keadm writes is one the daemon accepts. Never writes files.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from common.config import CloudCoreConfig, ConfigError, EdgeCoreConfig
from common.config.loader import default_config_yaml, load_config
from keadm.paths import Paths

CLOUDCORE_API_VERSION = "cloudcore.config.kubeedge.io/v1alpha2"
EDGECORE_API_VERSION = "edgecore.config.kubeedge.io/v1alpha2"
DEFAULT_CERT_PORT = 10002
DEFAULT_QUIC_PORT = 10001
DEFAULT_WEBSOCKET_PORT = 10000
DEFAULT_TUNNEL_PORT = 10004
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")

Tree = dict[str, Any]
M = TypeVar("M", CloudCoreConfig, EdgeCoreConfig)


class RenderError(ValueError):
    """A flag or `--set` value that makes no valid config; the message names the flag."""


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside [...] and {...} (so `--set a=[x,y],b=1` is two items)."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_set(items: Iterable[str]) -> Tree:
    """`--set modules.edged.reportEvent=true` (repeatable, comma-separated) as a nested tree.

    Keys are the config file's camelCase path; values are YAML scalars or flow lists/maps.
    """
    tree: Tree = {}
    for item in items:
        for assignment in split_top_level(item):
            key, sep, raw = assignment.partition("=")
            if not sep or not key.strip():
                raise RenderError(f"--set {assignment!r}: expected KEY=VALUE, e.g. modules.edged.reportEvent=true")
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError as exc:
                raise RenderError(f"--set {key}: value {raw!r} is not valid YAML: {exc}") from None
            node = tree
            parts = key.strip().split(".")
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise RenderError(f"--set {key}: {part} was already given a value")
                node = child
            node[parts[-1]] = value
    return tree


def parse_labels(text: str) -> dict[str, str]:
    """`--labels k1=v1,k2=v2` (Kubernetes label syntax checked)."""
    labels: dict[str, str] = {}
    for item in split_top_level(text):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _LABEL_KEY.fullmatch(key) or len(key.rpartition("/")[2]) > 63:
            raise RenderError(f"--labels {item!r}: expected key=value with a valid label key (e.g. zone=a)")
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise RenderError(f"--labels {item!r}: label values are at most 63 of [A-Za-z0-9-_.], "
                              "starting and ending alphanumeric")
        labels[key] = value
    return labels


def merge(base: Tree, overlay: Mapping[str, Any]) -> Tree:
    """A copy of `base` with `overlay` merged in (maps merge, anything else replaces)."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def prune_defaults(tree: Mapping[str, Any], defaults: Mapping[str, Any]) -> Tree:
    """Drop the keys whose value equals the default (maps compared key by key, empty maps dropped)."""
    kept: Tree = {}
    for key, value in tree.items():
        default = defaults.get(key, _MISSING)
        if isinstance(value, Mapping) and isinstance(default, Mapping):
            sub = prune_defaults(value, default)
            if sub:
                kept[key] = sub
        elif value != default:
            kept[key] = value
    return kept


_MISSING = object()

EDGE_EXPLICIT: list[tuple[str, ...]] = [
    ("modules", "edged", "hostnameOverride"),
    ("modules", "edgeHub", "httpServer"),
    ("modules", "edgeHub", "websocket", "server"),
    ("modules", "edgeHub", "quic", "server"),
    ("modules", "edgeStream", "server"),
]


def keep_explicit(body: Tree, tree: Mapping[str, Any], key_paths: Iterable[tuple[str, ...]]) -> None:
    """Put back into `body` the values of `tree` at `key_paths` that pruning removed."""
    for key_path in key_paths:
        source: Any = tree
        for key in key_path:
            source = source.get(key, _MISSING) if isinstance(source, Mapping) else _MISSING
        if source is _MISSING:
            continue
        node = body
        for key in key_path[:-1]:
            node = node.setdefault(key, {})
        node[key_path[-1]] = source


def _defaults(kind: Literal["edgecore", "cloudcore"]) -> Tree:
    loaded = yaml.safe_load(default_config_yaml(kind))
    assert isinstance(loaded, dict)
    return loaded


def to_yaml(tree: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(tree), sort_keys=False, default_flow_style=False)


def validate(text: str, model: type[M], name: str) -> M:
    """Load `text` with the daemon's loader; unknown keys are errors here (a typo in --set)."""
    with tempfile.TemporaryDirectory(prefix="keadm-") as scratch:
        path = Path(scratch) / name
        path.write_text(text)
        try:
            result = load_config(path, model)
        except ConfigError as exc:
            raise RenderError(str(exc).replace(str(path), name)) from None
    if result.warnings:
        raise RenderError("; ".join(str(w).replace(str(path), name) for w in result.warnings))
    return result.config


@dataclass
class Rendered:
    text: str
    config: Any


@dataclass
class CloudOptions:
    advertise_address: list[str]
    kube_config: Path
    dns_names: list[str] = field(default_factory=list)
    stream_ca: Path | None = None
    """The API server's kubelet-client CA: given, cloudStream is enabled (kubectl logs/exec)."""
    sets: Tree = field(default_factory=dict)


def cloudcore_tree(options: CloudOptions, paths: Paths) -> Tree:
    hub: Tree = {
        "advertiseAddress": options.advertise_address,
        "tlsCAFile": str(paths.ca_dir / "rootCA.crt"),
        "tlsCAKeyFile": str(paths.ca_dir / "rootCA.key"),
        "tlsCertFile": str(paths.certs_dir / "server.crt"),
        "tlsPrivateKeyFile": str(paths.certs_dir / "server.key"),
        "unixsocket": {"address": f"unix://{paths.var / 'kubeedge.sock'}"},
    }
    if options.dns_names:
        hub["dnsNames"] = options.dns_names
    modules: Tree = {"cloudHub": hub, "dynamicController": {"enable": True}}
    if options.stream_ca is not None:
        modules["cloudStream"] = {
            "enable": True,
            "tlsTunnelCAFile": str(paths.ca_dir / "rootCA.crt"),
            "tlsTunnelCertFile": str(paths.certs_dir / "server.crt"),
            "tlsTunnelPrivateKeyFile": str(paths.certs_dir / "server.key"),
            "tlsStreamCAFile": str(options.stream_ca),
            "tlsStreamCertFile": str(paths.certs_dir / "stream.crt"),
            "tlsStreamPrivateKeyFile": str(paths.certs_dir / "stream.key"),
        }
    return {"kubeAPIConfig": {"kubeConfig": str(options.kube_config)}, "modules": modules}


def render_cloudcore(options: CloudOptions, paths: Paths) -> Rendered:
    tree = merge(cloudcore_tree(options, paths), options.sets)
    body = prune_defaults(tree, _defaults("cloudcore"))
    # the certificate's IPs stay explicit: the default is this host's first IP when cloudcore starts
    keep_explicit(body, tree, [("modules", "cloudHub", "advertiseAddress")])
    text = to_yaml({"apiVersion": CLOUDCORE_API_VERSION, "kind": "CloudCore", **body})
    return Rendered(text, validate(text, CloudCoreConfig, "cloudcore.yaml"))


@dataclass
class EdgeOptions:
    cloud_host: str
    cloud_port: int
    node_name: str
    cert_port: int = DEFAULT_CERT_PORT
    runtime_endpoint: str = "unix:///run/containerd/containerd.sock"
    cgroup_driver: str = "cgroupfs"
    cert_dir: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)
    hub_protocol: str = "websocket"
    sets: Tree = field(default_factory=dict)


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def edgecore_tree(options: EdgeOptions, paths: Paths) -> Tree:
    certs = options.cert_dir or paths.certs_dir
    ca, cert, key = str(paths.ca_dir / "rootCA.crt"), str(certs / "server.crt"), str(certs / "server.key")
    ipport = host_port(options.cloud_host, options.cloud_port)
    if options.hub_protocol == "quic":
        websocket = {"enable": False, "server": host_port(options.cloud_host, DEFAULT_WEBSOCKET_PORT)}
        quic = {"enable": True, "server": ipport}
    else:
        websocket = {"enable": True, "server": ipport}
        quic = {"enable": False, "server": host_port(options.cloud_host, DEFAULT_QUIC_PORT)}
    kubelet: Tree = {"containerRuntimeEndpoint": options.runtime_endpoint,
                     "imageServiceEndpoint": options.runtime_endpoint,
                     "cgroupDriver": options.cgroup_driver,
                     "staticPodPath": str(paths.etc / "manifests")}
    edged: Tree = {"hostnameOverride": options.node_name, "tailoredKubeletConfig": kubelet}
    if options.labels:
        edged["nodeLabels"] = options.labels
    return {
        "database": {"dataSource": str(paths.var / "edgecore.db")},
        "modules": {
            "edged": edged,
            "edgeHub": {
                "httpServer": f"https://{host_port(options.cloud_host, options.cert_port)}",
                "tlsCaFile": ca, "tlsCertFile": cert, "tlsPrivateKeyFile": key,
                "websocket": websocket, "quic": quic,
            },
            "deviceTwin": {"dmiSockPath": str(paths.etc / "dmi.sock")},
            "edgeStream": {  # kubectl logs/exec through cloudcore's tunnel (cloudStream)
                "enable": True,
                "server": host_port(options.cloud_host, DEFAULT_TUNNEL_PORT),
                "tlsTunnelCAFile": ca, "tlsTunnelCertFile": cert, "tlsTunnelPrivateKeyFile": key,
            },
        },
    }


def render_edgecore(options: EdgeOptions, paths: Paths) -> Rendered:
    tree = merge(edgecore_tree(options, paths), options.sets)
    defaults = _defaults("edgecore")
    body = prune_defaults(tree, defaults)
    # defaults computed from this host (its name, its IP) stay explicit: the file must not depend on them
    keep_explicit(body, tree, EDGE_EXPLICIT)
    text = to_yaml({"apiVersion": EDGECORE_API_VERSION, "kind": "EdgeCore", **body})
    return Rendered(text, validate(text, EdgeCoreConfig, "edgecore.yaml"))
