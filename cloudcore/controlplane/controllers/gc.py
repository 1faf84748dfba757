"""Garbage collector: deletes objects whose owners are gone, and carries out foreground and orphan deletion.

Owns the ownerReference graph of every served resource (built-in and custom, events excepted),
kept from shared informers: for each object its owners' uids, for each uid its dependents.

* An object whose ownerReferences all point to owners that no longer exist (looked up in the store
  by kind, namespace and name; a different uid counts as gone) or that are being deleted in the
  foreground is deleted: in the foreground when it has dependents of its own and an owner waits
  for it, else in the background. References to gone owners are dropped from an object that still
  has a live owner.
* An owner being deleted with the `foregroundDeletion` finalizer has its dependents deleted; the
  finalizer goes once no dependent with blockOwnerDeletion=true is left.
* An owner being deleted with the `orphan` finalizer has its references removed from every
  dependent, then the finalizer goes.

Owners are checked against the store, not a cache, so a late informer never gets a live object
deleted. What it must never do: delete an object one of whose owners still exists, or one whose
owner's kind it cannot resolve (a reference to a kind that is not served, for instance after its
CRD was deleted, keeps the object).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.api.resources import ResourceInfo
from cloudcore.controlplane.controllers.kit import Controller, Informers, Snapshot
from cloudcore.controlplane.store.types import Key, StoredObject

FOREGROUND: Final = "foregroundDeletion"
ORPHAN: Final = "orphan"
# Resources nothing owns or is owned by in practice, and too chatty to follow.
_NOT_WATCHED: Final = frozenset({"events"})
# While a foreground owner still waits, look again at least this often (a dependent may sit in a
# resource whose events cannot reach us, e.g. one that stopped being served).
_FOREGROUND_RECHECK: Final = 60.0


@dataclass(frozen=True, slots=True)
class _Ref:
    uid: str
    api_version: str
    kind: str
    name: str
    block: bool


def _refs(obj: dict[str, Any]) -> tuple[_Ref, ...]:
    return tuple(_Ref(str(r.get("uid", "")), str(r.get("apiVersion", "")), str(r.get("kind", "")),
                      str(r.get("name", "")), bool(r.get("blockOwnerDeletion")))
                 for r in obj["metadata"].get("ownerReferences") or ())


def _finalizers(obj: dict[str, Any]) -> list[str]:
    return list(obj["metadata"].get("finalizers") or ())


class GarbageCollector(Controller):
    name = "garbage-collector"
    workers = 8  # deletions of many dependents run side by side (their commits share transactions)

    def __init__(self, objects: ObjectAPI, informers: Informers, **kwargs: Any) -> None:
        super().__init__(objects, informers, **kwargs)
        self._keys: dict[str, Key] = {}  # uid -> key, every object of the watched resources
        self._owners: dict[str, tuple[_Ref, ...]] = {}  # uid -> its owner references (non-empty only)
        self._dependents: dict[str, set[str]] = {}  # owner uid -> dependent uids
        self._pending: dict[str, Key] = {}  # uid -> key of owners deleting in the foreground / orphaning
        self._grs: set[str] = set()
        self.sync_resources()

    # -- which resources --
    def sync_resources(self) -> None:
        """Follow the resources the registry serves now (call after a CRD came or went)."""
        registry = self.objects.registry
        wanted = {info.gr for info in registry.all() if info.gr not in _NOT_WATCHED}
        for gr in sorted(wanted - self._grs):
            informer = self.informers.get(gr)
            informer.add_handler(self._changed)
            self._watched.append(informer)
        for gr in self._grs - wanted:
            gone = self.informers.find(gr)
            if gone is not None:
                self._watched = [i for i in self._watched if i is not gone]
                for stored in list(gone.cache.values()):
                    for key in self._forget(stored):
                        self.enqueue(key)
                self.informers.remove(gr)
        self._grs = wanted

    def resync_keys(self) -> Iterable[Key]:
        return [self._keys[uid] for uid in (*self._owners, *self._pending) if uid in self._keys]

    # -- the graph --
    def _changed(self, old: Snapshot | None, new: Snapshot | None) -> None:
        if new is None:
            if old is not None:
                for key in self._forget(old.stored):
                    self.enqueue(key)
            return
        uid = new.stored.uid
        raw = new.stored.raw
        self._keys[uid] = new.key
        refs = _refs(new.obj) if b'"ownerReferences"' in raw else ()
        before = self._owners.get(uid, ())
        if refs != before:
            self._link(uid, before, refs)
            for ref in before:  # a foreground owner may have been waiting for this reference to go
                if ref.uid in self._pending and ref not in refs:
                    self.enqueue(self._pending[ref.uid])
        if refs and (old is None or refs != before):
            self.enqueue(new.key)
        if b'"finalizers"' in raw and new.obj["metadata"].get("deletionTimestamp") and \
                {FOREGROUND, ORPHAN} & set(_finalizers(new.obj)):
            self._pending[uid] = new.key
            self.enqueue(new.key)
        else:
            self._pending.pop(uid, None)

    def _link(self, uid: str, before: tuple[_Ref, ...], after: tuple[_Ref, ...]) -> None:
        for ref in before:
            dependents = self._dependents.get(ref.uid)
            if dependents is not None:
                dependents.discard(uid)
                if not dependents:
                    del self._dependents[ref.uid]
        for ref in after:
            self._dependents.setdefault(ref.uid, set()).add(uid)
        if after:
            self._owners[uid] = after
        else:
            self._owners.pop(uid, None)

    def _forget(self, stored: StoredObject) -> list[Key]:
        """Drop a deleted object; the keys to look at now: its dependents and owners waiting for it."""
        uid = stored.uid
        self._keys.pop(uid, None)
        self._pending.pop(uid, None)
        refs = self._owners.get(uid, ())
        self._link(uid, refs, ())
        keys = [self._keys[d] for d in self._dependents.get(uid, ()) if d in self._keys]
        keys.extend(self._pending[ref.uid] for ref in refs if ref.uid in self._pending)
        return keys

    def _dependent_keys(self, uid: str) -> list[Key]:
        return sorted(self._keys[d] for d in self._dependents.get(uid, ()) if d in self._keys)

    # -- reconcile --
    async def reconcile(self, key: Key) -> float | None:
        stored = self.objects.store.get(key)
        if stored is None:
            return None
        obj = stored.decode()
        meta = obj["metadata"]
        info = self._info(key.gr)
        if meta.get("deletionTimestamp") and info is not None:
            finalizers = _finalizers(obj)
            if ORPHAN in finalizers:
                await self._orphan_dependents(stored)
                await self._drop_finalizer(info, key, stored.uid, ORPHAN)
                return None
            if FOREGROUND in finalizers:
                if await self._delete_dependents(stored):
                    return _FOREGROUND_RECHECK
                await self._drop_finalizer(info, key, stored.uid, FOREGROUND)
                return None
        refs = _refs(obj)
        if refs and info is not None:
            await self._check_owners(info, key, obj, refs)
        return None

    def _info(self, gr: str) -> ResourceInfo | None:
        return self.objects.registry.by_gr(gr)

    def _owner_state(self, key: Key, ref: _Ref) -> str:
        """"solid", "dangling" (gone, or another object of that name) or "waiting" (foreground deletion)."""
        info = self.objects.registry.for_kind(ref.api_version, ref.kind)
        if info is None or (info.namespaced and not key.namespace):
            return "solid"  # cannot resolve it: never guess that it is gone
        owner = self.objects.store.get(Key(info.gr, key.namespace if info.namespaced else "", ref.name))
        if owner is None or owner.uid != ref.uid:
            return "dangling"
        if b'"deletionTimestamp"' in owner.raw:
            meta = owner.decode()["metadata"]
            if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or ()):
                return "waiting"
        return "solid"

    async def _check_owners(self, info: ResourceInfo, key: Key, obj: dict[str, Any], refs: tuple[_Ref, ...]) -> None:
        states = {ref.uid: self._owner_state(key, ref) for ref in refs}
        if all(state == "solid" for state in states.values()):
            return
        uid = obj["metadata"]["uid"]
        if any(state == "solid" for state in states.values()):
            gone = {u for u, state in states.items() if state != "solid"}

            def change(current: dict[str, Any]) -> bool:
                if current["metadata"].get("uid") != uid:
                    return False
                owner_refs = current["metadata"].get("ownerReferences") or []
                kept = [r for r in owner_refs if r.get("uid") not in gone]
                current["metadata"]["ownerReferences"] = kept
                return len(kept) != len(owner_refs)

            self.log.v(2).info("removing references to gone owners", key=f"{key.namespace}/{key.name}", gr=key.gr)
            await self.mutate(info, key, change)
            return
        if obj["metadata"].get("deletionTimestamp"):
            return
        waiting = any(state == "waiting" for state in states.values())
        policy = "Foreground" if waiting and self._dependent_keys(uid) else "Background"
        self.log.v(2).info("deleting object whose owners are gone", gr=key.gr, key=f"{key.namespace}/{key.name}",
                           propagation=policy)
        await self.delete(info, key.namespace, key.name, uid=uid, propagation=policy)

    async def _delete_dependents(self, owner: StoredObject) -> int:
        """Delete the dependents of an owner in foreground deletion; how many blocking ones are left."""
        blocking = 0
        for dep_key in self._dependent_keys(owner.uid):
            dep = self.objects.store.get(dep_key)
            info = self._info(dep_key.gr)
            if dep is None or info is None:
                continue
            obj = dep.decode()
            ref = next((r for r in _refs(obj) if r.uid == owner.uid), None)
            if ref is None:
                continue
            if not obj["metadata"].get("deletionTimestamp"):
                policy = "Foreground" if ref.block and self._dependent_keys(dep.uid) else "Background"
                await self.delete(info, dep_key.namespace, dep_key.name, uid=dep.uid, propagation=policy)
            still = self.objects.store.get(dep_key)
            if still is not None and still.uid == dep.uid and ref.block:
                blocking += 1
        return blocking

    async def _orphan_dependents(self, owner: StoredObject) -> None:
        for dep_key in self._dependent_keys(owner.uid):
            info = self._info(dep_key.gr)
            if info is None:
                continue

            def change(obj: dict[str, Any]) -> bool:
                refs = obj["metadata"].get("ownerReferences") or []
                kept = [r for r in refs if r.get("uid") != owner.uid]
                if len(kept) == len(refs):
                    return False
                if kept:
                    obj["metadata"]["ownerReferences"] = kept
                else:
                    obj["metadata"].pop("ownerReferences", None)
                return True

            await self.mutate(info, dep_key, change)

    async def _drop_finalizer(self, info: ResourceInfo, key: Key, uid: str, finalizer: str) -> None:
        def change(obj: dict[str, Any]) -> bool:
            finalizers = _finalizers(obj)
            if obj["metadata"].get("uid") != uid or finalizer not in finalizers:
                return False
            finalizers.remove(finalizer)
            obj["metadata"]["finalizers"] = finalizers
            return True

        await self.mutate(info, key, change)
        self.log.v(2).info("finalizer done", finalizer=finalizer, gr=key.gr, key=f"{key.namespace}/{key.name}")

