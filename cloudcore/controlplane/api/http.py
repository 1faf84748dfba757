"""The Kubernetes REST API over HTTP (aiohttp): routing, verbs, encodings, watch streams, auth.

Owns the request-to-verb mapping of kube-apiserver paths (`/api/v1/namespaces/<ns>/<resource>/<name>/<sub>`,
`/apis/<group>/<version>/...`, the legacy `/watch/` prefix), query parameters, content types, Table
responses for kubectl, watch streaming with bookmarks and 410s, `pods/log` relayed from the pod's
kubelet (through `kubelet.py`), and mapping every failure to a Kubernetes Status. Object semantics
live in `objects.py`; this module never changes an object itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
import yaml
from aiohttp import web

from cloudcore.controlplane.api import discovery, errors, openapi, paths, tables
from cloudcore.controlplane.api.auth import Identity, TokenFile, authorize, identity_from_peercert
from cloudcore.controlplane.api.errors import APIError
from cloudcore.controlplane.api.kubelet import ExecOptions, KubeletProxy, LogOptions, log_container, node_endpoint
from cloudcore.controlplane.api.objects import PATCH_CONTENT_TYPES, DeleteOptions, ObjectAPI, WriteOptions
from cloudcore.controlplane.api.resources import Registry, ResourceInfo
from cloudcore.controlplane.api.selectors import SelectorError, parse_field_selector, parse_label_selector
from cloudcore.controlplane.store.types import (
    EventType,
    Key,
    StoredObject,
    TooOldError,
    WatcherClosedError,
    WatchEvent,
)
from common.log import get_logger
from common.wsrelay import MAX_MESSAGE, AiohttpPipe, WebsocketsPipe, relay

log = get_logger("apiserver")

JSON: Final = "application/json"
MAX_BODY: Final = 3 * 1024 * 1024  # like etcd's request limit behind kube-apiserver
BOOKMARK_INTERVAL: Final = 5.0
CLIENT_POLL: Final = 0.5  # how often a relayed pod log checks that its client is still connected
_BASE_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace"})
_HEALTH: Final = frozenset({"healthz", "livez", "readyz"})


@dataclass(frozen=True, slots=True)
class Target:
    """A resource request, parsed from the path."""

    info: ResourceInfo
    namespace: str
    name: str
    subresource: str
    watch_path: bool


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


def _raw(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _warning_headers(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"Warning": ", ".join('299 - "' + w.replace('"', '\\"') + '"' for w in warnings)}


class APIServer:
    """The HTTP front of one control plane."""

    def __init__(self, objects: ObjectAPI, registry: Registry, tokens: TokenFile, server_address: str,
                 openapi_cache: openapi.OpenAPICache, kubelets: KubeletProxy) -> None:
        self.objects = objects
        self.registry = registry
        self.tokens = tokens
        self.server_address = server_address
        self.openapi = openapi_cache
        self.kubelets = kubelets
        self.ready = False
        self.watchers = 0

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    # -- middleware: identity, errors, access log --------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        began = time.perf_counter()
        try:
            if request.path.strip("/") not in _HEALTH and request.path != "/version":
                request["identity"] = self._authenticate(request)
            response = await handler(request)
        except APIError as exc:
            response = _json(exc.status(), exc.code)
        except web.HTTPRequestEntityTooLarge:
            response = _json(errors.too_large(MAX_BODY).status(), 413)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("request failed", method=request.method, path=request.path)
            response = _json(errors.internal(f"{type(exc).__name__}: {exc}").status(), 500)
        if log.enabled(4):
            log.info("request", method=request.method, path=request.path_qs, status=response.status,
                     ms=f"{(time.perf_counter() - began) * 1000:.1f}")
        return response

    def _authenticate(self, request: web.Request) -> Identity:
        transport = request.transport
        identity = identity_from_peercert(transport.get_extra_info("peercert") if transport else None)
        if identity is None:
            header = request.headers.get("Authorization", "")
            if header.startswith("Bearer "):
                identity = self.tokens.lookup(header[7:].strip())
        if identity is None:
            raise errors.unauthorized()
        return identity

    # -- routing ------------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return _json({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v2",
                                    "/openapi/v3", "/readyz", "/version"]})
        head = parts[0]
        if head in _HEALTH:
            return self._health(request, head)
        if head == "version":
            return _json(discovery.SERVER_VERSION)
        if head == "openapi":  # first build takes a while: keep it off the event loop
            return await asyncio.to_thread(self._openapi, request, parts[1:])
        if head == "api":
            if len(parts) == 1:
                return _json(discovery.api_versions(self.server_address))
            return await self._group_version(request, "", parts[1], parts[2:])
        if head == "apis":
            if len(parts) == 1:
                return _json(discovery.api_group_list(self.registry))
            if len(parts) == 2:
                group = discovery.api_group(self.registry, parts[1])
                if group is None:
                    raise errors.not_found("", parts[1])
                return _json(group)
            return await self._group_version(request, parts[1], parts[2], parts[3:])
        raise APIError(404, "NotFound", "the server could not find the requested resource")

    def _health(self, request: web.Request, check: str) -> web.Response:
        ok = self.ready or check == "livez"
        if "verbose" in request.query:
            text = f"[{'+' if ok else '-'}]ping ok\n[{'+' if ok else '-'}]etcd ok\n{check} check " \
                   f"{'passed' if ok else 'failed'}\n"
            return web.Response(text=text, status=200 if ok else 500)
        return web.Response(text="ok" if ok else "not ready", status=200 if ok else 500)

    def _openapi(self, request: web.Request, rest: list[str]) -> web.Response:
        if rest == ["v2"]:
            body, etag = self.openapi.v2()
        elif rest == ["v3"]:
            body, etag = self.openapi.v3_index()
        elif rest[:1] == ["v3"] and len(rest) > 1:
            found = self.openapi.v3_document("/".join(rest[1:]))
            if found is None:
                raise APIError(404, "NotFound", "the server could not find the requested resource")
            body, etag = found
        else:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return _raw(body, headers={"ETag": etag, "Cache-Control": "no-cache, private"})

    async def _group_version(self, request: web.Request, group: str, version: str,
                             rest: list[str]) -> web.StreamResponse:
        if not rest:
            resources = discovery.api_resource_list(self.registry, group, version)
            if resources is None:
                raise APIError(404, "NotFound", "the server could not find the requested resource")
            return _json(resources)
        target = self._target(group, version, rest)
        return await self._resource(request, target)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        path = paths.parse(rest, lambda plural: self.registry.get(group, version, plural), lambda info: info)
        return Target(path.resource, path.namespace, path.name, path.subresource, path.watch_path)

    # -- verbs --------------------------------------------------------------------------------------
    async def _resource(self, request: web.Request, target: Target) -> web.StreamResponse:
        method, query = request.method, request.query
        watching = target.watch_path or _flag(query.get("watch"))
        # pods/exec: GET for WebSocket, POST for SPDY; authorized as `create` either way (as Kubernetes >= 1.30)
        verb = "create" if target.subresource == "exec" and method in ("GET", "POST") else _verb(method, target,
                                                                                                 watching)
        identity: Identity = request["identity"]
        authorize(identity, verb, target.info, target.namespace, target.name, target.subresource,
                  query.get("fieldSelector", ""), self.objects.store)
        if target.subresource == "log":
            if verb != "get":
                raise errors.method_not_allowed()
            return await self._logs(request, target)
        if target.subresource == "exec":
            return await self._exec(request, target)
        if verb == "watch":
            return await self._watch(request, target)
        if verb == "list":
            return self._list(request, target)
        if verb == "get":
            return self._get(request, target)
        if verb == "create":
            return await self._create(request, target)
        if verb == "update":
            return await self._update(request, target)
        if verb == "patch":
            return await self._patch(request, target)
        if verb == "delete":
            return await self._delete(request, target)
        raise errors.method_not_allowed()

    def _render(self, info: ResourceInfo, stored: StoredObject) -> bytes:
        if info.is_custom and info.version != info.storage_version:
            obj = stored.decode()
            obj["apiVersion"] = info.api_version
            return orjson.dumps(obj)
        return stored.raw

    def _decoded(self, info: ResourceInfo, stored: StoredObject) -> dict[str, Any]:
        obj = stored.decode()
        if info.is_custom:
            obj["apiVersion"] = info.api_version
        return obj

    def _get(self, request: web.Request, target: Target) -> web.Response:
        stored = self.objects.get(target.info, target.namespace, target.name)
        if target.subresource == "scale":
            return _json(_scale_of(stored.decode()))
        if _wants_table(request):
            return _json(tables.table(target.info, [self._decoded(target.info, stored)], str(stored.rv)))
        return _raw(self._render(target.info, stored))

    def _pod_kubelet(self, target: Target) -> tuple[dict[str, Any], str, int]:
        """The pod a log or exec request is for, and the (host, port) of its node's kubelet."""
        pod = self.objects.get(target.info, target.namespace, target.name).decode()
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            raise errors.bad_request(f"pod {target.name} does not have a host assigned")
        node = self.objects.store.get(Key("nodes", "", node_name))
        if node is None:
            raise errors.not_found("nodes", node_name)
        return pod, *node_endpoint(node.decode())

    async def _logs(self, request: web.Request, target: Target) -> web.StreamResponse:
        """pods/log: kube-apiserver's LogREST. Relays the kubelet's answer as it comes, until the kubelet
        ends it or the client goes away."""
        options = LogOptions.parse(request.query, target.name)
        pod, host, port = self._pod_kubelet(target)
        container = log_container(pod, options.container)
        async with self.kubelets.stream_logs(host, port, target.namespace, target.name, container,
                                             options) as chunks:
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await _relay(request, response, chunks)
        return response

    async def _exec(self, request: web.Request, target: Target) -> web.StreamResponse:
        """pods/exec over WebSocket (kubectl >= 1.30 tries it first): the kubelet's exec WebSocket is opened
        with the client's subprotocol offer, the client accepted with the kubelet's pick, and the messages
        relayed both ways until either side ends. A SPDY request is checked as fully (so a wrong container
        reads as such) and then refused: aiohttp cannot hand over a SPDY connection."""
        options = ExecOptions.parse(request.query)
        pod, host, port = self._pod_kubelet(target)
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise errors.bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
        container = log_container(pod, options.container)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise errors.bad_request("pods/exec is served over WebSocket only (kubectl 1.30 or newer, or a "
                                     "client speaking v4.channel.k8s.io); SPDY is not supported")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        async with self.kubelets.open_exec(host, port, target.namespace, target.name, container, options,
                                           offered) as kubelet:
            client = web.WebSocketResponse(protocols=[kubelet.subprotocol] if kubelet.subprotocol else (),
                                           max_msg_size=MAX_MESSAGE)
            await client.prepare(request)
            log.v(2).info("exec started", pod=f"{target.namespace}/{target.name}", container=container,
                          protocol=kubelet.subprotocol)
            await relay(AiohttpPipe(client), WebsocketsPipe(kubelet))
        return client

    def _selectors(self, request: web.Request, info: ResourceInfo) -> tuple[Any, Any]:
        query = request.query
        try:
            labels = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else None
            fields = parse_field_selector(query["fieldSelector"]) if query.get("fieldSelector") else None
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from None
        if fields is not None:
            for requirement in fields.requirements:
                if requirement.field not in _BASE_FIELDS and requirement.field not in info.selectable:
                    raise errors.bad_request(f'field label not supported: {requirement.field}')
        return labels, fields

    def _list(self, request: web.Request, target: Target) -> web.Response:
        info = target.info
        labels, fields = self._selectors(request, info)
        try:
            limit = int(request.query.get("limit", "0") or 0)
        except ValueError:
            raise errors.bad_request(f"invalid limit {request.query.get('limit')!r}") from None
        namespace = target.namespace or None
        result = self.objects.list_objects(info, namespace, labels, fields, limit, request.query.get("continue", ""))
        if _wants_table(request):
            return _json(tables.table(info, [self._decoded(info, o) for o in result.items], str(result.rv),
                                      result.continue_token))
        meta: dict[str, Any] = {"resourceVersion": str(result.rv)}
        if result.continue_token:
            meta["continue"] = result.continue_token
            meta["remainingItemCount"] = result.remaining
        head = orjson.dumps({"kind": info.list_kind, "apiVersion": info.api_version, "metadata": meta})
        items = b",".join(self._render(info, o) for o in result.items)
        return _raw(head[:-1] + b',"items":[' + items + b"]}")

    async def _body(self, request: web.Request) -> Any:
        data = await request.read()
        if len(data) > MAX_BODY:
            raise errors.too_large(MAX_BODY)
        content_type = request.content_type
        try:
            if content_type in ("application/yaml", "application/apply-patch+yaml"):
                return yaml.safe_load(data)
            return orjson.loads(data)
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"the body of the request could not be decoded: {exc}") from None

    def _write_options(self, request: web.Request) -> WriteOptions:
        query = request.query
        validation = query.get("fieldValidation", "Warn")
        if validation not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(f"fieldValidation {validation!r} is not one of Strict, Warn, Ignore")
        dry_run = query.get("dryRun", "")
        if dry_run not in ("", "All"):
            raise errors.bad_request(f"dryRun {dry_run!r}: the only supported value is All")
        return WriteOptions(dry_run=dry_run == "All", field_manager=query.get("fieldManager", ""),
                            field_validation=validation)  # type: ignore[arg-type]

    async def _create(self, request: web.Request, target: Target) -> web.Response:
        body = await self._body(request)
        if target.subresource == "binding":
            await self._bind(target, body)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "code": 201}, 201)
        result = await self.objects.create(target.info, target.namespace, body, self._write_options(request))
        return _raw(self._render(target.info, result.stored), 201, _warning_headers(result.warnings))

    async def _bind(self, target: Target, body: Any) -> None:
        node = ((body or {}).get("target") or {}).get("name") if isinstance(body, dict) else None
        if not node:
            raise errors.bad_request("a binding needs target.name (the node)")
        stored = self.objects.get(target.info, target.namespace, target.name)
        pod = stored.decode()
        bound = (pod.get("spec") or {}).get("nodeName")
        if bound:
            raise errors.conflict("pods", target.name, "", f"pod {target.name} is already assigned to node "
                                  f'"{bound}"')
        pod["spec"]["nodeName"] = node
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or () if c.get("type") != "PodScheduled"]
        status["conditions"] = conditions
        conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                           "lastTransitionTime": _now()})
        await self.objects.store.update(stored.key, pod, expected_rv=stored.rv)

    async def _update(self, request: web.Request, target: Target) -> web.Response:
        body = await self._body(request)
        options = self._write_options(request)
        if target.subresource == "scale":
            return await self._scale_update(target, lambda scale: body, options)
        result = await self.objects.update(target.info, target.namespace, target.name, body, options,
                                           target.subresource)
        return _raw(self._render(target.info, result.stored), 201 if result.created else 200,
                    _warning_headers(result.warnings))

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        patch_type = PATCH_CONTENT_TYPES.get(request.content_type)
        if patch_type is None:
            raise errors.unsupported_media_type(request.content_type)
        data = await request.read()
        options = self._write_options(request)
        if target.subresource == "scale":
            from cloudcore.controlplane.api import patch as patching

            document = orjson.loads(data)
            return await self._scale_update(target, lambda scale: patching.json_merge_patch(scale, document)
                                            if patch_type != "json" else patching.json_patch(scale, document),
                                            options)
        result = await self.objects.patch(target.info, target.namespace, target.name, patch_type, data, options,
                                          target.subresource, _flag(request.query.get("force")))
        return _raw(self._render(target.info, result.stored), 201 if result.created else 200,
                    _warning_headers(result.warnings))

    async def _scale_update(self, target: Target, change: Callable[[dict[str, Any]], Any],
                            options: WriteOptions) -> web.Response:
        stored = self.objects.get(target.info, target.namespace, target.name)
        obj = stored.decode()
        scale = change(_scale_of(obj))
        replicas = ((scale or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid("Scale", target.name, [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                                         "message": "must be greater than or equal to 0"}],
                                 "autoscaling")
        obj["spec"]["replicas"] = replicas
        obj["metadata"]["resourceVersion"] = str(stored.rv)
        result = await self.objects.update(target.info, target.namespace, target.name, obj, options)
        return _json(_scale_of(result.stored.decode()))

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        body: Any = {}
        if request.can_read_body:
            data = await request.read()
            if data.strip():
                try:
                    body = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise errors.bad_request(f"invalid DeleteOptions: {exc}") from None
        options = DeleteOptions.parse(body if isinstance(body, dict) else {}, request.query)
        stored = await self.objects.delete(target.info, target.namespace, target.name, options)
        return _raw(self._render(target.info, stored))

    # -- watch --------------------------------------------------------------------------------------
    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        info, query = target.info, request.query
        labels, fields = self._selectors(request, info)
        if target.name:
            fields = parse_field_selector(f"metadata.name={target.name}")
        namespace = target.namespace or None
        table = _wants_table(request)
        bookmarks = _flag(query.get("allowWatchBookmarks"))
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        requested = query.get("resourceVersion", "")
        initial: list[StoredObject] = []
        send_initial = _flag(query.get("sendInitialEvents"))
        try:
            if requested in ("", "0") or send_initial:
                initial, since = self.objects.store.list(info.gr, namespace)
            else:
                since = int(requested)
            watcher = self.objects.store.watch(info.gr, namespace, since)
        except ValueError:
            raise errors.bad_request(f"invalid resourceVersion {requested!r}") from None
        except TooOldError as exc:
            watcher = None
            expired = errors.gone(str(exc)).status()
        response = web.StreamResponse(headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if watcher is None:
            await response.write(orjson.dumps({"type": "ERROR", "object": expired}) + b"\n")
            return response
        self.watchers += 1
        try:
            def matches(stored: StoredObject) -> bool:
                return (labels is None or labels.matches(stored.labels)) and (
                    fields is None or fields.matches(stored.fields))

            async def send(kind: str, stored: StoredObject) -> None:
                if table:
                    obj = orjson.dumps(tables.table(info, [self._decoded(info, stored)], str(stored.rv)))
                else:
                    obj = self._render(info, stored)
                await response.write(b'{"type":"' + kind.encode() + b'","object":' + obj + b"}\n")

            for stored in initial:
                if matches(stored):
                    await send("ADDED", stored)
            if send_initial:
                await response.write(self._bookmark(info, since, initial_end=True))
            deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
            while True:
                wait = BOOKMARK_INTERVAL
                if deadline is not None:
                    wait = min(wait, deadline - asyncio.get_running_loop().time())
                    if wait <= 0:
                        break
                event = await watcher.next(wait)
                if event is None:
                    if bookmarks:
                        await response.write(self._bookmark(info, self.objects.store.current_rv))
                    continue
                kind = _filtered_type(event, matches)
                if kind is not None:
                    await send(kind, event.object)
        except WatcherClosedError:
            pass  # store shutdown, or this client fell too far behind: it will re-watch
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers -= 1
            watcher.close()
        return response

    def _bookmark(self, info: ResourceInfo, rv: int, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return orjson.dumps({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version,
                                                            "metadata": meta}}) + b"\n"


async def _relay(request: web.Request, response: web.StreamResponse, chunks: AsyncIterator[bytes]) -> None:
    """Write each chunk as it arrives (one HTTP chunk each, so `kubectl logs -f` prints lines as they come)
    until the chunks end or the client disconnects; a disconnect is noticed within CLIENT_POLL even
    while the log is silent, and ends the kubelet request when the caller leaves `stream_logs`."""
    async def copy() -> None:
        try:
            async for chunk in chunks:
                await response.write(chunk)
        except ConnectionError:
            pass  # the client went away mid-write

    async def until_client_gone() -> None:
        # polled: aiohttp tells a handler of a disconnect only by cancelling it, which this server does not enable
        while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(CLIENT_POLL)

    copying = asyncio.create_task(copy(), name="pods-log-copy")
    watching = asyncio.create_task(until_client_gone(), name="pods-log-client")
    try:
        await asyncio.wait((copying, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        copying.cancel()
        watching.cancel()
        await asyncio.gather(copying, watching, return_exceptions=True)
    failure = None if copying.cancelled() else copying.exception()
    if failure is not None:  # headers are out: end the stream, there is no Status to send any more
        log.error("pods/log relay failed", path=request.path, error=f"{type(failure).__name__}: {failure}")


def _filtered_type(event: WatchEvent, matches: Callable[[StoredObject], bool]) -> str | None:
    """The event a filtered watch sends: an object entering the selection is ADDED, one leaving it
    DELETED (with its new state), others as they are; None when the watch should not see it."""
    now = matches(event.object)
    if event.type is not EventType.MODIFIED or event.previous is None:
        return event.type.value if now else None
    before = matches(event.previous)
    if now:
        return "MODIFIED" if before else "ADDED"
    return "DELETED" if before else None


def _flag(value: str | None) -> bool:
    """A boolean query parameter, parsed as Go's strconv.ParseBool (clients send true, True, 1)."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def _verb(method: str, target: Target, watching: bool) -> str:
    named = bool(target.name)
    if method == "GET":
        if watching:
            return "watch"
        return "get" if named else "list"
    if method == "POST":
        if named and target.subresource != "binding":
            raise errors.method_not_allowed()
        return "create"
    if method == "PUT" and named:
        return "update"
    if method == "PATCH" and named:
        return "patch"
    if method == "DELETE":
        if not named:
            raise errors.method_not_allowed("deletecollection is not supported: delete objects one by one")
        return "delete"
    raise errors.method_not_allowed()


def _scale_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items()))
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {"replicas": status.get("replicas", 0), "selector": selector}}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
