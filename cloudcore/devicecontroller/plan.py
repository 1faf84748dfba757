"""Who gets what when a Device or a DeviceModel changes (pure, no I/O).

A Device goes to the node in its `spec.nodeName`; its DeviceModel goes to every node that has at least
one device of that model, before the first such device, and is deleted from a node when the last one
leaves. A Device whose nodeName changes is deleted from the old node and inserted on the new one;
each binding change also yields upstream's membership update for that node (added / removed).
A Device change that leaves its spec, labels, annotations and deletion mark as they were (the status patches
this module writes for the edge's own reports) is not pushed: the edge uses none of the rest, and pushing
each written report back would echo every report to its node.
`devices` is the Device cache *after* the event; `models` the DeviceModel cache, keyed `<ns>/<name>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cloudcore.devicecontroller.kinds import DEVICE, DEVICEMODEL, model_key, node_name
from cloudcore.edgecontroller.kinds import Kind, Object, key_of
from common.constants import Op


@dataclass(frozen=True, slots=True)
class Push:
    node: str
    kind: Kind
    operation: str
    obj: Object


@dataclass(frozen=True, slots=True)
class Membership:
    node: str
    added: tuple[Object, ...] = ()
    removed: tuple[Object, ...] = ()


Action = Push | Membership


def model_stub(key: str) -> Object:
    """A DeviceModel known only by key (deleted, or not created yet): enough for a delete message."""
    namespace, _, name = key.partition("/")
    return {"apiVersion": DEVICEMODEL.api_version, "kind": DEVICEMODEL.kind,
            "metadata": {"name": name, "namespace": namespace}}


def _used_elsewhere(devices: Mapping[str, Object], skip: str, node: str, model: str) -> bool:
    return any(
        key != skip and node_name(dev) == node and model_key(dev) == model for key, dev in devices.items()
    )


def nodes_of_model(devices: Iterable[Object], model: str) -> list[str]:
    """The nodes holding at least one device of `model`, sorted."""
    return sorted({node_name(d) for d in devices if node_name(d) and model_key(d) == model})


def _edge_view(device: Object) -> tuple[object, ...]:
    """What the edge gets out of a Device besides its status."""
    metadata = device.get("metadata") if isinstance(device.get("metadata"), dict) else {}
    return (device.get("spec"), (metadata or {}).get("labels"), (metadata or {}).get("annotations"),
            (metadata or {}).get("deletionTimestamp"))


def device_event(old: Object | None, new: Object | None, devices: Mapping[str, Object],
                 models: Mapping[str, Object]) -> list[Action]:
    """The actions for one Device event: `old` the cached state before, `new` None when deleted."""
    current = new if new is not None else old
    if current is None:
        return []
    key = key_of(current)
    old_node, new_node = (node_name(old) if old else ""), (node_name(new) if new else "")
    old_model, new_model = (model_key(old) if old else ""), (model_key(new) if new else "")
    actions: list[Action] = []

    def add_model(node: str) -> None:
        if new_model in models and not _used_elsewhere(devices, key, node, new_model):
            actions.append(Push(node, DEVICEMODEL, Op.INSERT, models[new_model]))

    def drop_model(node: str) -> None:
        if old_model and not _used_elsewhere(devices, key, node, old_model):
            actions.append(Push(node, DEVICEMODEL, Op.DELETE, models.get(old_model) or model_stub(old_model)))

    if old is not None and old_node and old_node != new_node:
        actions.append(Push(old_node, DEVICE, Op.DELETE, new if new is not None else old))
        actions.append(Membership(old_node, removed=(old,)))
        drop_model(old_node)
    if new is not None and new_node:
        if old_node != new_node:
            add_model(new_node)
            actions.append(Push(new_node, DEVICE, Op.INSERT, new))
            actions.append(Membership(new_node, added=(new,)))
        elif old_model != new_model:
            add_model(new_node)
            actions.append(Push(new_node, DEVICE, Op.UPDATE, new))
            drop_model(new_node)
        elif old is None or _edge_view(old) != _edge_view(new):
            actions.append(Push(new_node, DEVICE, Op.UPDATE, new))
    return actions


def model_event(operation: str, model: Object, devices: Iterable[Object]) -> list[Action]:
    """A DeviceModel inserted, updated or deleted: the same operation to every node using it."""
    return [Push(node, DEVICEMODEL, operation, model) for node in nodes_of_model(devices, key_of(model))]
