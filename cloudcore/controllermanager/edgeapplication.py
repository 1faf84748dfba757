"""EdgeApplication controller: applies what render.py makes of each EdgeApplication, deletes what left the
template, and writes `status.workloadStatus` and a condition (with an Event for every new problem).

Informers: EdgeApplications, NodeGroups (a group appearing or going re-syncs the apps that target it) and
the Deployments EdgeApplications own (a status change re-syncs the owner, for `workloadStatus`). Objects
are written with JSON merge patches computed from their last-applied annotation (so a field dropped from
the template is dropped from the object), and a generated Deployment's pod template change is rolled out
by that Deployment's own strategy. Every generated object in the EdgeApplication's namespace carries a
controller ownerReference (the API's garbage collector removes it with the app); all of them are also in
`apps.kubeedge.io/last-contained-resources`, which is how objects dropped from the template, objects in
other namespaces and everything left after the app is deleted are removed by this controller.
What it must never do: delete an object it did not make (one without the last-applied annotation).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from cloudcore.controllermanager import keys
from cloudcore.controllermanager.discovery import Discovery, UnknownKind
from cloudcore.controllermanager.events import record
from cloudcore.controllermanager.render import (
    INVALID_MANIFEST,
    Desired,
    ObjectRef,
    Problem,
    contained_refs,
    contained_text,
    last_applied,
    merge_patch,
    ref_of,
    render,
    stamp_last_applied,
    target_groups,
)
from cloudcore.controllermanager.workers import run_workers
from cloudcore.controllermanager.workqueue import KeyQueue
from cloudcore.edgecontroller.informer import Event, EventType, Informer
from cloudcore.edgecontroller.kinds import Kind, Object, cache_key, meta, name_of, namespace_of, uid_of
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from common.log import get_logger

log = get_logger("controllermanager")

COMPONENT: Final = "edgeapplication-controller"
CONDITION: Final = "Applied"
APPLY_FAILED: Final = "ApplyFailed"
APPLIED: Final = "Applied"
APPLY_CONCURRENCY: Final = 8  # writes in flight per EdgeApplication sync
_REFUSED: Final = frozenset({400, 403, 404, 409, 422})  # the API will answer the same until the template changes


def _owner_key(deployment: Object) -> str:
    for ref in meta(deployment).get("ownerReferences") or []:
        if ref.get("apiVersion") == keys.API_VERSION and ref.get("kind") == keys.EDGEAPPLICATION.kind:
            return cache_key(namespace_of(deployment), str(ref.get("name") or ""))
    return ""


class EdgeApplicationController:
    def __init__(self, client: KubeJSON, workers: int = 4) -> None:
        self.client = client
        self.discovery = Discovery(client)
        self.queue = KeyQueue()
        self.workers = workers
        self.apps = Informer(client, keys.EDGEAPPLICATION, self._on_app)
        self.groups = Informer(client, keys.NODEGROUP, self._on_group)
        self.deployments = Informer(client, keys.DEPLOYMENT, self._on_deployment, keep=lambda d: bool(_owner_key(d)))
        self.synced = asyncio.Event()
        self._gone: dict[str, Object] = {}  # deleted apps whose objects are still to be removed

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for informer in (self.groups, self.deployments):
                tasks.create_task(informer.run(), name=f"edgeapplication:{informer.kind.plural}")
            await self.groups.synced.wait()
            await self.deployments.synced.wait()
            tasks.create_task(self.apps.run(), name="edgeapplication:apps")
            await self.apps.synced.wait()
            self.synced.set()
            tasks.create_task(run_workers(self.queue, self.sync, count=self.workers, name="edgeapplication"))

    # -- events -------------------------------------------------------------------------------------
    async def _on_app(self, event: Event) -> None:
        if event.type is EventType.DELETED:
            self._gone[event.key] = event.obj
        elif event.old is not None and _same_intent(event.old, event.obj):
            return  # our own status or annotation write
        await self.queue.add(event.key)

    async def _on_group(self, event: Event) -> None:
        if event.type is EventType.MODIFIED:
            return  # only a group's existence matters here
        for key, app in list(self.apps.cache.items()):
            if event.key in target_groups(app):
                await self.queue.add(key)

    async def _on_deployment(self, event: Event) -> None:
        if event.type is EventType.MODIFIED and event.old is not None and _watched(event.old) == _watched(event.obj):
            return  # e.g. updatedReplicas moved: nothing the owner shows or re-applies
        owner = _owner_key(event.obj if event.type is not EventType.DROPPED else (event.old or {}))
        if owner:
            await self.queue.add(owner)

    # -- sync ---------------------------------------------------------------------------------------
    async def sync(self, key: str) -> None:
        app = self.apps.cache.get(key)
        if app is None:
            gone = self._gone.pop(key, None)
            if gone is not None:
                await self._delete_all(gone)
            return
        if meta(app).get("deletionTimestamp"):
            return  # the garbage collector (foreground/background) and the DELETED event finish it
        rendering = render(app, self.groups.cache.keys())
        problems = list(rendering.problems)
        planned: list[tuple[Desired, Kind, Object]] = []
        for desired in rendering.objects:
            try:
                kind = await self.discovery.resolve(desired.ref.api_version, desired.ref.kind)
            except UnknownKind as exc:
                problems.append(Problem(INVALID_MANIFEST, f"manifests[{desired.ordinal}]: {exc}"))
                continue
            planned.append((desired, kind, self._finish(app, kind, desired.manifest)))
        gate = asyncio.Semaphore(APPLY_CONCURRENCY)

        async def apply(kind: Kind, manifest: Object) -> Object:
            async with gate:
                return await self._apply(kind, manifest)

        results = await asyncio.gather(*(apply(kind, manifest) for _, kind, manifest in planned),
                                       return_exceptions=True)
        applied: list[tuple[Desired, Kind, Object]] = []
        for (desired, kind, _), result in zip(planned, results, strict=True):
            if isinstance(result, KubeError) and result.status in _REFUSED:
                problems.append(Problem(APPLY_FAILED, f"manifests[{desired.ordinal}] {desired.ref.kind} "
                                                      f"{desired.ref.name}: {result.message}"))
            elif isinstance(result, BaseException):
                raise result
            else:
                applied.append((desired, kind, result))
        await self._delete_dropped(app, {ref_of(manifest) for _, _, manifest in planned})
        await self._write_status(app, applied, problems)

    def _finish(self, app: Object, kind: Kind, manifest: Object) -> Object:
        """Namespace and owner for this kind's scope, and the last-applied stamp over the final object."""
        obj = dict(manifest)
        obj["metadata"] = dict(manifest["metadata"])
        if not kind.namespaced:
            obj["metadata"].pop("namespace", None)
        elif obj["metadata"].get("namespace") == namespace_of(app):
            owner = {"apiVersion": keys.API_VERSION, "kind": keys.EDGEAPPLICATION.kind, "name": name_of(app),
                     "uid": uid_of(app), "controller": True, "blockOwnerDeletion": True}
            others = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller") is not True]
            obj["metadata"]["ownerReferences"] = [*others, owner]
        return stamp_last_applied(obj)

    async def _apply(self, kind: Kind, obj: Object) -> Object:
        namespace, name = namespace_of(obj), name_of(obj)
        live: Object | None = None
        if kind == keys.DEPLOYMENT:
            live = self.deployments.cache.get(cache_key(namespace, name))
        if live is None:
            try:
                live = await self.client.get(kind.object_path(namespace, name))
            except KubeError as exc:
                if not exc.not_found:
                    raise
                log.v(3).info("creating", kind=kind.kind, namespace=namespace, name=name)
                return await self.client.create(kind.collection_path(namespace), obj)
        stamped = (meta(obj).get("annotations") or {}).get(keys.LAST_APPLIED)
        if (meta(live).get("annotations") or {}).get(keys.LAST_APPLIED) == stamped:
            return live
        patch = merge_patch(last_applied(live) or {}, obj)
        log.v(3).info("patching", kind=kind.kind, namespace=namespace, name=name)
        return await self.client.patch(kind.object_path(namespace, name), patch)

    async def _delete_dropped(self, app: Object, wanted: set[ObjectRef]) -> None:
        annotations = meta(app).get("annotations") or {}
        before = contained_refs(annotations.get(keys.LAST_CONTAINED))
        await self._delete(ref for ref in before if ref not in wanted)
        text = contained_text(wanted)
        if annotations.get(keys.LAST_CONTAINED) != text:
            updated = await self.client.patch(keys.EDGEAPPLICATION.object_path(namespace_of(app), name_of(app)),
                                              {"metadata": {"annotations": {keys.LAST_CONTAINED: text}}})
            app["metadata"] = meta(updated)  # the status write below must not undo this

    async def _delete_all(self, app: Object) -> None:
        refs = contained_refs((meta(app).get("annotations") or {}).get(keys.LAST_CONTAINED))
        await self._delete(refs)
        log.info("edgeapplication deleted, its objects removed", app=cache_key(namespace_of(app), name_of(app)),
                 objects=len(refs))

    async def _delete(self, refs: Iterable[ObjectRef]) -> None:
        for ref in refs:
            try:
                kind = await self.discovery.resolve(ref.api_version, ref.kind)
            except UnknownKind:
                continue
            path = kind.object_path(ref.namespace, ref.name)
            try:
                live = await self.client.get(path)
                if keys.LAST_APPLIED not in (meta(live).get("annotations") or {}):
                    log.warning("not deleting an object this controller did not make", kind=ref.kind, name=ref.name)
                    continue
                await self.client.delete(path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                                 "propagationPolicy": "Background"})
            except KubeError as exc:
                if not exc.not_found:
                    raise

    # -- status -------------------------------------------------------------------------------------
    async def _write_status(self, app: Object, applied: list[tuple[Desired, Kind, Object]],
                            problems: list[Problem]) -> None:
        status = app.get("status") or {}
        workload = sorted((self._workload_status(desired, kind, live) for desired, kind, live in applied),
                          key=lambda s: (s["identifier"]["ordinal"], s["identifier"]["name"]))
        condition = _condition(problems, status.get("conditions") or [])
        if status.get("workloadStatus") != workload or status.get("conditions") != [condition]:
            await self.client.patch(keys.EDGEAPPLICATION.object_path(namespace_of(app), name_of(app), "status"),
                                    {"status": {"workloadStatus": workload, "conditions": [condition]}})
        previous = " | ".join(str(c.get("message") or "") for c in status.get("conditions") or [])
        for problem in problems:
            if problem.message not in previous:
                log.warning("edgeapplication problem", app=cache_key(namespace_of(app), name_of(app)),
                            reason=problem.reason, detail=problem.message)
                await record(self.client, app, "Warning", problem.reason, problem.message, COMPONENT)

    def _workload_status(self, desired: Desired, kind: Kind, live: Object) -> Object:
        ref = ref_of(live) if name_of(live) else desired.ref
        group, _, version = ref.api_version.rpartition("/")
        condition = keys.AVAILABLE
        if (ref.api_version, ref.kind) == ("apps/v1", "Deployment"):
            current = self.deployments.cache.get(cache_key(ref.namespace, ref.name), live)
            condition = keys.AVAILABLE if _available(current) else keys.PROCESSING
        return {"identifier": {"ordinal": desired.ordinal, "group": group, "version": version, "kind": ref.kind,
                               "resource": kind.plural, "namespace": ref.namespace, "name": ref.name},
                "conditions": condition}


def _available(deployment: Object) -> bool:
    """Upstream's rule: a Deployment is Available when readyReplicas == spec.replicas."""
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    return bool(((deployment.get("status") or {}).get("readyReplicas") or 0) == replicas)


def _watched(deployment: Object) -> tuple[Any, ...]:
    """What of a generated Deployment its owner reacts to: availability, and edits to what was applied."""
    return _available(deployment), deployment.get("spec"), meta(deployment).get("annotations")


def _same_intent(old: Object, new: Object) -> bool:
    """Whether only status or this controller's annotation changed (nothing to apply again)."""
    def intent(obj: Object) -> tuple[Any, ...]:
        annotations = {k: v for k, v in (meta(obj).get("annotations") or {}).items() if k != keys.LAST_CONTAINED}
        return obj.get("spec"), annotations, meta(obj).get("deletionTimestamp"), meta(obj).get("uid")
    return intent(old) == intent(new)


def _condition(problems: list[Problem], previous: list[Object]) -> Object:
    status = "False" if problems else "True"
    reason = problems[0].reason if problems else APPLIED
    message = " | ".join(p.message for p in problems) if problems else "every manifest is applied"
    before = next((c for c in previous if c.get("type") == CONDITION), {})
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    return {"type": CONDITION, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
