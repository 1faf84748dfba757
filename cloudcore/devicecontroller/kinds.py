"""The devices.kubeedge.io kinds (v1beta1, the stored version) and the few facts read off a Device."""

from __future__ import annotations

from typing import Final

from cloudcore.edgecontroller.kinds import Kind, Object, name_of, namespace_of
from common.constants import ResourceType

GROUP: Final = "devices.kubeedge.io"
VERSION: Final = "v1beta1"
DEVICE: Final = Kind(ResourceType.DEVICE, "Device", GROUP, VERSION, "devices")
DEVICEMODEL: Final = Kind(ResourceType.DEVICEMODEL, "DeviceModel", GROUP, VERSION, "devicemodels")


def _spec(obj: Object) -> Object:
    found = obj.get("spec")
    return found if isinstance(found, dict) else {}


def node_name(device: Object) -> str:
    """The edge node the Device is bound to ("" = not dispatched)."""
    return str(_spec(device).get("nodeName") or "")


def model_key(device: Object) -> str:
    """`<ns>/<model>` of the Device's DeviceModel (same namespace as the Device), or ""."""
    ref = _spec(device).get("deviceModelRef")
    name = str(ref.get("name") or "") if isinstance(ref, dict) else ""
    return f"{namespace_of(device)}/{name}" if name else ""


def device_id(device: Object) -> str:
    """Upstream's device ID (v1.16+): `<namespace>/<name>` (ref/devices-groups.md 1.1)."""
    return f"{namespace_of(device)}/{name_of(device)}"
