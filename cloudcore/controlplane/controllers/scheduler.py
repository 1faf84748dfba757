"""Scheduler: binds pending pods (no spec.nodeName, schedulerName default-scheduler) to a node.

Owns the pure node filters and the score that kube-scheduler's default plugins apply, shared with
the DaemonSet controller: node readiness and cordon (as the taints kube's node lifecycle adds for
them), nodeSelector, required node affinity (matchExpressions In/NotIn/Exists/DoesNotExist/Gt/Lt,
matchFields metadata.name), NoSchedule/NoExecute taints against tolerations, and resource fit
(container requests of the pods already on the node plus this pod within allocatable, and the pod
count). The score is least-requested (with kube-scheduler's non-zero defaults for pods that
request nothing, so best-effort pods spread), ties broken by fewer pods, then by node name, so
placement is deterministic. As kube-scheduler (percentageOfNodesToScore), a cluster of 100 nodes or
more is filtered only until enough nodes fit (`feasible_nodes_to_find`), each pod starting where the
previous one stopped, so one decision does not cost the whole cluster.

Binding follows pods/binding: spec.nodeName is set through the ObjectAPI (the resourceVersion the
decision was made on is the precondition, a Conflict re-queues the pod), then the PodScheduled
condition. A pod that fits nowhere gets PodScheduled=False reason Unschedulable with
kube-scheduler's message, and is retried when a node changes (added, labels, taints, cordon,
readiness, allocatable) or a bound pod releases resources.

What it must never do: bind a pod another scheduler owns, move a bound pod, evict or preempt.
Differences from kube-scheduler: no preemption, no preferred affinity, pod (anti-)affinity, topology
spread or volume checks; a node that reports no figure at all for cpu, memory, ephemeral-storage or
pods is not limited on it (a hand-made node with an empty status still takes pods).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.controllers import kit
from cloudcore.controlplane.controllers.kit import Controller, Informers, Snapshot
from cloudcore.controlplane.store.types import Key

DEFAULT_SCHEDULER: Final = "default-scheduler"
TAINT_NOT_READY: Final = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE: Final = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE: Final = "node.kubernetes.io/unschedulable"
NO_SCHEDULE: Final = "NoSchedule"
NO_EXECUTE: Final = "NoExecute"

REASON_UNSCHEDULABLE_NODE: Final = "node(s) were unschedulable"
REASON_AFFINITY: Final = "node(s) didn't match Pod's node affinity/selector"
REASON_TOO_MANY_PODS: Final = "Too many pods"

# Resources a node is not limited on when it reports no figure for them (see the module docstring).
_BASIC_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage", "pods"})
# kube-scheduler's non-zero requests used for scoring only: 100 millicores, 200 MiB.
_NONZERO_CPU: Final = 100
_NONZERO_MEMORY: Final = 200 * 1024 * 1024

# ---- quantities ----------------------------------------------------------------------------------

_BINARY: Final = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL: Final = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
                   "k": Decimal(10) ** 3, "K": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
                   "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18}
_QUANTITY: Final = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkKMGTPE]?)")


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity ("500m", "1.5", "128Mi", "1G", "2e3") as an exact Decimal."""
    if isinstance(value, bool):
        raise ValueError(f"quantity {value!r} is not a number")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise ValueError(f"invalid quantity {value!r}") from None
    suffix = match.group(2)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Decimal(10) ** int(suffix[1:])
    return number * _DECIMAL[suffix]


def quantity_value(resource: str, value: str | int | float) -> int:
    """A quantity in the unit the scheduler counts: millicores for cpu, rounded-up units otherwise."""
    number = parse_quantity(value)
    if resource == "cpu":
        number *= 1000
    return math.ceil(number)


def resource_map(values: Mapping[str, Any] | None) -> dict[str, int]:
    """A ResourceList (`{"cpu": "500m", "memory": "1Gi"}`) in scheduler units; bad figures are skipped."""
    out: dict[str, int] = {}
    for name, value in (values or {}).items():
        try:
            out[str(name)] = quantity_value(str(name), value)
        except (ValueError, TypeError):
            continue
    return out


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for name, value in more.items():
        total[name] = total.get(name, 0) + value


def _container_requests(container: Mapping[str, Any]) -> dict[str, int]:
    resources = container.get("resources") or {}
    # requests default to limits when only limits are given (as the API server defaults them)
    return resource_map({**(resources.get("limits") or {}), **(resources.get("requests") or {})})


def pod_requests(spec: Mapping[str, Any]) -> dict[str, int]:
    """What a pod asks for: the sum over its containers, at least the largest init container, plus
    overhead; always one "pods"."""
    total: dict[str, int] = {}
    for container in spec.get("containers") or ():
        _add(total, _container_requests(container))
    for container in spec.get("initContainers") or ():
        for name, value in _container_requests(container).items():
            total[name] = max(total.get(name, 0), value)
    _add(total, resource_map(spec.get("overhead")))
    total["pods"] = 1
    return total


def nonzero_requests(spec: Mapping[str, Any]) -> tuple[int, int]:
    """(cpu millicores, memory bytes) for scoring, counting kube-scheduler's defaults for containers
    that request nothing."""
    cpu = memory = 0
    for container in spec.get("containers") or ():
        requests = _container_requests(container)
        cpu += requests.get("cpu", _NONZERO_CPU)
        memory += requests.get("memory", _NONZERO_MEMORY)
    return cpu, memory


# ---- nodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeView:
    """What filtering and scoring need of a node, extracted once per node revision."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, Any], ...]
    unschedulable: bool
    allocatable: Mapping[str, int]

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> NodeView:
        meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
        taints = [dict(t) for t in spec.get("taints") or () if isinstance(t, Mapping)]
        present = {(t.get("key"), t.get("effect")) for t in taints}
        implied = condition_taint(node)
        if implied is not None and (implied["key"], NO_SCHEDULE) not in present:
            taints.append(implied)
        allocatable = resource_map(status.get("capacity"))
        allocatable.update(resource_map(status.get("allocatable")))
        return cls(str(meta.get("name", "")), dict(meta.get("labels") or {}), tuple(taints),
                   bool(spec.get("unschedulable")), allocatable)


def condition_taint(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """The NoSchedule taint kube's node lifecycle puts on a node whose Ready condition is not True."""
    ready = None
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            ready = cond.get("status")
    if ready == "True":
        return None
    key = TAINT_UNREACHABLE if ready == "Unknown" else TAINT_NOT_READY
    return {"key": key, "effect": NO_SCHEDULE}


def scheduling_fields(node: Mapping[str, Any]) -> tuple[Any, ...]:
    """The parts of a node whose change can make a pending pod fit (heartbeats do not count)."""
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    return (meta.get("labels"), spec.get("taints"), spec.get("unschedulable"), status.get("allocatable"),
            status.get("capacity"), condition_taint(node))


# ---- filters -------------------------------------------------------------------------------------


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Whether one toleration tolerates one taint (an empty key with Exists tolerates every taint)."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taint(taints: Iterable[Mapping[str, Any]], tolerations: Sequence[Mapping[str, Any]],
                      effects: Iterable[str] = (NO_SCHEDULE, NO_EXECUTE)) -> Mapping[str, Any] | None:
    """The first taint with one of `effects` that no toleration tolerates."""
    wanted = set(effects)
    for taint in taints:
        if taint.get("effect") in wanted and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def taint_reason(taint: Mapping[str, Any]) -> str:
    return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value') or ''}}}"


def match_requirement(requirement: Mapping[str, Any], values_of: Mapping[str, str]) -> bool:
    """One NodeSelectorRequirement against a node's labels (or fields)."""
    key, operator = requirement.get("key", ""), requirement.get("operator", "")
    values = [str(v) for v in requirement.get("values") or ()]
    present = key in values_of
    if operator == "In":
        return present and values_of[key] in values
    if operator == "NotIn":
        return not present or values_of[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            have, want = int(values_of[key]), int(values[0])
        except ValueError:
            return False
        return have > want if operator == "Gt" else have < want
    return False


def match_term(term: Mapping[str, Any], node: NodeView) -> bool:
    """A NodeSelectorTerm: its expressions (labels) and fields (metadata.name), ANDed; empty matches nothing."""
    expressions = term.get("matchExpressions") or ()
    fields = term.get("matchFields") or ()
    if not expressions and not fields:
        return False
    node_fields = {"metadata.name": node.name}
    return (all(match_requirement(r, node.labels) for r in expressions)
            and all(match_requirement(r, node_fields) for r in fields))


def match_node_selector(spec: Mapping[str, Any], node: NodeView) -> bool:
    """spec.nodeSelector and required node affinity (terms ORed) both hold."""
    selector = spec.get("nodeSelector") or {}
    if any(node.labels.get(k) != v for k, v in selector.items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    return any(match_term(term, node) for term in required.get("nodeSelectorTerms") or ())


def insufficient(requests: Mapping[str, int], used: Mapping[str, int], node: NodeView) -> list[str]:
    """Resource reasons the pod does not fit: "Too many pods", "Insufficient cpu", ..."""
    reasons = []
    for name in sorted(requests):
        wanted = requests[name]
        if wanted <= 0:
            continue
        capacity = node.allocatable.get(name)
        if capacity is None:
            if name in _BASIC_RESOURCES:
                continue
            capacity = 0
        if used.get(name, 0) + wanted > capacity:
            reasons.append(REASON_TOO_MANY_PODS if name == "pods" else f"Insufficient {name}")
    return reasons


def filter_node(spec: Mapping[str, Any], requests: Mapping[str, int], node: NodeView,
                used: Mapping[str, int]) -> list[str]:
    """Why the pod cannot go to `node` (empty: it fits), in kube-scheduler's plugin order."""
    tolerations = spec.get("tolerations") or ()
    if node.unschedulable and not any(tolerates(t, {"key": TAINT_UNSCHEDULABLE, "effect": NO_SCHEDULE})
                                      for t in tolerations):
        return [REASON_UNSCHEDULABLE_NODE]
    taint = untolerated_taint(node.taints, tolerations)
    if taint is not None:
        return [taint_reason(taint)]
    if not match_node_selector(spec, node):
        return [REASON_AFFINITY]
    return insufficient(requests, used, node)


def score_node(nonzero: tuple[int, int], node: NodeView, used_nonzero: tuple[int, int]) -> int:
    """Least requested, 0..100: the share of cpu and memory left after placing the pod, averaged."""
    scores = []
    for name, wanted, used in (("cpu", nonzero[0], used_nonzero[0]), ("memory", nonzero[1], used_nonzero[1])):
        capacity = node.allocatable.get(name)
        if not capacity:
            scores.append(100)
            continue
        requested = used + wanted
        scores.append(0 if requested > capacity else (capacity - requested) * 100 // capacity)
    return sum(scores) // len(scores)


def unschedulable_message(total: int, reasons: Counter[str]) -> str:
    """kube-scheduler's FailedScheduling text: "0/3 nodes are available: 1 ..., 2 ...."."""
    if total == 0:
        return "no nodes available to schedule pods"
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    return f"0/{total} nodes are available: {', '.join(parts)}."


@dataclass(slots=True)
class Usage:
    """What the pods bound to one node take: requests (scheduler units) and non-zero cpu/memory."""

    requests: dict[str, int] = field(default_factory=dict)
    cpu: int = 0
    memory: int = 0

    def add(self, requests: Mapping[str, int], nonzero: tuple[int, int], sign: int) -> None:
        for name, value in requests.items():
            self.requests[name] = self.requests.get(name, 0) + sign * value
        self.cpu += sign * nonzero[0]
        self.memory += sign * nonzero[1]


@dataclass(frozen=True, slots=True)
class Decision:
    node: str | None
    message: str
    examined: int = 0  # nodes filtered, for the next pod's start (kube-scheduler's nextStartNodeIndex)


MIN_FEASIBLE_NODES: Final = 100
MIN_FEASIBLE_PERCENT: Final = 5


def feasible_nodes_to_find(total: int) -> int:
    """kube-scheduler's adaptive percentageOfNodesToScore: every node of a cluster under 100 nodes; beyond,
    stop after 50% less 1% per 125 nodes (at least 5%, at least 100 nodes) have passed the filters, so a
    decision costs O(100s) of nodes, not O(cluster). At 1,000 nodes: 420."""
    if total < MIN_FEASIBLE_NODES:
        return total
    percent = max(50 - total // 125, MIN_FEASIBLE_PERCENT)
    return max(total * percent // 100, MIN_FEASIBLE_NODES)


def schedule(spec: Mapping[str, Any], nodes: Sequence[NodeView], usage: Mapping[str, Usage],
             start: int = 0) -> Decision:
    """Pick the node for a pod: filter nodes from `start` on (wrapping) until `feasible_nodes_to_find`
    fit, score those, best score wins. With every node examined (small clusters, or nothing fits) the
    start does not matter."""
    requests = pod_requests(spec)
    nonzero = nonzero_requests(spec)
    reasons: Counter[str] = Counter()
    best: tuple[int, int, str] | None = None
    total = len(nodes)
    enough = feasible_nodes_to_find(total)
    feasible = examined = 0
    empty = Usage()
    while examined < total and feasible < enough:
        node = nodes[(start + examined) % total]
        examined += 1
        used = usage.get(node.name, empty)
        failed = filter_node(spec, requests, node, used.requests)
        if failed:
            reasons.update(failed)
            continue
        feasible += 1
        rank = (-score_node(nonzero, node, (used.cpu, used.memory)), used.requests.get("pods", 0), node.name)
        if best is None or rank < best:
            best = rank
    if best is None:
        return Decision(None, unschedulable_message(total, reasons), examined)
    return Decision(best[2], "", examined)


# ---- the controller ------------------------------------------------------------------------------


def _pod_is_pending(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and spec.get("schedulerName", DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER
            and not spec.get("schedulingGates") and not pod["metadata"].get("deletionTimestamp")
            and not kit.pod_terminal(pod))


def _pod_usage(pod: Mapping[str, Any]) -> tuple[str, dict[str, int], tuple[int, int]] | None:
    """(node, requests, non-zero requests) of a pod that holds resources on a node, else None."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    if not node or kit.pod_terminal(pod):
        return None
    return str(node), pod_requests(spec), nonzero_requests(spec)


class Scheduler(Controller):
    """Binds pending pods one at a time (one worker: each decision sees the previous binding)."""

    name = "scheduler"
    workers = 1

    def __init__(self, objects: ObjectAPI, informers: Informers, **kwargs: Any) -> None:
        super().__init__(objects, informers, **kwargs)
        self.pod_info = self.info("", "v1", "pods")
        self.pods = self.watch("pods", self._pod_changed)
        self.nodes = self.watch("nodes", self._node_changed)
        self._pending: set[Key] = set()
        self._unschedulable: set[Key] = set()
        self._pod_usage: dict[Key, tuple[str, dict[str, int], tuple[int, int]]] = {}
        self._usage: dict[str, Usage] = {}
        self._views: dict[str, NodeView] = {}
        self._names: list[str] | None = None  # node names in order; None: a node came or went, sort again
        self._next_start = 0

    def resync_keys(self) -> Iterable[Key]:
        return list(self._pending)

    def _pod_changed(self, old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        snapshot = new or old
        assert snapshot is not None
        key = snapshot.key
        before = self._pod_usage.pop(key, None)
        if before is not None:
            self._usage[before[0]].add(before[1], before[2], -1)
        after = _pod_usage(new.obj) if new is not None else None
        if after is not None:
            self._pod_usage[key] = after
            self._usage.setdefault(after[0], Usage()).add(after[1], after[2], 1)
        released = before is not None and (after is None or after[0] != before[0])
        if new is not None and _pod_is_pending(new.obj):
            self._pending.add(key)
            keys = [key]
        else:
            self._pending.discard(key)
            self._unschedulable.discard(key)
            keys = []
        if released:  # resources freed on a node: pods that did not fit may now
            keys.extend(self._unschedulable)
        return keys

    def _node_changed(self, old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        if new is None:
            if old is not None:
                self._views.pop(old.key.name, None)
                self._names = None
            return ()
        if old is None:
            self._names = None
        self._views[new.key.name] = NodeView.of(new.obj)
        if old is not None and scheduling_fields(old.obj) == scheduling_fields(new.obj):
            return ()
        return list(self._unschedulable)

    async def reconcile(self, key: Key) -> float | None:
        stored = self.pods.get(key)
        if stored is None:
            self._unschedulable.discard(key)
            return None
        pod = stored.decode()
        if not _pod_is_pending(pod):
            return None
        if self._names is None:
            self._names = sorted(self._views)
        nodes = [self._views[name] for name in self._names]
        decision = schedule(pod.get("spec") or {}, nodes, self._usage, self._next_start)
        self._next_start = (self._next_start + decision.examined) % max(1, len(nodes))
        if decision.node is None:
            self._unschedulable.add(key)
            await self._set_scheduled(key, "False", "Unschedulable", decision.message)
            self.log.v(2).info("pod is unschedulable", pod=f"{key.namespace}/{key.name}", why=decision.message)
            return None
        self._unschedulable.discard(key)
        pod["spec"]["nodeName"] = decision.node
        await self.update(self.pod_info, pod)
        await self._set_scheduled(key, "True", "", "")
        self.log.v(2).info("pod bound", pod=f"{key.namespace}/{key.name}", node=decision.node)
        return None

    async def _set_scheduled(self, key: Key, status: str, reason: str, message: str) -> None:
        now = kit.rfc3339(self.wall())

        def change(pod: dict[str, Any]) -> bool:
            if status == "False" and (pod.get("spec") or {}).get("nodeName"):
                return False  # bound meanwhile
            conditions = pod.setdefault("status", {}).setdefault("conditions", [])
            if not kit.set_condition(conditions, "PodScheduled", status, reason, message, now):
                return False
            for cond in conditions:
                if cond.get("type") == "PodScheduled":
                    cond.setdefault("lastProbeTime", None)
                    if not reason:
                        cond.pop("reason", None)
                        cond.pop("message", None)
            return True

        await self.mutate(self.pod_info, key, change, "status")
