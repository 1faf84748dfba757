"""Reads of the kinds the node does not sync (remote kinds: deployments, namespaces, custom resources, ...),
through CloudCore's dynamiccontroller, cached in the edge store so they are served offline too.

As upstream's MetaServer, GET and LIST are cloud-first while connected: the cloud's answer (an
Application get/list, at most 10 s) is stored in MetaManager's `meta` table (key
`<ns|null>/<lowercase kind>/<name>`, type the lowercase kind), then the request is served from the store
like any synced kind (so selectors, paging, Tables and watches behave the same). Offline, or when the cloud
does not answer, the store answers. A LIST stores every object of the collection and removes the cached
ones the cloud no longer has (only those not newer than the list, so an object streamed in meanwhile by
a watch subscription stays). A Rejected answer is the client's answer (a GET's 404 also drops the cached
object).

A WATCH subscribes the node to the collection (an Application watch): the cloud then streams the current
objects and every change as ordinary resource messages, which MetaManager stores and publishes, so the
watch is served from the store's events like any other. Subscriptions are remembered (SQLite) and renewed
on every connection to the cloud, each followed by a LIST that catches up on what changed while the node
was away (the cloud streams what exists, not what was deleted meanwhile); a watch asked for offline is
subscribed on the next connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import orjson

from cloudcore.controlplane.api.errors import APIError
from common.application import Answer, Key, Verb
from common.log import get_logger
from edgecore.metamanager.module import MetaManagerModule
from edgecore.metamanager.store import MetaChange, MetaStore, parse_rv
from edgecore.metaserver.cloud import CloudLink, CloudUnavailable, rejection
from edgecore.metaserver.kinds import Kinds, ServedKind
from edgecore.metaserver.state import CacheState

log = get_logger("metaserver")

MAX_PENDING: Final = 1024  # watches remembered for the next connection (clients may name any namespace)


class RemoteReads:
    def __init__(self, link: CloudLink, state: CacheState, meta: MetaManagerModule, kinds: Kinds) -> None:
        self._link = link
        self._state = state
        self._meta = meta
        self._kinds = kinds
        self._subscribed: set[Key] = set()  # subscriptions the cloud approved on this connection
        self._pending: set[Key] = set()  # watches asked for while the cloud could not be reached

    def cached(self, kind: ServedKind, namespace: str) -> bool:
        """Whether the collection was read or watched from the cloud before (its store rows are its copy)."""
        return self._state.cached(kind.cloud_key(namespace))

    async def read_object(self, kind: ServedKind, namespace: str, name: str) -> str | None:
        """Refresh one object from the cloud; None when done, else why the store answers instead.
        A rejection is raised as the client's answer."""
        answer = await self._ask(Verb.GET, kind.cloud_key(namespace, name))
        if isinstance(answer, str):
            return answer
        if answer.rejected:
            if answer.code == 404:
                await self.forget(kind, namespace, name)
            raise rejection(answer)
        if not answer.approved or not isinstance(answer.body, dict):
            return _unusable(answer)
        await self.store(kind, answer.body)
        return None

    async def read_list(self, kind: ServedKind, namespace: str) -> str | None:
        """Refresh a collection (`namespace` "" = all) from the cloud; None when done, else why not."""
        key = kind.cloud_key(namespace)
        answer = await self._ask(Verb.LIST, key)
        if isinstance(answer, str):
            return answer
        if answer.rejected:
            raise rejection(answer)
        body = answer.body
        if not answer.approved or not isinstance(body, dict) or not isinstance(body.get("items"), list):
            return _unusable(answer)
        list_rv = parse_rv((body.get("metadata") or {}).get("resourceVersion"))
        await self._replace(kind, namespace, body["items"], list_rv)
        await self._state.remember(key)
        return None

    async def subscribe(self, kind: ServedKind, namespace: str) -> None:
        """Make sure the node is subscribed to the collection; a rejection is raised as the client's answer."""
        key = kind.cloud_key(namespace)
        if not self._link.connected:
            self._defer(key)  # subscribed on the next connection; until then the cache is served
            return
        if key in self._subscribed or key.everywhere() in self._subscribed:
            return
        answer = await self._ask(Verb.WATCH, key)
        if isinstance(answer, str) or not answer.approved:
            if not isinstance(answer, str) and answer.rejected:
                raise rejection(answer)
            self._defer(key)
            log.warning("watch not subscribed in the cloud yet; serving the cached objects", key=str(key),
                        reason=answer if isinstance(answer, str) else _unusable(answer))
            return
        self._subscribed.add(key)
        self._pending.discard(key)
        await self._state.remember(key, watch=True)

    def _defer(self, key: Key) -> None:
        if len(self._pending) < MAX_PENDING:
            self._pending.add(key)
        elif key not in self._pending:
            log.warning("too many watches waiting for the cloud; this one is not renewed", key=str(key))

    async def store(self, kind: ServedKind, obj: dict[str, Any]) -> None:
        """Cache an object the cloud returned (a read, or the result of a write)."""
        change = _change(kind, obj)
        if change is not None:
            await self._meta.apply([change])

    async def forget(self, kind: ServedKind, namespace: str, name: str) -> None:
        """Drop a cached object the cloud deleted."""
        await self._meta.apply([MetaChange(kind.key(namespace, name), kind.store_type, None)])

    async def resync(self) -> None:
        """After a (re)connection: renew every subscription, and catch up on each collection with a LIST."""
        self._subscribed.clear()
        keys = sorted({*self._state.watched(), *self._pending}, key=str)
        for key in keys:
            kind = self._kinds.get(key.group, key.version, key.plural)
            if kind is None or not kind.remote:
                log.warning("watched resource no longer served by the cloud; subscription dropped", key=str(key))
                await self._state.forget(key)
                self._pending.discard(key)
                continue
            try:
                await self.subscribe(kind, key.namespace)
                if key in self._subscribed:
                    await self.read_list(kind, key.namespace)
            except APIError as exc:
                log.warning("subscription refused by the cloud; dropped", key=str(key), code=exc.code, err=exc.message)
                await self._state.forget(key)
                self._pending.discard(key)
            if not self._link.connected:
                return  # lost again: the next connection starts over
        if keys:
            log.info("watch subscriptions renewed", subscribed=len(self._subscribed), asked=len(keys))

    async def _ask(self, verb: str, key: Key) -> Answer | str:
        """The cloud's answer, or why there is none."""
        try:
            return await self._link.ask(verb, str(key))
        except CloudUnavailable as exc:
            if not exc.offline:
                log.warning("cloud did not answer a read; serving the edge store", verb=verb, key=str(key), err=exc)
            return str(exc)

    async def _replace(self, kind: ServedKind, namespace: str, items: Iterable[Any], list_rv: int | None) -> None:
        upserts = [change for change in (_change(kind, item) for item in items if isinstance(item, dict))
                   if change is not None]
        listed = {change.key for change in upserts}
        scope = "" if kind.info.namespaced and not namespace else kind.namespace_token(namespace)

        async def plan(store: MetaStore) -> list[MetaChange]:
            # under MetaManager's lock: an object a subscription updated past the list is not deleted
            stored = await store.list_type(kind.store_type, scope)
            gone = [key for key, _ in stored
                    if key not in listed and (list_rv is None or (store.resource_version(key) or 0) <= list_rv)]
            return [*upserts, *(MetaChange(key, kind.store_type, None, list_rv) for key in gone)]

        await self._meta.reconcile(plan)


def _change(kind: ServedKind, obj: dict[str, Any]) -> MetaChange | None:
    """The store row of an object the cloud sent (lists leave out apiVersion and kind; the row has them)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        return None
    obj = kind.with_type_meta(dict(obj))
    key = kind.key(str(metadata.get("namespace") or ""), str(metadata["name"]))
    return MetaChange(key, kind.store_type, orjson.dumps(obj).decode(), parse_rv(metadata.get("resourceVersion")))


def _unusable(answer: Answer) -> str:
    log.warning("cloud could not answer a read; serving the edge store", status=answer.status, reason=answer.reason)
    return f"the cloud could not answer: {answer.reason or answer.status}"
