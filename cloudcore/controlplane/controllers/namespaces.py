"""Namespace controller: empties a namespace being deleted, then lets it go.

Owns the `kubernetes` entry of a terminating namespace's spec.finalizers and its deletion
conditions. For a namespace with a deletionTimestamp it deletes every object of every namespaced
resource the registry serves in it (built-in and custom; background propagation, pods with their
grace period), looks again with back-off while objects remain (terminating pods, finalizers), sets
kube's NamespaceContentRemaining / NamespaceFinalizersRemaining (and the three failure) conditions,
and when nothing is left PUTs the `finalize` subresource without `kubernetes`, after which the API
removes the namespace.

What it must never do: delete anything outside a namespace that is being deleted, or finalize a
namespace that still holds objects.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Final

from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.api.resources import ResourceInfo
from cloudcore.controlplane.controllers import kit
from cloudcore.controlplane.controllers.kit import Controller, Informers
from cloudcore.controlplane.store.types import Key, StoredObject

FINALIZER: Final = "kubernetes"
_FIRST_RECHECK: Final = 0.5
_MAX_RECHECK: Final = 30.0
_DELETE_BATCH: Final = 100


class NamespaceController(Controller):
    name = "namespace-controller"
    workers = 1

    def __init__(self, objects: ObjectAPI, informers: Informers, **kwargs: Any) -> None:
        super().__init__(objects, informers, **kwargs)
        self.ns_info = self.info("", "v1", "namespaces")
        self.namespaces = self.watch("namespaces", kit.same_key)
        self._attempts: dict[str, int] = {}

    def _namespaced(self) -> list[ResourceInfo]:
        """One info (the storage version) per namespaced resource served now."""
        registry = self.objects.registry
        grs = sorted({info.gr for info in registry.all() if info.namespaced})
        return [info for info in (registry.by_gr(gr) for gr in grs) if info is not None]

    async def reconcile(self, key: Key) -> float | None:
        stored = self.objects.store.get(key)
        namespace = stored.decode() if stored is not None else None
        if namespace is None or not namespace["metadata"].get("deletionTimestamp") or \
                FINALIZER not in ((namespace.get("spec") or {}).get("finalizers") or ()):
            self._attempts.pop(key.name, None)
            return None
        remaining: Counter[str] = Counter()
        finalizers: Counter[str] = Counter()
        failures: list[str] = []
        resources = self._namespaced()
        for info in resources:
            items = self.objects.store.list(info.gr, key.name)[0]
            for start in range(0, len(items), _DELETE_BATCH):  # side by side: their commits share transactions
                batch = items[start:start + _DELETE_BATCH]
                results = await asyncio.gather(*(self._delete_one(info, item) for item in batch),
                                               return_exceptions=True)
                for result in results:
                    if isinstance(result, APIError):
                        failures.append(f"{info.gr}: {result.message}")
                    elif isinstance(result, BaseException):
                        raise result
        for info in resources:  # what is left now, whatever was there before
            for current in self.objects.store.list(info.gr, key.name)[0]:
                remaining[f"{info.plural}.{info.group}"] += 1
                finalizers.update(current.decode()["metadata"].get("finalizers") or ())
        await self._set_conditions(key, remaining, finalizers, failures)
        if remaining:
            attempt = self._attempts.get(key.name, 0)
            self._attempts[key.name] = attempt + 1
            return min(_MAX_RECHECK, _FIRST_RECHECK * 2.0 ** attempt)
        self._attempts.pop(key.name, None)

        def finalize(obj: dict[str, Any]) -> bool:
            spec = obj.setdefault("spec", {})
            finalizers_now = list(spec.get("finalizers") or ())
            if FINALIZER not in finalizers_now:
                return False
            spec["finalizers"] = [f for f in finalizers_now if f != FINALIZER]
            return True

        await self.mutate(self.ns_info, key, finalize, "finalize")
        self.log.info("namespace emptied and finalized", namespace=key.name)
        return None

    async def _delete_one(self, info: ResourceInfo, item: StoredObject) -> None:
        if item.decode()["metadata"].get("deletionTimestamp"):
            return  # already on its way out
        try:
            await self.delete(info, item.key.namespace, item.key.name, uid=item.uid, propagation="Background")
        except APIError as exc:
            if exc.reason != "Conflict":  # changed meanwhile: the next round sees it again
                raise

    async def _set_conditions(self, key: Key, remaining: Counter[str], finalizers: Counter[str],
                              failures: list[str]) -> None:
        stamp = kit.rfc3339(self.wall())
        wanted = [
            ("NamespaceDeletionDiscoveryFailure", "False", "ResourcesDiscovered",
             "All resources successfully discovered"),
            ("NamespaceDeletionGroupVersionParsingFailure", "False", "ParsedGroupVersions",
             "All legacy kube types successfully parsed"),
            ("NamespaceDeletionContentFailure", "True", "ContentDeletionFailed",
             "Failed to delete all resource types, " + "; ".join(failures)) if failures else
            ("NamespaceDeletionContentFailure", "False", "ContentDeleted",
             "All content successfully deleted, may be waiting on finalization"),
            ("NamespaceContentRemaining", "True", "SomeResourcesRemain", "Some resources are remaining: " +
             ", ".join(f"{gr} has {count} resource instances" for gr, count in sorted(remaining.items())))
            if remaining else ("NamespaceContentRemaining", "False", "ContentRemoved",
                               "All content successfully removed"),
            ("NamespaceFinalizersRemaining", "True", "SomeFinalizersRemain",
             "Some content in the namespace has finalizers remaining: " +
             ", ".join(f"{name} in {count} resource instances" for name, count in sorted(finalizers.items())))
            if finalizers else ("NamespaceFinalizersRemaining", "False", "ContentHasNoFinalizers",
                                "All content-preserving finalizers finished"),
        ]

        def change(obj: dict[str, Any]) -> bool:
            conditions: list[dict[str, Any]] = obj.setdefault("status", {}).setdefault("conditions", [])
            changed = False
            for kind, status, reason, message in wanted:
                changed = kit.set_condition(conditions, kind, status, reason, message, stamp) or changed
            return changed

        await self.mutate(self.ns_info, key, change, "status")
