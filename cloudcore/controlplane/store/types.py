"""What the store holds and says: keys, stored objects, watch events, and its errors.

A key is (group-resource, namespace, name): `gr` is `pods` for core resources and
`<resource>.<group>` otherwise (`deployments.apps`, `devices.devices.kubeedge.io`); cluster-scoped
objects have namespace "". Every write gets the next value of ONE global revision counter, which is
the object's `metadata.resourceVersion` (as a decimal string).

Stored objects are shared, immutable snapshots holding the object's JSON bytes, not a decoded
dict: 10k pods as dicts would cost several hundred MB, as bytes a tenth of it. `decode()` gives
the caller its own fresh dict (safe to change). What filtering needs without decoding (labels,
uid, the selectable fields such as spec.nodeName) is extracted once at write time.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson


class Key(NamedTuple):
    gr: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One committed revision of an object.

    `raw` is its compact JSON (orjson) with `metadata.resourceVersion == str(rv)`, ready to be
    written into a response as is. `labels` are metadata.labels; `fields` the values field
    selectors match on (always metadata.name and metadata.namespace, plus what the store's
    `selectable_fields` hook adds for the resource).
    """

    key: Key
    rv: int
    raw: bytes
    uid: str
    labels: Mapping[str, str]
    fields: Mapping[str, str]

    def decode(self) -> dict[str, Any]:
        """A fresh dict of the object; the caller owns it."""
        decoded: dict[str, Any] = orjson.loads(self.raw)
        return decoded


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A committed change. For DELETED, `object` is the last state with the delete's revision.

    For MODIFIED, `previous` is the state it replaced, so a filtered watch can tell an object that
    starts or stops matching a selector (sent as ADDED / DELETED, as kube-apiserver does).
    """

    type: EventType
    object: StoredObject
    previous: StoredObject | None = None

    @property
    def rv(self) -> int:
        return self.object.rv


class StoreError(Exception):
    """Base of store errors; the API layer maps each to a Kubernetes Status."""


class NotFoundError(StoreError):
    def __init__(self, key: Key) -> None:
        super().__init__(f"{key.gr} {key.namespace}/{key.name} not found")
        self.key = key


class AlreadyExistsError(StoreError):
    def __init__(self, key: Key) -> None:
        super().__init__(f"{key.gr} {key.namespace}/{key.name} already exists")
        self.key = key


class ConflictError(StoreError):
    """A precondition (resourceVersion or uid) no longer holds: the object changed meanwhile."""

    def __init__(self, key: Key, expected: str, actual: str) -> None:
        super().__init__(f"{key.gr} {key.namespace}/{key.name}: expected {expected}, found {actual}")
        self.key = key


class TooOldError(StoreError):
    """A watch asked to resume from a revision the store has compacted away (HTTP 410 Gone)."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class WatcherClosedError(StoreError):
    """The watcher was closed (store shutdown, or it fell too far behind: its queue overflowed)."""
