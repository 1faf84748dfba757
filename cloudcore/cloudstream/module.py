"""CloudStream: the tunnel server edge nodes keep a session on, and the stream server the API server
reaches as the edge nodes' kubelet.

Tunnel (`tunnelPort`, 10004): a WebSocket at `/v1/kubeedge/connect` (common.streamframes),
mutual TLS with the KubeEdge CA and cloudcore's server certificate (the Secrets CloudHub uses); the
node is the client certificate's (O=system:nodes, CN=system:node:<node>), a `SessionHostNameOverride`
header naming another node is refused. A node's newer session replaces its older one.

Stream server (`streamPort`, 10003): HTTPS, GET `/containerLogs/<ns>/<pod>/<container>` with kubelet's
query, and `/exec/<ns>/<pod>/<container>` as a WebSocket (common.wsrelay; SPDY is not served).
Clients must present a certificate signed by `tlsStreamCAFile` (the control plane's CA: its
kubelet client certificate); it serves with `tlsStreamCertFile`/`tlsStreamPrivateKeyFile` when both
exist, else with cloudcore's server certificate. The pod's `spec.nodeName` picks the tunnel session;
no session is a 500 (as an unreachable kubelet), a missing pod a 404.

While a node's session lives, its Node carries the annotation `cloudstream.kubeedge.io/endpoint:
<advertiseAddress[0]>:<streamPort>`, which the control plane's kubelet proxy dials instead of the
node's own address (re-applied every RESYNC seconds if something removed it). When the session ends the
annotation is removed, but only if it still names this server (a JSON patch `test`), so an edge that
moved its tunnel to another cloudcore keeps that one's. Pings every PING_INTERVAL seconds notice a
tunnel whose edge vanished without closing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web
from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cloudcore.cloudhub.secrets import prepare_cloud_pki
from common.config.cloudcore import CloudHub as CloudHubConfig
from common.config.cloudcore import CloudStream as CloudStreamConfig
from common.log import get_logger
from common.modules import ModuleContext
from common.streamframes import (
    CLOSE_CONNECT,
    DATA,
    ENDPOINT_ANNOTATION,
    EXEC_CONNECT,
    HEADER_NODE,
    LOGS_CONNECT,
    REMOVE_CONNECT,
    TUNNEL_PATH,
    Frame,
    FrameError,
    Status,
    parse_status,
)
from common.transport import node_from_peercert, server_tls_for
from common.wsrelay import MAX_MESSAGE, AiohttpPipe, TunnelPipe, relay

log = get_logger("cloudstream")

MAX_FRAME: Final = 1024 * 1024
QUEUE: Final = 1024  # frames buffered per request for a slow client; beyond, the request is dropped
ANSWER_TIMEOUT: Final = 30.0  # seconds for the edge to answer a request's status
RESYNC: Final = 30.0
PING_INTERVAL: Final = 20.0  # and as long to answer: a dead tunnel is noticed within 40 s
CLIENT_CHECK: Final = 1.0  # seconds between checks that the client of a silent followed log is there
_API_TIMEOUT: Final = 10.0
_END: Final = Frame(0, CLOSE_CONNECT)


@dataclass
class _Session:
    node: str
    websocket: ServerConnection
    requests: dict[int, asyncio.Queue[Frame]] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)  # requests ended for a slow client: the edge still sends

    async def send(self, frame: Frame) -> None:
        await self.websocket.send(frame.encode())

    def deliver(self, frame: Frame) -> None:
        queue = self.requests.get(frame.connect_id)
        if queue is None:
            return
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:  # the client does not keep up: its request ends
            log.warning("log client too slow; request dropped", node=self.node, connect_id=frame.connect_id)
            self.requests.pop(frame.connect_id, None)
            self.dropped.add(frame.connect_id)
            queue.get_nowait()
            queue.put_nowait(_END)

    def close_all(self) -> None:
        for queue in self.requests.values():
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_END)
        self.requests.clear()


class CloudStreamModule:
    name = "cloudstream"
    group = "cloudstream"

    def __init__(self, config: CloudStreamConfig, hub: CloudHubConfig, kube: ApiClient) -> None:
        self.config, self.hub, self.kube = config, hub, kube
        self.sessions: dict[str, _Session] = {}
        self._ids = itertools.count(1)
        address = next((a for a in hub.advertise_address if a), "127.0.0.1")
        self.endpoint = f"[{address}]:{config.stream_port}" if ":" in address else f"{address}:{config.stream_port}"

    async def run(self, ctx: ModuleContext) -> None:
        pki = await prepare_cloud_pki(self.kube, self.hub)
        tunnel_tls = server_tls_for(pki.ca.cert, pki.server)
        stream_tls = self._stream_tls(server_tls_for(pki.ca.cert, pki.server))
        tunnel = await self._serve_tunnel(tunnel_tls)
        runner = web.AppRunner(self.application(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, None, self.config.stream_port, ssl_context=stream_tls).start()
            log.info("cloudstream listening", tunnel_port=self.config.tunnel_port, stream_port=self.config.stream_port,
                     endpoint=self.endpoint)
            await asyncio.Event().wait()
        finally:
            tunnel.close()
            await tunnel.wait_closed()
            await runner.cleanup()

    def _stream_tls(self, fallback: ssl.SSLContext) -> ssl.SSLContext:
        """The stream server's TLS: client certificates from tlsStreamCAFile required."""
        ca = Path(self.config.tls_stream_ca_file)
        if not ca.is_file():
            raise FileNotFoundError(f"cloudStream.tlsStreamCAFile {ca} does not exist: point it at the CA of the "
                                    "API server's kubelet client certificate")
        cert, key = Path(self.config.tls_stream_cert_file), Path(self.config.tls_stream_private_key_file)
        context = fallback
        if cert.is_file() and key.is_file():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cert, key)
        context.load_verify_locations(cafile=str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    # -- tunnel -------------------------------------------------------------------------------------
    async def _serve_tunnel(self, tls: ssl.SSLContext) -> Server:
        def check(connection: ServerConnection, request: Request) -> Response | None:
            node = node_from_peercert(connection.transport.get_extra_info("peercert"))
            refusal = None
            if request.path.split("?", 1)[0] != TUNNEL_PATH:
                return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
            if node is None:
                refusal = "client certificate is not a node certificate"
            elif (claimed := request.headers.get(HEADER_NODE)) and claimed != node:
                refusal = f"{HEADER_NODE} {claimed!r} does not match the certificate's node {node!r}"
            if refusal is None:
                return None
            log.warning("tunnel refused", peer=str(connection.remote_address), reason=refusal)
            return connection.respond(HTTPStatus.FORBIDDEN, refusal + "\n")

        return await serve(self._session, None, self.config.tunnel_port, ssl=tls, process_request=check,
                           max_size=MAX_FRAME, compression=None, ping_interval=PING_INTERVAL,
                           ping_timeout=PING_INTERVAL, open_timeout=30,
                           close_timeout=5)

    async def _session(self, websocket: ServerConnection) -> None:
        node = node_from_peercert(websocket.transport.get_extra_info("peercert"))
        assert node is not None  # check() refused anything else
        session = _Session(node, websocket)
        previous = self.sessions.get(node)
        self.sessions[node] = session
        if previous is not None:
            await previous.websocket.close(reason="replaced by a newer session")
        log.info("edge stream session opened", node=node, peer=str(websocket.remote_address))
        annotate = asyncio.create_task(self._annotate(node))
        try:
            async for raw in websocket:
                try:
                    frame = Frame.decode(raw if isinstance(raw, bytes) else raw.encode())
                except FrameError as exc:
                    log.warning("bad tunnel frame dropped", node=node, err=exc)
                    continue
                if frame.kind in (DATA, CLOSE_CONNECT):
                    session.deliver(frame)
                if frame.kind == CLOSE_CONNECT:
                    session.requests.pop(frame.connect_id, None)
        except ConnectionClosed:
            pass
        finally:
            annotate.cancel()
            session.close_all()
            if self.sessions.get(node) is session:
                del self.sessions[node]
                await self._unannotate(node)
            log.info("edge stream session closed", node=node)

    async def _annotate(self, node: str) -> None:
        """Keep the Node's endpoint annotation pointing at this stream server while the session lives."""
        core = CoreV1Api(self.kube)
        while True:
            try:
                current = await core.read_node(node, _request_timeout=_API_TIMEOUT)
                annotations = current.metadata.annotations or {}
                if annotations.get(ENDPOINT_ANNOTATION) != self.endpoint:
                    body = {"metadata": {"annotations": {ENDPOINT_ANNOTATION: self.endpoint}}}
                    await core.patch_node(node, body, _request_timeout=_API_TIMEOUT,
                                          _content_type="application/merge-patch+json")  # type: ignore[call-arg]
                    log.info("node stream endpoint set", node=node, endpoint=self.endpoint)
                await asyncio.sleep(RESYNC)
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("cannot set the node's stream endpoint; retrying", node=node, status=exc.status)
                await asyncio.sleep(2.0)  # not registered yet, or the API is busy
            except (OSError, TimeoutError) as exc:
                log.warning("cannot set the node's stream endpoint; retrying", node=node, err=exc)
                await asyncio.sleep(2.0)

    async def _unannotate(self, node: str) -> None:
        """Remove the Node's endpoint annotation if it still names this server; best effort (a stale one
        costs the next request a 500 until the edge's new tunnel sets its own)."""
        pointer = "/metadata/annotations/" + ENDPOINT_ANNOTATION.replace("~", "~0").replace("/", "~1")
        patch = [{"op": "test", "path": pointer, "value": self.endpoint}, {"op": "remove", "path": pointer}]
        try:
            await CoreV1Api(self.kube).patch_node(node, patch, _request_timeout=_API_TIMEOUT,
                                                  _content_type="application/json-patch+json")  # type: ignore[call-arg]
        except ApiException as exc:
            if exc.status not in (404, 409, 422):  # gone, or the annotation names another server (test failed)
                log.warning("node stream endpoint not removed", node=node, status=exc.status)
            return
        except (OSError, TimeoutError) as exc:
            log.warning("node stream endpoint not removed", node=node, err=exc)
            return
        log.info("node stream endpoint removed", node=node, endpoint=self.endpoint)

    # -- stream server ------------------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        app.router.add_route("*", "/exec/{namespace}/{pod}/{container}", self._exec)
        return app

    async def _node_of(self, namespace: str, pod: str) -> str:
        try:
            found: Any = await CoreV1Api(self.kube).read_namespaced_pod(pod, namespace, _request_timeout=_API_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                raise web.HTTPNotFound(text=f'pods "{pod}" not found') from None
            raise web.HTTPInternalServerError(text=f"cannot read pod {namespace}/{pod}: {exc.status}") from None
        node = (found.spec.node_name if found.spec else None) or ""
        if not node:
            raise web.HTTPBadRequest(text=f'pod "{pod}" is not scheduled to a node')
        return str(node)

    async def _session_for(self, request: web.Request, kind: str) -> tuple[_Session, str]:
        """The tunnel session of the node running the request's pod, and the request's kubelet path."""
        namespace, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        node = await self._node_of(namespace, pod)
        session = self.sessions.get(node)
        if session is None:
            raise web.HTTPInternalServerError(text=f"node {node!r} has no stream tunnel session with cloudcore")
        target = f"/{kind}/" + "/".join(quote(p, safe="") for p in (namespace, pod, container))
        if request.query_string:
            target += "?" + request.query_string
        return session, target

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        session, target = await self._session_for(request, "containerLogs")
        async with self._request(session, LOGS_CONNECT, target.encode()) as (_, frames):
            status = await _answer(frames, session.node)
            if status.code != 200:
                return web.Response(status=status.code, text=status.message)
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            while True:
                try:
                    frame = await asyncio.wait_for(frames.get(), CLIENT_CHECK)
                except TimeoutError:  # a silent followed log: end it once the client has gone
                    if request.transport is None or request.transport.is_closing():
                        return response
                    continue
                if frame.kind != DATA:
                    break
                await response.write(frame.data)
            await response.write_eof()
            return response

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        """kubelet's `/exec/<ns>/<pod>/<container>` over WebSocket: relayed message by message to the edge,
        which opens the runtime's streaming server with the same subprotocol offer (common.wsrelay)."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPBadRequest(text="exec is served over WebSocket only (kubectl 1.30 or newer)")
        session, target = await self._session_for(request, "exec")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        payload = json.dumps({"target": target, "protocols": offered}).encode()
        async with self._request(session, EXEC_CONNECT, payload) as (connect_id, frames):
            status = await _answer(frames, session.node)
            if status.code != 200:
                return web.Response(status=status.code, text=status.message)
            websocket = web.WebSocketResponse(protocols=[status.protocol] if status.protocol else (),
                                              max_msg_size=MAX_MESSAGE, autoping=True)
            await websocket.prepare(request)
            log.v(2).info("exec relayed", node=session.node, target=target.split("?", 1)[0],
                          protocol=status.protocol)
            await relay(AiohttpPipe(websocket), TunnelPipe(connect_id, frames, session.send))
            return websocket

    @contextlib.asynccontextmanager
    async def _request(self, session: _Session, kind: int,
                       data: bytes) -> AsyncIterator[tuple[int, asyncio.Queue[Frame]]]:
        """A request on the node's tunnel (its id and the frames the edge sends for it); leaving it early
        tells the edge to stop (REMOVE_CONNECT)."""
        connect_id = next(self._ids)
        queue: asyncio.Queue[Frame] = asyncio.Queue(QUEUE)
        session.requests[connect_id] = queue
        try:
            try:
                await session.send(Frame(connect_id, kind, data))
            except ConnectionClosed:
                raise web.HTTPInternalServerError(text=f"node {session.node!r}: stream tunnel closed") from None
            yield connect_id, queue
        finally:
            dropped = connect_id in session.dropped
            session.dropped.discard(connect_id)
            if session.requests.pop(connect_id, None) is not None or dropped:  # the edge has not ended it
                with contextlib.suppress(ConnectionClosed):
                    await session.send(Frame(connect_id, REMOVE_CONNECT))


async def _answer(frames: asyncio.Queue[Frame], node: str) -> Status:
    """The edge's status frame for a request: 500 when it sends none in time or a malformed one."""
    first = await _next(frames, ANSWER_TIMEOUT)
    if first is None or first.kind != DATA:
        raise web.HTTPInternalServerError(text=f"node {node!r} ended the request without an answer")
    try:
        return parse_status(first.data)
    except FrameError as exc:
        raise web.HTTPInternalServerError(text=f"node {node!r}: {exc}") from None


async def _next(queue: asyncio.Queue[Frame], timeout: float | None) -> Frame | None:
    """The next frame; None at the end (CLOSE_CONNECT, the session gone, or no answer in time)."""
    try:
        frame = await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        return None
    return None if frame.kind == CLOSE_CONNECT else frame
