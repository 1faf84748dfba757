"""Acknowledged resourceVersions as upstream ObjectSync / ClusterObjectSync objects (reliablesyncs.kubeedge.io).

`<node>.<objectUID>` records the last resourceVersion a node stored for one object, so that after a
cloudcore restart (or on another cloudcore) only objects newer than that are sent again. Writes are
coalesced per object (latest ACK wins) by a few owned writer tasks with a bounded backlog; the API is the
control plane or a real cluster, through the one kubernetes_asyncio client. If the CRDs are not
installed, persistence is off with one warning: delivery still works, only restarts resend more.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from typing import Any, Final

from kubernetes_asyncio.client import ApiClient, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from common.log import get_logger
from common.message import Message

log = get_logger("objectsync")

GROUP: Final = "reliablesyncs.kubeedge.io"
VERSION: Final = "v1alpha1"
_MAX_BACKLOG: Final = 100_000
_TIMEOUT: Final = 10.0
WRITERS: Final = 8


def object_key(namespace: str, kind: str, name: str) -> str:
    """The queue key of an object as the edge sees its resource: `<ns>/<type>/<name>` (`null` when cluster-scoped)."""
    return f"{namespace or 'null'}/{kind.lower()}/{name}"


class ObjectSyncStore:
    """Loads a node's acked RVs; records ACKs (coalesced, in the background) and delete ACKs."""

    def __init__(self, kube: ApiClient) -> None:
        self.api = CustomObjectsApi(kube)
        self.enabled = True
        self._backlog: OrderedDict[str, tuple[str, dict[str, Any], bool]] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._acked_by_node: dict[str, dict[str, int]] | None = None
        self._writing: set[str] = set()
        self._index_lock = asyncio.Lock()
        self._running = False  # the writers run (flush waits for them only then)
        self._fresh_lock = asyncio.Lock()
        self._fresh: dict[str, dict[str, int]] = {}
        self._fresh_listed_at = float("-inf")  # monotonic: when the LISTs behind `_fresh` began
        # API calls made by the writers, by (operation write|delete, result success|failure): the
        # `kubeedge_cloudhub_objectsync_writes_total` counter reads it at scrape time.
        self.writes: Counter[tuple[str, str]] = Counter()

    @property
    def backlog(self) -> int:
        """Records waiting for a writer."""
        return len(self._backlog)

    async def load(self, node: str) -> dict[str, int]:
        """{queue key: acked rv} of every object the node has acknowledged.

        The records are listed once, on the first call, and handed out per node: a connect storm of
        thousands of nodes costs two LISTs, not two per node. From then on this process is the writer of
        its nodes' records, and their queues hold the acked versions.
        """
        async with self._index_lock:
            if self._acked_by_node is None:
                self._acked_by_node = await self._index()
        return self._acked_by_node.pop(node, {})

    async def fresh(self, node: str) -> dict[str, int]:
        """{queue key: acked rv} of one node as the API holds them now, for a node another cloudcore
        served since this one loaded it (ownership.py). Callers arriving together share one pair of
        LISTs: a caller reuses a listing that began after it asked, so a takeover storm after an
        instance died costs a few LISTs, not one per node."""
        asked = time.monotonic()
        async with self._fresh_lock:
            if self._fresh_listed_at < asked:
                began = time.monotonic()
                self._fresh = await self._index()
                self._fresh_listed_at = began
            return dict(self._fresh.get(node, {}))

    async def flush(self, node: str, timeout: float) -> bool:
        """Wait (at most `timeout` s) until no ACK of `node` waits to be written: a node's records are
        persisted before its lease is released, so the next owner reads them. False on timeout; at once
        when the writers have stopped (shutdown: nothing would drain)."""
        prefix = f"{node}."
        deadline = time.monotonic() + timeout
        while self._running and any(name.startswith(prefix) for name in (*self._backlog, *self._writing)):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _index(self) -> dict[str, dict[str, int]]:
        by_node: dict[str, dict[str, int]] = {}
        for plural in ("objectsyncs", "clusterobjectsyncs"):
            for item in await self._list(plural):
                node = item["metadata"]["name"].rpartition(".")[0]
                spec, status = item.get("spec") or {}, item.get("status") or {}
                rv = str(status.get("objectResourceVersion") or "")
                if node and rv.isdigit():
                    namespace = item["metadata"].get("namespace", "") if plural == "objectsyncs" else ""
                    key = object_key(namespace, spec.get("objectKind", ""), spec.get("objectName", ""))
                    by_node.setdefault(node, {})[key] = int(rv)
        log.v(2).info("object sync records loaded", nodes=len(by_node), records=sum(map(len, by_node.values())))
        return by_node

    async def _list(self, plural: str) -> list[dict[str, Any]]:
        if not self.enabled:
            return []
        try:
            async with asyncio.timeout(_TIMEOUT):
                found: dict[str, Any] = await self.api.list_cluster_custom_object(GROUP, VERSION, plural)
        except ApiException as exc:
            if exc.status == 404:
                self._disable()
                return []
            raise
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def _disable(self) -> None:
        if self.enabled:
            log.warning("reliablesyncs CRDs not installed: acknowledged versions are not persisted "
                        "(apply config/crds/reliablesyncs)")
        self.enabled = False

    def record(self, node: str, message: Message, rv: int | None, deleted: bool) -> None:
        """Remember an ACK; the writer task persists the latest per object."""
        content = message.content if isinstance(message.content, dict) else None
        meta = (content or {}).get("metadata") or {}
        uid = meta.get("uid")
        if not self.enabled or content is None or not uid or (rv is None and not deleted):
            return
        name = f"{node}.{uid}"
        kind = "ObjectSync" if meta.get("namespace") else "ClusterObjectSync"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
                "metadata": {"name": name, **({"namespace": meta["namespace"]} if meta.get("namespace") else {})},
                "spec": {"objectAPIVersion": content.get("apiVersion", ""), "objectKind": content.get("kind", ""),
                         "objectName": meta.get("name", "")},
                "status": {"objectResourceVersion": "" if rv is None else str(rv)}}
        self._backlog.pop(name, None)
        self._backlog[name] = (meta.get("namespace", ""), body, deleted)
        while len(self._backlog) > _MAX_BACKLOG:  # stated policy: the oldest pending record is dropped
            self._backlog.popitem(last=False)
        self._wakeup.set()

    async def run(self) -> None:
        """The owned writers: persist recorded ACKs until cancelled. Several requests are in flight at
        once (one API round trip each would cap a connect storm at a few hundred records a second), but
        never two for one record, so a record's writes land in the order they were recorded."""
        self._running = True
        try:
            async with asyncio.TaskGroup() as writers:
                for _ in range(WRITERS):
                    writers.create_task(self._writer())
        finally:
            self._running = False

    async def _writer(self) -> None:
        while True:
            picked = self._next_free()
            if picked is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            name, (namespace, body, deleted) = picked
            self._writing.add(name)
            operation = "delete" if deleted else "write"
            try:
                async with asyncio.timeout(_TIMEOUT):
                    await (self._delete(name, namespace) if deleted else self._write(name, namespace, body))
                self.writes[operation, "success"] += 1
            except (ApiException, TimeoutError, OSError) as exc:
                self.writes[operation, "failure"] += 1
                log.warning("object sync not saved", sync=name, err=exc)
            finally:
                self._writing.discard(name)
                if self._backlog:
                    self._wakeup.set()  # a record held back behind this one may go now

    def _next_free(self) -> tuple[str, tuple[str, dict[str, Any], bool]] | None:
        """The oldest backlog record not being written right now (removed from the backlog)."""
        for name in self._backlog:
            if name not in self._writing:
                return name, self._backlog.pop(name)
        return None

    async def _write(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        """Patch the status of an existing record (the common case, one call); create it first if missing."""
        status = {"status": body.pop("status")}
        try:
            await self._patch_status(name, namespace, status)
            return
        except ApiException as exc:
            if exc.status != 404:
                raise
        plural = "objectsyncs" if namespace else "clusterobjectsyncs"
        try:
            if namespace:
                await self.api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
            else:
                await self.api.create_cluster_custom_object(GROUP, VERSION, plural, body)
        except ApiException as exc:
            if exc.status == 404:  # the kind itself is missing
                self._disable()
                return
            if exc.status != 409:
                raise
        await self._patch_status(name, namespace, status)

    async def _patch_status(self, name: str, namespace: str, status: dict[str, Any]) -> None:
        # The client would send a dict as a JSON patch; its stubs omit the _content_type it accepts.
        merge = "application/merge-patch+json"
        if namespace:
            await self.api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "objectsyncs", name,
                                                                 status, _content_type=merge)  # type: ignore[call-arg]
        else:
            await self.api.patch_cluster_custom_object_status(GROUP, VERSION, "clusterobjectsyncs", name, status,
                                                              _content_type=merge)  # type: ignore[call-arg]

    async def _delete(self, name: str, namespace: str) -> None:
        try:
            if namespace:
                await self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, "objectsyncs", name)
            else:
                await self.api.delete_cluster_custom_object(GROUP, VERSION, "clusterobjectsyncs", name)
        except ApiException as exc:
            if exc.status != 404:
                raise
