"""List + watch of one kind into a cache of plain JSON objects, against any Kubernetes API server.

Owns, per kind: the cache (only the objects its `keep` predicate wants, so memory follows the edge's
share of the cluster, not the cluster), the resourceVersion it has seen up to, and one loop that
lists, then watches from that version; a watch that ends or breaks resumes from the last version seen,
a 410 Gone (version compacted away) re-lists and replays only the difference. Errors back off from
0.2 s doubling to 30 s. Handlers are awaited one event at a time, after the cache has changed, so a
handler reads a cache that already holds the event.

Events: ADDED / MODIFIED / DELETED as the API reports them, plus DROPPED: the object still exists
but left the informer's view (`keep` turned false, e.g. a Node lost the edge label), which callers
must not mistake for a deletion. An object whose resourceVersion is not newer than the cached one is
ignored, so a GET racing the watch (`offer`) never moves the cache backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from cloudcore.edgecontroller.kinds import Kind, Object, is_newer, key_of, rv_of, with_type_meta
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON, status_error
from common.log import get_logger

log = get_logger("edgecontroller")

PAGE_SIZE: Final = 500
WATCH_TIMEOUT: Final = 300  # seconds the server keeps one watch open; then it is renewed from the last RV
_READ_SLACK: Final = 30.0  # a watch silent (no event, no bookmark) this long past its timeout is dead
_BACKOFF_MIN: Final = 0.2
_BACKOFF_MAX: Final = 30.0
_YIELD_EVERY: Final = 200  # a relist of thousands of objects lets other tasks run now and then


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"  # gone from the API
    DROPPED = "DROPPED"  # still in the API, no longer wanted by `keep`


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    key: str
    obj: Object  # the newest state known (for DELETED: the final state)
    old: Object | None  # the cached state before the event


Handler = Callable[[Event], Awaitable[None]]
Keep = Callable[[Object], bool]


def _keep_all(_: Object) -> bool:
    return True


class Informer:
    def __init__(
        self,
        client: KubeJSON,
        kind: Kind,
        handler: Handler,
        *,
        keep: Keep = _keep_all,
        page_size: int = PAGE_SIZE,
        watch_timeout: int = WATCH_TIMEOUT,
    ) -> None:
        self.client = client
        self.kind = kind
        self.cache: dict[str, Object] = {}
        self.rv = ""
        self.synced = asyncio.Event()
        self._handler = handler
        self._keep = keep
        self._page_size = page_size
        self._watch_timeout = watch_timeout

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """List, then watch forever (until cancelled); run again after a cancel, it resumes the watch."""
        delay = _BACKOFF_MIN
        relist = not self.synced.is_set()
        while True:
            try:
                if relist:
                    await self._relist()
                    relist = False
                await self._watch()
                delay = _BACKOFF_MIN
            except KubeError as exc:
                if exc.gone:
                    log.v(2).info("watch expired, relisting", kind=self.kind.kind, rv=self.rv)
                    relist = True
                    continue
                if exc.unreachable:  # e.g. the API server restarting: expected, resumed quietly
                    log.v(2).info("informer lost the API, resuming", kind=self.kind.kind, rv=self.rv, err=exc)
                else:
                    log.warning("informer error, retrying", kind=self.kind.kind, err=exc, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(_BACKOFF_MAX, delay * 2)

    async def _relist(self) -> None:
        """List page by page (only one page in memory), offering each object; then what the list no
        longer has was deleted meanwhile."""
        seen: set[str] = set()
        query = {"limit": str(self._page_size)}
        count = 0
        while True:
            page = await self.client.get(self.kind.collection_path(), query)
            for item in page.get("items") or []:
                seen.add(key_of(item))
                await self.offer(item)
                count += 1
                await _maybe_yield(count)
            list_meta = page.get("metadata") or {}
            if not list_meta.get("continue"):
                break
            query = {"limit": str(self._page_size), "continue": str(list_meta["continue"])}
        for key in [k for k in self.cache if k not in seen]:
            await self._emit(EventType.DELETED, key, self.cache.pop(key), None)
        self.rv = str(list_meta.get("resourceVersion") or "")
        if not self.synced.is_set():
            log.v(2).info("informer synced", kind=self.kind.kind, objects=len(self.cache), rv=self.rv)
        self.synced.set()

    async def _watch(self) -> None:
        query = {"resourceVersion": self.rv, "allowWatchBookmarks": "true", "timeoutSeconds": str(self._watch_timeout)}
        events = self.client.watch(self.kind.collection_path(), query, self._watch_timeout + _READ_SLACK)
        async with contextlib.aclosing(events):  # a cancelled watch closes its connection at once
            async for event in events:
                kind, obj = event.get("type"), event["object"]
                if kind == "ERROR":
                    raise status_error(obj)
                if kind in ("ADDED", "MODIFIED"):
                    await self.offer(obj)
                elif kind == "DELETED":
                    await self._deleted(with_type_meta(self.kind, obj))
                self.rv = rv_of(obj) or self.rv  # BOOKMARKs only move the version

    # -- changes -----------------------------------------------------------------------------------
    async def offer(self, obj: Object) -> None:
        """Take an object's current state (from the watch, a list or a GET); ignored unless newer."""
        obj = with_type_meta(self.kind, obj)
        key = key_of(obj)
        old = self.cache.get(key)
        if old is not None and not is_newer(rv_of(obj), rv_of(old)):
            return
        if not self._keep(obj):
            if old is not None:
                del self.cache[key]
                await self._emit(EventType.DROPPED, key, obj, old)
            return
        self.cache[key] = obj
        await self._emit(EventType.ADDED if old is None else EventType.MODIFIED, key, obj, old)

    def forget(self, key: str) -> None:
        """Drop an object from the cache without an event (its consumer is gone)."""
        self.cache.pop(key, None)

    async def _deleted(self, obj: Object) -> None:
        key = key_of(obj)
        old = self.cache.pop(key, None)
        if old is not None:
            await self._emit(EventType.DELETED, key, obj, old)

    async def _emit(self, kind: EventType, key: str, obj: Object, old: Object | None) -> None:
        try:
            await self._handler(Event(kind, key, obj, old))
        except asyncio.CancelledError:
            raise
        except Exception:
            # A handler bug must not stop the informer: the next event of the object retries it.
            log.exception("event handler failed", kind=self.kind.kind, key=key, event=kind.value)


async def _maybe_yield(count: int) -> None:
    if count % _YIELD_EVERY == 0:
        await asyncio.sleep(0)
