"""Watch streams: the initial state or the replayed log, then live changes, as Kubernetes watch events.

A watch subscribes to the live feed first, then reads its starting point (the current objects, or the
log after the requested resourceVersion) with the log position that read reflects; live events at or
before that position are ones the read already covered and are skipped, so nothing is missed or sent
twice between the two.

Selectors: an object that starts matching is sent as ADDED and one that stops matching as DELETED, as
kube-apiserver does. A watch that began with the current objects knows what its client holds; one
resumed from a resourceVersion does not know what the client listed, so for a key it has not seen yet
a change that no longer matches is sent as DELETED (harmless when the client did not hold it).

A client that does not keep up (its subscription buffer fills) is dropped: the stream ends, and the
client re-watches from the last resourceVersion it got, replayed from the log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

from cloudcore.controlplane.api import errors, tables
from cloudcore.controlplane.api.selectors import FieldSelector, LabelSelector
from common.log import get_logger
from edgecore.metamanager.events import ADDED, DELETED, MODIFIED, MetaEvent, Subscription, SubscriptionClosed
from edgecore.metaserver.kinds import ServedKind
from edgecore.metaserver.reader import Expired, StoreReader

log = get_logger("metaserver")

JSON: Final = "application/json"
BOOKMARK_INTERVAL: Final = 5.0  # also how often an idle stream notices its client went away


@dataclass(frozen=True, slots=True)
class WatchRequest:
    kind: ServedKind
    namespace: str | None  # the `meta` key's namespace token, None for all namespaces
    labels: LabelSelector | None
    fields: FieldSelector | None
    since: int | None  # None: start with the current objects
    table: bool
    bookmarks: bool
    initial_events_end: bool  # sendInitialEvents: a bookmark marks the end of the initial ADDED events
    timeout: float | None


@dataclass(slots=True)
class _Selection:
    """What the client holds under its selectors: key -> whether it is in the selection."""

    labels: LabelSelector | None
    fields: FieldSelector | None
    complete: bool  # every key the client holds is in `held` (a watch that sent the current objects)
    held: dict[str, bool] = field(default_factory=dict)

    @property
    def everything(self) -> bool:
        return self.labels is None and self.fields is None

    def matches(self, kind: ServedKind, obj: dict[str, Any]) -> bool:
        if self.labels is not None:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if not self.labels.matches(labels):
                return False
        return self.fields is None or self.fields.matches(kind.fields(obj))

    def translate(self, kind: ServedKind, key: str, event: str, obj: dict[str, Any]) -> str | None:
        """The event type this client gets for a change, None when it gets none."""
        if self.everything:
            return event
        now = self.matches(kind, obj)
        before = self.held.get(key, False if self.complete else None)
        if event == DELETED:
            self.held.pop(key, None)
            return DELETED if before or (before is None and now) else None
        self.held[key] = now
        if event == ADDED or before is False:
            return ADDED if now else None
        return MODIFIED if now else DELETED


class WatchStream:
    """One watch response; `run` writes it until the timeout, the client leaves, or the server stops."""

    def __init__(self, request: web.Request, watch: WatchRequest, reader: StoreReader,
                 subscription: Subscription) -> None:
        self.request = request
        self.watch = watch
        self.reader = reader
        self.subscription = subscription
        self.response = web.StreamResponse(headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"})
        self.selection = _Selection(watch.labels, watch.fields, complete=watch.since is None)
        self.position_rv = 0  # the RV a client resuming from here passes: the last change it has seen

    async def run(self) -> web.StreamResponse:
        watch = self.watch
        try:
            first, seq = await self._start()
        except Expired as exc:
            await self._prepare()
            await self._write_event("ERROR", errors.gone(str(exc)).status())
            return self.response
        await self._prepare()
        try:
            for event in first:
                await self._send(event)
            if watch.initial_events_end:
                await self._write_bookmark(initial_end=True)
            await self._live(seq)
        except SubscriptionClosed as exc:
            if exc.dropped:
                log.warning("watch dropped: it fell behind the store's changes", path=self.request.path_qs)
        except ConnectionError:
            pass  # the client went away mid-write
        return self.response

    async def _start(self) -> tuple[list[MetaEvent], int]:
        """The first events (current objects as ADDED, or the log replayed) and the log seq they cover."""
        kind = self.watch.kind
        if self.watch.since is None:
            snapshot = await self.reader.snapshot(kind.store_type, self.watch.namespace)
            self.position_rv = snapshot.rv
            return [MetaEvent(snapshot.seq, key, kind.store_type, ADDED, None, value)
                    for key, value in snapshot.rows], snapshot.seq
        self.position_rv = self.watch.since
        replay = await self.reader.replay(kind.store_type, self.watch.since)
        in_namespace = [event for event in replay.events if self._in_namespace(event.key)]
        return in_namespace, replay.seq

    def _in_namespace(self, key: str) -> bool:
        return self.watch.namespace is None or key.startswith(f"{self.watch.namespace}/")

    async def _live(self, after_seq: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if self.watch.timeout is None else loop.time() + self.watch.timeout
        quiet_since = loop.time()
        while True:
            wait = BOOKMARK_INTERVAL
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    return
            event = await self.subscription.next(wait)
            if event is None:
                if self._client_gone():
                    return
                if self.watch.bookmarks and self.position_rv and loop.time() - quiet_since >= BOOKMARK_INTERVAL:
                    await self._write_bookmark()
                    quiet_since = loop.time()
                continue
            if event.seq > after_seq and self._in_namespace(event.key):
                await self._send(event)
                quiet_since = loop.time()

    def _client_gone(self) -> bool:
        # aiohttp does not cancel a handler whose client left; an idle stream checks now and then
        transport = self.request.transport
        return transport is None or transport.is_closing()

    async def _send(self, event: MetaEvent) -> None:
        if event.rv is not None:
            self.position_rv = event.rv
        obj = orjson.loads(event.value)
        if not isinstance(obj, dict):
            return
        kind = self.watch.kind
        event_type = self.selection.translate(kind, event.key, event.event, obj)
        if event_type is None:
            return
        kind.with_type_meta(obj)
        if self.watch.table:
            rv = str(event.rv if event.rv is not None else self.position_rv)
            await self._write_event(event_type, tables.table(kind.info, [obj], rv))
        else:
            await self._write_event(event_type, obj)

    async def _write_bookmark(self, initial_end: bool = False) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(self.position_rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        info = self.watch.kind.info
        await self._write_event("BOOKMARK", {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta})

    async def _prepare(self) -> None:
        self.response.enable_chunked_encoding()
        await self.response.prepare(self.request)

    async def _write_event(self, event_type: str, obj: dict[str, Any]) -> None:
        await self.response.write(orjson.dumps({"type": event_type, "object": obj}) + b"\n")

