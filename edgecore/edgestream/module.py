"""EdgeStream: dials CloudStream's tunnel with the edge certificate and serves its log requests.

The tunnel (common.streamframes) is dialed at `edgeStream.server` with the files EdgeHub uses
(`edgeStream.tlsTunnel*`, by default the same paths). Like EdgeHub's server, `edgeStream.server` may list
several cloudcores separated by commas (docs/ha.md): a failed dial moves on to the next one at once, and
only after all failed does the edge wait the reconnect back-off (edgecore.edgehub.servers); a tunnel that
served and dropped is dialed again on the same server after the back-off. WebSocket pings every
`readDeadline` seconds notice a dead tunnel. Each request is served in its own task, and REMOVE_CONNECT
cancels it. The container is found through CRI by kubelet's labels (pod namespace and name, container
name; the newest attempt) and edged's node label (runtimes may be shared by several edgecores).

LOGS_CONNECT: that container's (or with `previous` the one before it) CRI log file is read by
`crilog.read_log`. EXEC_CONNECT: CRI Exec gives the runtime's streaming URL, opened as a WebSocket with
the client's subprotocol offer; its messages are relayed to and from the tunnel (common.wsrelay).
containerd 1.6 speaks `v4.channel.k8s.io` at most while kubectl >= 1.30 offers only `v5.channel.k8s.io`
(v4 plus a signal that closes stdin): the runtime is offered v4 in place of v5 and the client gets v5,
without its close signals, so a command reading stdin to its end waits until kubectl leaves.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import ssl
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from common.config.edgecore import EdgeStream as EdgeStreamConfig
from common.log import get_logger
from common.modules import ModuleContext
from common.streamframes import (
    CLOSE_CONNECT,
    DATA,
    EXEC_CONNECT,
    HEADER_IP,
    HEADER_NODE,
    LOGS_CONNECT,
    REMOVE_CONNECT,
    TUNNEL_PATH,
    Frame,
    FrameError,
    status_frame,
)
from common.transport import client_tls
from common.wsrelay import MAX_MESSAGE, V4, V5, Pipe, TunnelPipe, WebsocketsPipe, WithoutCloseSignals, relay
from edgecore.cri import CRIClient
from edgecore.cri.client import CRIError
from edgecore.cri.types import Container, ContainerFilter, ContainerState
from edgecore.edged.pods.spec import LABEL_NODE_NAME
from edgecore.edgehub.servers import ServerRotation
from edgecore.edgestream.crilog import LogOptions, LogOptionsError, read_log

log = get_logger("edgestream")

MAX_FRAME: Final = 1024 * 1024
EXEC_INBOX: Final = 256  # messages from the cloud's client not yet taken by the runtime
EXEC_OPEN_TIMEOUT: Final = 10.0
LABEL_POD_NAME: Final = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE: Final = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME: Final = "io.kubernetes.container.name"


class _Answer(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class EdgeStreamModule:
    name = "edgestream"
    group = "edgestream"

    def __init__(self, config: EdgeStreamConfig, node: str, node_ip: str, cri: CRIClient | None) -> None:
        self.config, self.node, self.node_ip, self.cri = config, node, node_ip, cri

    async def run(self, ctx: ModuleContext) -> None:
        servers = ServerRotation(self.config.server)
        while True:
            server = servers.current
            try:
                websocket = await self._dial(server)
            except (OSError, ssl.SSLError, InvalidHandshake, TimeoutError) as exc:
                delay = servers.failed(time.monotonic(), random.random)
                log.warning("cannot open the stream tunnel; retrying", server=server,
                            err=f"{type(exc).__name__}: {exc}", next_server=servers.current, retry_in=round(delay, 1))
                await asyncio.sleep(delay)
                continue
            servers.connected(time.monotonic())
            log.info("stream tunnel connected", server=server, node=self.node)
            try:
                await self.serve(websocket)
            finally:
                await websocket.close()
            delay = servers.dropped(time.monotonic(), random.random)
            log.warning("stream tunnel lost; reconnecting", server=server, retry_in=round(delay, 1))
            await asyncio.sleep(delay)

    async def _dial(self, server: str) -> ClientConnection:
        files = (Path(self.config.tls_tunnel_ca_file), Path(self.config.tls_tunnel_cert_file),
                 Path(self.config.tls_tunnel_private_key_file))
        tls = await asyncio.to_thread(client_tls, *files)
        headers = Headers({HEADER_NODE: self.node, HEADER_IP: self.node_ip})
        return await connect(f"wss://{server}{TUNNEL_PATH}", ssl=tls, additional_headers=headers,
                             max_size=MAX_FRAME, compression=None, open_timeout=self.config.handshake_timeout,
                             ping_interval=max(1, self.config.read_deadline), close_timeout=5)

    async def serve(self, websocket: ClientConnection) -> None:
        """Answer the tunnel's requests until it closes."""
        requests: dict[int, asyncio.Task[None]] = {}
        inboxes: dict[int, asyncio.Queue[Frame]] = {}  # what the cloud's client sends to an exec
        try:
            async for raw in websocket:
                try:
                    frame = Frame.decode(raw if isinstance(raw, bytes) else raw.encode())
                except FrameError as exc:
                    log.warning("bad frame from the tunnel dropped", err=exc)
                    continue
                connect_id = frame.connect_id
                if frame.kind == LOGS_CONNECT:
                    self._start(requests, connect_id, self._logs(websocket, connect_id, frame.data.decode()))
                elif frame.kind == EXEC_CONNECT:
                    inboxes[connect_id] = asyncio.Queue(EXEC_INBOX)
                    work = self._exec(websocket, connect_id, frame.data, inboxes[connect_id])
                    self._start(requests, connect_id, work).add_done_callback(
                        functools.partial(_forget_inbox, inboxes, connect_id))
                elif frame.kind == DATA and connect_id in inboxes:
                    try:
                        inboxes[connect_id].put_nowait(frame)
                    except asyncio.QueueFull:  # the runtime does not take stdin: that exec ends, the tunnel lives
                        log.warning("exec input backed up; exec ended", connect_id=connect_id)
                        requests[connect_id].cancel()
                elif frame.kind == REMOVE_CONNECT:
                    if (running := requests.pop(connect_id, None)) is not None:
                        running.cancel()
                elif frame.kind != DATA:  # attach, metrics: not served
                    await websocket.send(status_frame(connect_id, 501, "not implemented by edgestream").encode())
                    await websocket.send(Frame(connect_id, CLOSE_CONNECT).encode())
        except ConnectionClosed:
            pass
        finally:
            for task in list(requests.values()):
                task.cancel()

    @staticmethod
    def _start(requests: dict[int, asyncio.Task[None]], connect_id: int,
               work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        requests[connect_id] = task
        task.add_done_callback(functools.partial(_forget, requests, connect_id))
        return task

    async def _exec(self, tunnel: ClientConnection, connect_id: int, payload: bytes,
                    inbox: asyncio.Queue[Frame]) -> None:
        """One exec: the runtime's streaming server opened with the client's subprotocol offer, then its
        WebSocket messages relayed to and from the tunnel until either side ends."""
        async def send(frame: Frame) -> None:
            await tunnel.send(frame.encode())

        try:
            try:
                offered, runtime = await self._open_exec(payload)
            except _Answer as answer:
                log.info("exec refused", connect_id=connect_id, code=answer.code, reason=answer.message)
                await send(status_frame(connect_id, answer.code, answer.message))
            else:
                client: Pipe = TunnelPipe(connect_id, inbox, send)
                protocol = runtime.subprotocol or ""
                if protocol == V4 and V5 in offered and V4 not in offered:
                    client, protocol = WithoutCloseSignals(client), V5
                await send(status_frame(connect_id, 200, protocol=protocol))
                await relay(client, WebsocketsPipe(runtime))
            await send(Frame(connect_id, CLOSE_CONNECT))
        except ConnectionClosed:
            pass

    async def _open_exec(self, payload: bytes) -> tuple[list[str], ClientConnection]:
        """The client's subprotocol offer, and the runtime's exec WebSocket for the request."""
        try:
            request = json.loads(payload)
            target, protocols = str(request["target"]), [str(p) for p in request.get("protocols") or ()]
        except (ValueError, TypeError, KeyError) as exc:
            raise _Answer(400, f"bad exec request: {exc}") from None
        url = urlsplit(target)
        parts = [unquote(part) for part in url.path.split("/")]
        if len(parts) != 5 or parts[1] != "exec" or not all(parts[2:]):
            raise _Answer(404, f"not found: {url.path}")
        namespace, pod, container = parts[2:]
        query = parse_qs(url.query, keep_blank_values=True)
        command = query.get("command", [])
        if not command:
            raise _Answer(400, "you must specify at least one command for the container")
        flags = {key: _flag(query, key) for key in ("input", "output", "error", "tty")}
        found = await self._containers(namespace, pod, container)
        running = [c for c in found if c.state == ContainerState.CONTAINER_RUNNING]
        if not running:
            raise _Answer(404 if not found else 400, f'container not found ("{container}")' if not found
                          else f'container "{container}" in pod "{pod}" is not running')
        assert self.cri is not None  # _containers answered 503 otherwise
        try:
            stream_url = await self.cri.exec(running[0].id, command, tty=flags["tty"], stdin=flags["input"],
                                             stdout=flags["output"], stderr=flags["error"])
        except CRIError as exc:
            raise _Answer(500, f"container runtime: {exc}") from None
        runtime_offer = list(dict.fromkeys(V4 if p == V5 else p for p in protocols))  # containerd 1.6: v4 at most
        try:
            return protocols, await connect(_websocket_url(stream_url),
                                            subprotocols=[Subprotocol(p) for p in runtime_offer], max_size=MAX_MESSAGE,
                                            compression=None, open_timeout=EXEC_OPEN_TIMEOUT, ping_interval=None,
                                            close_timeout=5)
        except InvalidStatus as exc:
            body = exc.response.body.decode(errors="replace") if exc.response.body else ""
            raise _Answer(exc.response.status_code, body or str(exc)) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise _Answer(500, f"runtime streaming server at {stream_url}: {type(exc).__name__}: {exc}") from None

    async def _containers(self, namespace: str, pod: str, container: str) -> list[Container]:
        """The pod's containers of that name, newest attempt first: kubelet's labels, and edged's node label,
        so that another edgecore's pod of the same name on a shared runtime is never this one's."""
        if self.cri is None:
            raise _Answer(503, "edged runs no container runtime on this node")
        labels = {LABEL_POD_NAMESPACE: namespace, LABEL_POD_NAME: pod, LABEL_CONTAINER_NAME: container,
                  LABEL_NODE_NAME: self.node}
        try:
            found = await self.cri.list_containers(ContainerFilter(label_selector=labels))
        except CRIError as exc:
            raise _Answer(500, f"container runtime: {exc}") from None
        return sorted(found, key=_attempt, reverse=True)

    async def _logs(self, websocket: ClientConnection, connect_id: int, target: str) -> None:
        """One log request; cancelled when the cloud's client left (REMOVE_CONNECT: nothing more is sent)."""
        async def send(frame: Frame) -> None:
            await websocket.send(frame.encode())

        try:
            try:
                path, options, running = await self._locate(target)
            except _Answer as answer:
                await send(status_frame(connect_id, answer.code, answer.message))
            else:
                await send(status_frame(connect_id, 200))

                async def write(data: bytes) -> None:
                    for start in range(0, len(data), MAX_FRAME // 2):
                        await send(Frame(connect_id, DATA, data[start:start + MAX_FRAME // 2]))

                try:
                    await read_log(path, options, write, running)
                except OSError as exc:
                    log.warning("container log read failed", target=target, err=exc)
            await send(Frame(connect_id, CLOSE_CONNECT))
        except ConnectionClosed:
            pass

    async def _locate(self, target: str) -> tuple[Path, LogOptions, _RunningCheck]:
        """The log file of the container `target` names, and how to ask whether it still runs."""
        url = urlsplit(target)
        parts = [unquote(part) for part in url.path.split("/")]
        if len(parts) != 5 or parts[1] != "containerLogs" or not all(parts[2:]):
            raise _Answer(404, f"not found: {url.path}")
        namespace, pod, container = parts[2:]
        try:
            options = LogOptions.parse(dict(parse_qsl(url.query, keep_blank_values=True)))
        except LogOptionsError as exc:
            raise _Answer(400, str(exc)) from None
        found = await self._containers(namespace, pod, container)
        index = 1 if options.previous else 0
        if len(found) <= index:
            what = "previous terminated container" if index else "container"
            raise _Answer(404 if not index else 400,
                          f'{what} "{container}" in pod "{pod}" not found')
        chosen = found[index]
        assert self.cri is not None  # _containers answered 503 otherwise
        try:
            status = await self.cri.container_status(chosen.id)
        except CRIError as exc:
            raise _Answer(500, f"container runtime: {exc}") from None
        if not status.log_path:
            raise _Answer(500, f'container "{container}" in pod "{pod}" has no log file')
        return Path(status.log_path), options, _RunningCheck(self.cri, chosen.id)


class _RunningCheck:
    def __init__(self, cri: CRIClient, container_id: str) -> None:
        self.cri, self.container_id = cri, container_id

    async def __call__(self) -> bool:
        try:
            status = await self.cri.container_status(self.container_id)
        except CRIError as exc:
            return not exc.not_found
        return status.state in (ContainerState.CONTAINER_RUNNING, ContainerState.CONTAINER_CREATED)


def _forget(requests: dict[int, asyncio.Task[None]], connect_id: int, task: asyncio.Task[None]) -> None:
    if requests.get(connect_id) is task:
        del requests[connect_id]


def _forget_inbox(inboxes: dict[int, asyncio.Queue[Frame]], connect_id: int, _: asyncio.Task[None]) -> None:
    inboxes.pop(connect_id, None)


def _flag(query: dict[str, list[str]], key: str) -> bool:
    """kubelet's reading of `input=1` & co. (Go's FormValue: the first value, exactly `1`)."""
    return (query.get(key) or [""])[0] == "1"


def _websocket_url(stream_url: str) -> str:
    """The runtime's `http://127.0.0.1:<port>/exec/<token>` as a ws:// URL."""
    url = urlsplit(stream_url)
    return urlunsplit(("wss" if url.scheme == "https" else "ws", url.netloc, url.path, url.query, ""))


def _attempt(container: Container) -> tuple[int, int]:
    return (container.metadata.attempt if container.metadata else 0, container.created_at)
