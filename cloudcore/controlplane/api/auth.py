"""Who is calling and what they may do: client certificates or bearer tokens, admin vs node identities.

Authentication: a client certificate verified by the control plane's CA (CN = user, O = groups), or
a bearer token from the token file (`token,user,group1;group2` per line, like kube-apiserver's static
token file). Anything else is anonymous and refused with 401.

Authorization: `system:masters` may do everything. A node (`system:node:<name>` in `system:nodes`)
may read what its node needs and write its own objects, like kube-apiserver's Node authorizer:
its Node and its status, pods bound to it (list/watch only with `fieldSelector=spec.nodeName=<name>`),
the configmaps, secrets and service accounts those pods reference, services and endpoints, its lease,
and events. Everything else is 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cloudcore.controlplane.api import errors
from cloudcore.controlplane.api.resources import ResourceInfo
from cloudcore.controlplane.store.store import Store
from cloudcore.controlplane.store.types import Key

MASTERS: Final = "system:masters"
NODES: Final = "system:nodes"
NODE_PREFIX: Final = "system:node:"
_NODE_READ_ALL: Final = frozenset({"services", "endpoints", "endpointslices.discovery.k8s.io", "namespaces",
                                   "customresourcedefinitions.apiextensions.k8s.io"})
_READ: Final = frozenset({"get", "list", "watch"})


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return MASTERS in self.groups

    @property
    def node_name(self) -> str | None:
        if NODES in self.groups and self.user.startswith(NODE_PREFIX):
            return self.user.removeprefix(NODE_PREFIX)
        return None


def identity_from_peercert(peercert: Mapping[str, Any] | None) -> Identity | None:
    """From ssl's getpeercert() dict of a certificate the TLS layer already verified."""
    if not peercert:
        return None
    common_name, groups = "", []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                common_name = value
            elif key == "organizationName":
                groups.append(value)
    return Identity(common_name, tuple(groups)) if common_name else None


class TokenFile:
    """Static bearer tokens: `token,user[,group1;group2]` lines; compared in constant time."""

    def __init__(self, path: Path) -> None:
        self._entries: list[tuple[bytes, Identity]] = []
        if path.exists():
            for line in path.read_text().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 2 and parts[0] and not parts[0].startswith("#"):
                    groups = tuple(g for g in (parts[2].split(";") if len(parts) > 2 else ()) if g)
                    self._entries.append((parts[0].encode(), Identity(parts[1], groups)))

    def lookup(self, token: str) -> Identity | None:
        given = token.encode()
        found = None
        for known, identity in self._entries:
            if hmac.compare_digest(known, given):
                found = identity
        return found


def _forbidden(identity: Identity, verb: str, info: ResourceInfo, namespace: str, why: str) -> errors.APIError:
    where = f' in the namespace "{namespace}"' if namespace else ""
    return errors.forbidden(f'{info.plural}{"." + info.group if info.group else ""} is forbidden: User '
                            f'"{identity.user}" cannot {verb} resource "{info.plural}" in API group "{info.group}"'
                            f"{where}: {why}")


def authorize(identity: Identity, verb: str, info: ResourceInfo, namespace: str, name: str, subresource: str,
              field_selector: str, store: Store) -> None:
    """Raise 403 unless `identity` may do `verb` on the object; admins may do anything."""
    if identity.is_admin:
        return
    node = identity.node_name
    if node is None:
        raise _forbidden(identity, verb, info, namespace, "no RBAC policy matched")
    if _node_allowed(node, verb, info, namespace, name, subresource, field_selector, store):
        return
    raise _forbidden(identity, verb, info, namespace, f"no relationship found between node '{node}' and this object")


def _node_allowed(node: str, verb: str, info: ResourceInfo, namespace: str, name: str, subresource: str,
                  field_selector: str, store: Store) -> bool:
    gr = info.gr
    if gr in _NODE_READ_ALL:
        return verb in _READ
    if gr == "nodes":
        return verb in _READ or (name == node and verb in ("create", "update", "patch"))
    if gr == "events":
        return verb in ("create", "update", "patch", "get", "list", "watch")
    if gr == "leases.coordination.k8s.io":
        return namespace == "kube-node-lease" and (name == node or verb == "create")
    if gr == "pods":
        if verb in ("list", "watch"):
            return f"spec.nodeName={node}" in field_selector.replace("==", "=").split(",")
        if verb == "create":  # mirror pods of static pods
            return True
        pod = store.get(Key("pods", namespace, name))
        bound = pod is not None and pod.fields.get("spec.nodeName") == node
        return bound and (verb == "get" or (verb in ("update", "patch") and subresource == "status")
                          or verb == "delete")
    if gr in ("configmaps", "secrets", "serviceaccounts") and verb == "get":
        return _referenced_by_node_pods(node, gr, namespace, name, store)
    return False


def _referenced_by_node_pods(node: str, gr: str, namespace: str, name: str, store: Store) -> bool:
    pods, _ = store.list("pods", namespace)
    for stored in pods:
        if stored.fields.get("spec.nodeName") != node:
            continue
        spec = stored.decode().get("spec") or {}
        if gr == "serviceaccounts" and spec.get("serviceAccountName", "default") == name:
            return True
        if name in _pod_references(spec, "configMap" if gr == "configmaps" else "secret"):
            return True
    return False


def _pod_references(spec: Mapping[str, Any], kind: str) -> set[str]:
    """Names of configmaps (kind `configMap`) or secrets (`secret`) a pod spec uses anywhere."""
    names: set[str] = set()
    key_ref, env_from, volume_key = (("configMapKeyRef", "configMapRef", "name") if kind == "configMap"
                                     else ("secretKeyRef", "secretRef", "secretName"))
    for volume in spec.get("volumes") or ():
        source = volume.get(kind)
        if isinstance(source, Mapping) and source.get(volume_key):
            names.add(str(source[volume_key]))
        for projection in ((volume.get("projected") or {}).get("sources") or ()):
            source = projection.get(kind)
            if isinstance(source, Mapping) and source.get("name"):
                names.add(str(source["name"]))
    for container in (*(spec.get("containers") or ()), *(spec.get("initContainers") or ())):
        for env in container.get("env") or ():
            ref = ((env.get("valueFrom") or {}).get(key_ref) or {}).get("name")
            if ref:
                names.add(str(ref))
        for source in container.get("envFrom") or ():
            ref = (source.get(env_from) or {}).get("name")
            if ref:
                names.add(str(ref))
    if kind == "secret":
        names.update(str(s.get("name")) for s in spec.get("imagePullSecrets") or () if s.get("name"))
    return names
