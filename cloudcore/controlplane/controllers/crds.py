"""CRD controller: serve what CustomResourceDefinitions define, mark them Established, clean up on delete.

Watches CRDs in the store: a new or changed CRD updates the registry (discovery, REST routes,
OpenAPI) and gets the `NamesAccepted` and `Established` conditions that `kubectl wait
--for=condition=established` and client tools look for; a deleted CRD stops being served and its
custom resources are removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from cloudcore.controlplane.api.objects import ObjectAPI, WriteOptions, now_rfc3339
from cloudcore.controlplane.api.resources import CRD_GR, infos_from_crd
from cloudcore.controlplane.store.types import EventType, Key, NotFoundError, StoredObject
from common.log import get_logger

log = get_logger("crd-controller")

_CONDITIONS = (("NamesAccepted", "NoConflicts", "no conflicts found"),
               ("Established", "InitialNamesAccepted", "the initial names have been accepted"))


def serve_existing(objects: ObjectAPI) -> None:
    """Register every stored CRD before the server accepts requests (restart path)."""
    for stored in objects.store.list(CRD_GR)[0]:
        crd = stored.decode()
        if not crd["metadata"].get("deletionTimestamp"):
            objects.registry.set_crd(stored.key.name, infos_from_crd(crd))


async def run(objects: ObjectAPI, on_change: Callable[[], None]) -> None:
    store = objects.store
    _, since = store.list(CRD_GR)
    for stored in store.list(CRD_GR)[0]:
        await _established(objects, stored)
    watcher = store.watch(CRD_GR, None, since)
    try:
        while True:
            event = await watcher.next(60.0)
            if event is None:
                continue
            name = event.object.key.name
            if event.type is EventType.DELETED:
                objects.registry.set_crd(name, ())
                await _remove_custom_objects(objects, event.object.decode())
                log.info("stopped serving custom resource", crd=name)
            else:
                crd = event.object.decode()
                objects.registry.set_crd(name, infos_from_crd(crd))
                await _established(objects, event.object)
            on_change()
    finally:
        watcher.close()


async def _established(objects: ObjectAPI, stored: StoredObject) -> None:
    crd = stored.decode()
    status: dict[str, Any] = crd.setdefault("status", {})
    present = {c.get("type") for c in status.get("conditions") or () if c.get("status") == "True"}
    if all(kind in present for kind, _, _ in _CONDITIONS):
        return
    status["conditions"] = [{"type": kind, "status": "True", "lastTransitionTime": now_rfc3339(),
                             "reason": reason, "message": message} for kind, reason, message in _CONDITIONS]
    status["acceptedNames"] = crd["spec"].get("names", {})
    status["storedVersions"] = [v["name"] for v in crd["spec"].get("versions", []) if v.get("storage")]
    info = objects.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert info is not None
    crd["metadata"]["resourceVersion"] = str(stored.rv)
    try:
        await objects.update(info, "", stored.key.name, crd, WriteOptions(), subresource="status")
    except Exception as exc:  # a newer revision will come through the watch and be handled then
        log.v(2).info("CRD status not updated", crd=stored.key.name, err=exc)
    log.info("serving custom resource", crd=stored.key.name)


async def _remove_custom_objects(objects: ObjectAPI, crd: dict[str, Any]) -> None:
    spec = crd.get("spec", {})
    gr = f"{spec.get('names', {}).get('plural', '')}.{spec.get('group', '')}"
    for stored in objects.store.list(gr)[0]:
        with contextlib.suppress(NotFoundError):  # already gone
            await objects.store.delete(Key(gr, stored.key.namespace, stored.key.name))
