"""MetaServer's HTTP API (aiohttp): kube-apiserver paths over the edge store, every failure a Status.

Reads are answered from SQLite: discovery, GET of one object, LIST (label and field selectors,
limit/continue), WATCH, and Table responses for kubectl. For the kinds the node does not sync, GET and
LIST first refresh the store from the cloud and WATCH subscribes the node to them (`RemoteReads`), and
discovery includes the cloud's (`CloudDiscovery`). Writes are handed to `CloudWriter`. Paths and errors
follow kube-apiserver: an unknown path or resource is 404 NotFound, a bad selector, limit, continue token
or resourceVersion 400 BadRequest.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from cloudcore.controlplane.api import discovery, errors, paths, tables
from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from common.application import Verb
from common.log import get_logger
from edgecore.metamanager.events import EventHub, Subscription, TooManySubscribers
from edgecore.metaserver.cloud_discovery import MAX_AGE, MISS_INTERVAL, CloudDiscovery
from edgecore.metaserver.kinds import BASE_FIELDS, Kinds, ServedKind
from edgecore.metaserver.reader import StoreReader
from edgecore.metaserver.remote import RemoteReads
from edgecore.metaserver.watch import JSON, WatchRequest, WatchStream
from edgecore.metaserver.writes import CloudWriter, WriteRequest

log = get_logger("metaserver")

MAX_BODY: Final = 3 * 1024 * 1024  # kube-apiserver's request limit
_HEALTH: Final = frozenset({"healthz", "livez", "readyz"})
_PATCH_TYPES: Final = frozenset({"application/json-patch+json", "application/merge-patch+json",
                                 "application/strategic-merge-patch+json", "application/apply-patch+yaml"})
_NOT_FOUND: Final = "the server could not find the requested resource"


@dataclass(frozen=True, slots=True)
class Target:
    """A resource request, parsed from the path."""

    kind: ServedKind
    namespace: str
    name: str
    subresource: str
    watch_path: bool


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


def _not_found() -> APIError:
    return APIError(404, "NotFound", _NOT_FOUND)


def _no_copy(kind: ServedKind, namespace: str, name: str, why: str) -> APIError:
    """404 for a remote kind the cloud could not be asked about and the store has nothing of."""
    info = kind.info
    what = f'{info.gr} "{name}"' if name else info.gr
    where = f" in namespace {namespace}" if namespace and info.namespaced else ""
    details: dict[str, Any] = {"kind": info.plural, **({"name": name} if name else {}),
                               **({"group": info.group} if info.group else {})}
    return APIError(404, "NotFound", f"{what}{where} not found: {why}, and the edge has no cached copy",
                    details)


def _flag(value: str | None) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _resource_version(text: str) -> int | None:
    """A request's resourceVersion: None for "" and "0" (any version), else a cloud RV, else 400."""
    if text in ("", "0"):
        return None
    if not text.isdigit():
        raise errors.bad_request(f"invalid resource version: {text!r}: resourceVersion must be an integer")
    return int(text)


class MetaServerAPI:
    def __init__(self, kinds: Kinds, reader: StoreReader, hub: EventHub, writer: CloudWriter,
                 remote: RemoteReads, cloud_discovery: CloudDiscovery, server_address: str) -> None:
        self.kinds = kinds
        self.reader = reader
        self.hub = hub
        self.writer = writer
        self.server_address = server_address
        self.remote = remote
        self.cloud_discovery = cloud_discovery
        self._watches: set[Subscription] = set()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def close_watches(self) -> None:
        """End every open watch (server shutdown): their streams finish at once."""
        for subscription in tuple(self._watches):
            subscription.close()

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        began = time.perf_counter()
        try:
            response = await handler(request)
        except APIError as exc:
            response = _json(exc.status(), exc.code)
        except web.HTTPRequestEntityTooLarge:
            response = _json(errors.too_large(MAX_BODY).status(), 413)
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("request failed", method=request.method, path=request.path)
            response = _json(errors.internal(f"{type(exc).__name__}: {exc}").status(), 500)
        if log.enabled(4):
            log.info("request", method=request.method, path=request.path_qs, status=response.status,
                     ms=f"{(time.perf_counter() - began) * 1000:.1f}")
        return response

    # -- routing ------------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return _json({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]})
        head = parts[0]
        if head in _HEALTH and len(parts) == 1:
            return web.Response(text="ok")
        if head == "version" and len(parts) == 1:
            return _json(discovery.SERVER_VERSION)
        if head == "api":
            if len(parts) == 1:
                return _json(discovery.api_versions(self.server_address))
            return await self._group_version(request, "", parts[1], parts[2:])
        if head == "apis":
            if len(parts) == 1:
                await self._rediscover(MAX_AGE)
                return _json(self.kinds.group_list())
            if len(parts) == 2:
                group = self.kinds.group(parts[1])
                if group is None and await self._rediscover(MISS_INTERVAL):
                    group = self.kinds.group(parts[1])
                if group is None:
                    raise _not_found()
                return _json(group)
            return await self._group_version(request, parts[1], parts[2], parts[3:])
        raise _not_found()

    async def _rediscover(self, max_age: float) -> bool:
        """Refresh the cloud's discovery unless fetched within `max_age` s; True when the kinds changed."""
        return await self.cloud_discovery.refresh(max_age)

    async def _group_version(self, request: web.Request, group: str, version: str,
                             rest: list[str]) -> web.StreamResponse:
        if not rest:
            if group == "" and version == "v1":
                await self._rediscover(MAX_AGE)
            resources = self.kinds.resource_list(group, version)
            if resources is None and await self._rediscover(MISS_INTERVAL):
                resources = self.kinds.resource_list(group, version)
            if resources is None:
                raise _not_found()
            return _json(resources)
        try:
            target = self._target(group, version, rest)
        except APIError:
            # a kind created in the cloud since the edge last fetched its discovery (a new CRD)
            if not await self._rediscover(MISS_INTERVAL):
                raise
            target = self._target(group, version, rest)
        return await self._resource(request, target)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        path = paths.parse(rest, lambda plural: self.kinds.get(group, version, plural), lambda kind: kind.info)
        return Target(path.resource, path.namespace, path.name, path.subresource, path.watch_path)

    async def _resource(self, request: web.Request, target: Target) -> web.StreamResponse:
        method = request.method
        if target.kind.info.namespaced and not target.namespace:
            if target.name:
                raise _not_found()  # a namespaced object has no path without its namespace
            if method != "GET":
                raise errors.method_not_allowed()  # only list and watch span namespaces
        if method == "GET":
            if target.watch_path or _flag(request.query.get("watch")):
                return await self._watch(request, target)
            if target.name:
                return await self._get(request, target)
            return await self._list(request, target)
        if method == "POST" and not target.name:
            return await self._create(request, target)
        if method == "PUT" and target.name:
            return await self._update(request, target)
        if method == "PATCH" and target.name:
            return await self._patch(request, target)
        if method == "DELETE" and target.name:
            return await self._delete(request, target)
        raise errors.method_not_allowed()

    # -- reads --------------------------------------------------------------------------------------
    def _namespace_token(self, target: Target) -> str | None:
        """The `meta` key namespace a request reads: None for every namespace of a namespaced kind."""
        if target.kind.info.namespaced and not target.namespace:
            return None
        return target.kind.namespace_token(target.namespace)

    async def _get(self, request: web.Request, target: Target) -> web.Response:
        kind, info = target.kind, target.kind.info
        unfetched = None  # why the cloud was not asked (a remote kind only)
        if kind.remote:
            unfetched = await self.remote.read_object(kind, target.namespace, target.name)
        value = await self.reader.get(kind.key(target.namespace, target.name))
        obj = orjson.loads(value) if value is not None else None
        if not isinstance(obj, dict):
            if unfetched is not None and not self.remote.cached(kind, target.namespace):
                raise _no_copy(kind, target.namespace, target.name, unfetched)
            raise errors.not_found(info.plural, target.name, info.group)
        kind.with_type_meta(obj)
        if _wants_table(request):
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            return _json(tables.table(info, [obj], rv))
        return _json(obj)

    def _selectors(self, request: web.Request, kind: ServedKind) -> tuple[LabelSelector | None,
                                                                          FieldSelector | None]:
        query = request.query
        try:
            labels = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else None
            fields = parse_field_selector(query["fieldSelector"]) if query.get("fieldSelector") else None
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from None
        for requirement in fields.requirements if fields is not None else ():
            if requirement.field not in BASE_FIELDS and requirement.field not in kind.info.selectable:
                raise errors.bad_request(f"field label not supported: {requirement.field}")
        return labels, fields

    async def _list(self, request: web.Request, target: Target) -> web.Response:
        kind, info, query = target.kind, target.kind.info, request.query
        labels, fields = self._selectors(request, kind)
        _resource_version(query.get("resourceVersion", ""))  # any version is served from the store's current state
        try:
            limit = int(query.get("limit", "") or 0)
        except ValueError:
            raise errors.bad_request(f"invalid limit {query.get('limit')!r}") from None
        list_rv, after = _decode_continue(query.get("continue", ""))
        unfetched = None  # why the cloud was not asked (a remote kind's first page only)
        if kind.remote and not after:
            unfetched = await self.remote.read_list(kind, target.namespace)
        if labels is None and fields is None and not limit and not after and not _wants_table(request):
            plain = await self._plain_list(target)
            if plain is not None:
                return plain
        snapshot = await self.reader.snapshot(kind.store_type, self._namespace_token(target), after)
        if unfetched is not None and not snapshot.rows and not self.remote.cached(kind, target.namespace):
            raise _no_copy(kind, target.namespace, "", unfetched)
        items: list[dict[str, Any]] = []
        last_key, more = "", False
        for key, value in snapshot.rows:
            obj = orjson.loads(value)
            if not isinstance(obj, dict):
                continue
            if (labels is not None and not labels.matches((obj.get("metadata") or {}).get("labels") or {})) or (
                    fields is not None and not fields.matches(kind.fields(obj))):
                continue
            if 0 < limit <= len(items):
                more = True
                break
            items.append(kind.with_type_meta(obj))
            last_key = key
        # Pages after the first keep the first page's RV, so a watch from it replays what changed meanwhile.
        rv = str(list_rv or snapshot.rv or 1)
        token = _encode_continue(int(rv), last_key) if more else ""
        if _wants_table(request):
            return _json(tables.table(info, items, rv, token))
        meta: dict[str, Any] = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
        return _json({"kind": info.list_kind, "apiVersion": info.api_version, "metadata": meta, "items": items})

    async def _plain_list(self, target: Target) -> web.Response | None:
        """A LIST without selectors, paging or table: the stored JSON joined as it is (objects lacking
        apiVersion/kind get them); None when a remote kind has nothing stored (the general path says why)."""
        kind, info = target.kind, target.kind.info
        snapshot = await self.reader.typed_snapshot(kind.store_type, self._namespace_token(target))
        if not snapshot.rows and kind.remote and not self.remote.cached(kind, target.namespace):
            return None
        items = [value.encode() if typed else orjson.dumps(kind.with_type_meta(orjson.loads(value)))
                 for _, value, typed in snapshot.rows]
        head = orjson.dumps({"kind": info.list_kind, "apiVersion": info.api_version,
                             "metadata": {"resourceVersion": str(snapshot.rv or 1)}})
        body = head[:-1] + b',"items":[' + b",".join(items) + b"]}"
        return web.Response(body=body, content_type=JSON)

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        query = request.query
        labels, fields = self._selectors(request, target.kind)
        if target.name:
            fields = parse_field_selector(f"metadata.name={target.name}")
        since = _resource_version(query.get("resourceVersion", ""))
        send_initial = _flag(query.get("sendInitialEvents"))
        try:
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        except ValueError:
            raise errors.bad_request(f"invalid timeoutSeconds {query.get('timeoutSeconds')!r}") from None
        watch = WatchRequest(target.kind, self._namespace_token(target), labels, fields,
                             None if send_initial else since, _wants_table(request),
                             _flag(query.get("allowWatchBookmarks")), send_initial, timeout)
        if target.kind.remote:
            await self.remote.subscribe(target.kind, target.namespace)
        try:
            subscription = self.hub.subscribe([target.kind.store_type])
        except TooManySubscribers as exc:
            raise APIError(429, "TooManyRequests", f"too many watches on this edge node: {exc}") from None
        self._watches.add(subscription)
        try:
            return await WatchStream(request, watch, self.reader, subscription).run()
        finally:
            self._watches.discard(subscription)
            subscription.close()

    # -- writes (to the cloud) ------------------------------------------------------------------------
    async def _create(self, request: web.Request, target: Target) -> web.Response:
        body = await _json_body(request)
        return await self._write(WriteRequest("create", target.kind, target.namespace, "", "",
                                              _write_options(request.query), body))

    async def _update(self, request: web.Request, target: Target) -> web.Response:
        body = await _json_body(request)
        verb = "updatestatus" if target.subresource == "status" else "update"
        return await self._write(WriteRequest(verb, target.kind, target.namespace, target.name, target.subresource,
                                              _write_options(request.query), body))

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        if request.content_type not in _PATCH_TYPES:
            raise errors.unsupported_media_type(request.content_type)
        data = await request.read()
        options = _write_options(request.query)
        if _flag(request.query.get("force")):
            options["force"] = True
        patch = {"Name": target.name, "PatchType": request.content_type, "Data": base64.b64encode(data).decode(),
                 "Options": options, "Subresources": [target.subresource] if target.subresource else None}
        return await self._write(WriteRequest("patch", target.kind, target.namespace, target.name,
                                              target.subresource, options, patch))

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        options: dict[str, Any] = {}
        if request.can_read_body:
            data = await request.read()
            if data.strip():
                try:
                    options = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise errors.bad_request(f"invalid DeleteOptions: {exc}") from None
                if not isinstance(options, dict):
                    raise errors.bad_request("invalid DeleteOptions: expected a JSON object")
        query = request.query
        if query.get("gracePeriodSeconds", "").lstrip("-").isdigit():
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        if query.get("dryRun"):
            options["dryRun"] = query.getall("dryRun")
        return await self._write(WriteRequest("delete", target.kind, target.namespace, target.name, "", options,
                                              None))

    async def _write(self, write: WriteRequest) -> web.Response:
        code, body = await self.writer.write(write)
        if write.kind.remote:
            await _cache_written(self.remote, write, body)
        return _json(body, code)


async def _cache_written(remote: RemoteReads, write: WriteRequest, body: dict[str, Any]) -> None:
    """A remote kind's write result is cached (no subscription may bring it), so offline reads see it."""
    if write.verb == Verb.DELETE and not (body.get("metadata") or {}).get("deletionTimestamp"):
        await remote.forget(write.kind, write.namespace, write.name)
    elif body.get("kind") != "Status":
        await remote.store(write.kind, body)


def _write_options(query: Mapping[str, str]) -> dict[str, Any]:
    """Create/Update/PatchOptions from the query, as metav1 names them."""
    options: dict[str, Any] = {}
    if query.get("dryRun"):
        options["dryRun"] = [query["dryRun"]]
    for name in ("fieldManager", "fieldValidation"):
        if query.get(name):
            options[name] = query[name]
    return options


async def _json_body(request: web.Request) -> dict[str, Any]:
    data = await request.read()
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(f"the body of the request could not be decoded as JSON: {exc}") from None
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be a JSON object")
    return body


def _encode_continue(rv: int, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"rv": rv, "start": key})).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    """(RV of the first page, last key returned) of a continue token; (0, "") for none."""
    if not token:
        return 0, ""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        decoded = None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("rv"), int) or not isinstance(
            decoded.get("start"), str) or not decoded["start"]:
        raise errors.bad_request("continue key is not valid: expected a token from a previous list")
    return decoded["rv"], decoded["start"]
