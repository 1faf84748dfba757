"""Which nodes a NodeGroup holds, which labels to add or take away, and its status (pure, no I/O).

Membership = `spec.nodes` plus nodes whose labels contain every `spec.matchLabels` pair (a nil matchLabels
selects none; an empty map selects all, as upstream's SelectorFromSet). A node belongs to at most one
group: a node labelled for another group is reported Failed and left alone. What it must never do:
plan a label change on a node that belongs to another group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudcore.controllermanager import keys

Object = dict[str, Any]


@dataclass(frozen=True, slots=True)
class GroupPlan:
    label: list[str] = field(default_factory=list)  # nodes to label belonging-to=<group>
    unlabel: list[str] = field(default_factory=list)  # nodes to unlabel (and evict the group's pods)
    node_statuses: list[Object] = field(default_factory=list)  # sorted by nodeName


def _spec(group: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = group.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


def belongs_to(node: Mapping[str, Any]) -> str:
    return str(labels_of(node).get(keys.BELONGING_TO) or "")


def selects(group: Mapping[str, Any], node_name: str, node_labels: Mapping[str, str]) -> bool:
    """Whether the group wants this node (by name or by labels)."""
    spec = _spec(group)
    if node_name in (spec.get("nodes") or []):
        return True
    match = spec.get("matchLabels")
    if not isinstance(match, Mapping):
        return False
    return all(node_labels.get(k) == v for k, v in match.items())


def ready_status(node: Mapping[str, Any]) -> str:
    status = node.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for condition in conditions or []:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return {"True": keys.READY, "False": keys.NOT_READY}.get(str(condition.get("status")), keys.UNKNOWN)
    return keys.UNKNOWN


def plan_group(group_name: str, group: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]]) -> GroupPlan:
    """What to change for `group` given every node (name -> Node object)."""
    wanted = {str(n) for n in _spec(group).get("nodes") or []}
    if isinstance(_spec(group).get("matchLabels"), Mapping):
        wanted |= {name for name, node in nodes.items() if selects(group, name, labels_of(node))}
    plan = GroupPlan()
    for name in sorted(wanted):
        node = nodes.get(name)
        if node is None:
            plan.node_statuses.append(_status(name, keys.UNKNOWN, keys.FAILED, keys.NODE_MISSING_REASON))
            continue
        holder = belongs_to(node)
        if holder and holder != group_name:
            plan.node_statuses.append(_status(name, ready_status(node), keys.FAILED,
                                              keys.already_belongs_reason(name, holder)))
            continue
        if holder != group_name:
            plan.label.append(name)
        plan.node_statuses.append(_status(name, ready_status(node), keys.SUCCEEDED, ""))
    plan.unlabel.extend(sorted(name for name, node in nodes.items()
                               if belongs_to(node) == group_name and name not in wanted))
    return plan


def plan_release(group_name: str, nodes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Nodes to unlabel when the group is deleted."""
    return sorted(name for name, node in nodes.items() if belongs_to(node) == group_name)


def groups_for_node(node_name: str, labels_now: Mapping[str, str], labels_before: Mapping[str, str],
                    groups: Iterable[tuple[str, Mapping[str, Any]]]) -> set[str]:
    """Groups a node event may concern: the groups it was or is labelled for, and every group selecting it."""
    found = {str(v) for v in (labels_now.get(keys.BELONGING_TO), labels_before.get(keys.BELONGING_TO)) if v}
    for name, group in groups:
        if selects(group, node_name, labels_now) or selects(group, node_name, labels_before):
            found.add(name)
    return found


def _status(name: str, ready: str, selection: str, reason: str) -> Object:
    status: Object = {"nodeName": name, "readyStatus": ready, "selectionStatus": selection}
    if reason:
        status["selectionStatusReason"] = reason
    return status
