"""The Device and DeviceModel objects of this node, as the mappers should see them (pure, in memory).

Filled from MetaManager's `meta` table at start and kept current from its change feed; DeviceTwin owns the
instance. A device belongs to the mapper whose protocol is its `spec.protocol.protocolName`; a model belongs
to every mapper with a device that references it (upstream's MapperRegister answer, ref/devices-groups.md 4).

Each object carries a digest of what a mapper is sent for it (name, namespace, spec; not status), so that a
status-only change, which the cloud makes on every report, is not pushed back to the mapper.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from edgecore.dmi.convert import device_model_id, device_protocol, object_id

Kind = Literal["device", "devicemodel"]
DEVICE: Final = "device"
MODEL: Final = "devicemodel"
Key = tuple[Kind, str]  # (kind, "<namespace>/<name>")


@dataclass(frozen=True, slots=True)
class Entry:
    obj: dict[str, Any]
    digest: str


def digest_of(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    shown = {"name": metadata.get("name"), "namespace": metadata.get("namespace"), "spec": obj.get("spec")}
    return hashlib.sha256(orjson.dumps(shown, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def key_from_resource(kind: Kind, resource: str, obj: Any) -> Key | None:
    """The key of an object, from its metadata or else its resource `[node/<node>/]<ns>/<kind>/<name>`."""
    ident = object_id(obj)
    if ident is not None:
        return kind, ident
    parts = resource.split("/")
    if len(parts) >= 3 and parts[-2] == kind and parts[-3] and parts[-1]:
        return kind, f"{parts[-3]}/{parts[-1]}"
    return None


class Catalog:
    def __init__(self) -> None:
        self.entries: dict[Key, Entry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: Key, obj: dict[str, Any]) -> tuple[Entry | None, bool]:
        """Store the object; returns the entry it replaced and whether what a mapper sees changed."""
        entry = Entry(obj, digest_of(obj))
        old = self.entries.get(key)
        self.entries[key] = entry
        return old, old is None or old.digest != entry.digest

    def remove(self, key: Key) -> Entry | None:
        return self.entries.pop(key, None)

    def get(self, key: Key) -> Entry | None:
        return self.entries.get(key)

    def devices(self, protocol: str) -> Iterator[tuple[str, Entry]]:
        for (kind, ident), entry in self.entries.items():
            if kind == DEVICE and device_protocol(entry.obj) == protocol:
                yield ident, entry

    def models_of(self, protocol: str) -> dict[str, Entry]:
        """The existing models referenced by the devices of `protocol`."""
        out: dict[str, Entry] = {}
        for _, device in self.devices(protocol):
            model_id = device_model_id(device.obj)
            entry = self.entries.get((MODEL, model_id)) if model_id else None
            if model_id and entry is not None:
                out[model_id] = entry
        return out

    def view(self, protocol: str) -> dict[Key, str]:
        """What the mapper of `protocol` should hold: every key with its digest."""
        view: dict[Key, str] = {(MODEL, ident): e.digest for ident, e in self.models_of(protocol).items()}
        view.update({(DEVICE, ident): e.digest for ident, e in self.devices(protocol)})
        return view
