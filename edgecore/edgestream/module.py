"""EdgeStream: dials CloudStream's tunnel with the edge certificate and serves its log requests.

The tunnel (common.streamframes) is dialed at `edgeStream.server` with the files EdgeHub uses
(`edgeStream.tlsTunnel*`, by default the same paths); a lost or refused tunnel is dialed again after
1, 2, 4 ... 30 s. Each LOGS_CONNECT is served in its own task: the container is found through CRI by
kubelet's labels (pod namespace and name, container name; the newest attempt, or with `previous` the
one before it), and its CRI log file is read by `crilog.read_log`. REMOVE_CONNECT cancels that task.
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from common.config.edgecore import EdgeStream as EdgeStreamConfig
from common.log import get_logger
from common.modules import ModuleContext
from common.streamframes import (
    CLOSE_CONNECT,
    DATA,
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
from edgecore.cri import CRIClient
from edgecore.cri.client import CRIError
from edgecore.cri.types import Container, ContainerFilter, ContainerState
from edgecore.edgestream.crilog import LogOptions, LogOptionsError, read_log

log = get_logger("edgestream")

BACKOFF_MAX: Final = 30.0
MAX_FRAME: Final = 1024 * 1024
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
        delay = 1.0
        while True:
            try:
                websocket = await self._dial()
            except (OSError, ssl.SSLError, InvalidHandshake, TimeoutError) as exc:
                log.warning("cannot open the stream tunnel; retrying", server=self.config.server,
                            err=f"{type(exc).__name__}: {exc}", retry_in=round(delay, 1))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            delay = 1.0
            log.info("stream tunnel connected", server=self.config.server, node=self.node)
            try:
                await self.serve(websocket)
            finally:
                await websocket.close()
            log.warning("stream tunnel lost; reconnecting", server=self.config.server)
            await asyncio.sleep(random.uniform(0.5, 1.5))

    async def _dial(self) -> ClientConnection:
        files = (Path(self.config.tls_tunnel_ca_file), Path(self.config.tls_tunnel_cert_file),
                 Path(self.config.tls_tunnel_private_key_file))
        tls = await asyncio.to_thread(client_tls, *files)
        headers = Headers({HEADER_NODE: self.node, HEADER_IP: self.node_ip})
        return await connect(f"wss://{self.config.server}{TUNNEL_PATH}", ssl=tls, additional_headers=headers,
                             max_size=MAX_FRAME, compression=None, open_timeout=self.config.handshake_timeout,
                             ping_interval=max(1, self.config.read_deadline), close_timeout=5)

    async def serve(self, websocket: ClientConnection) -> None:
        """Answer the tunnel's requests until it closes."""
        requests: dict[int, asyncio.Task[None]] = {}
        try:
            async for raw in websocket:
                try:
                    frame = Frame.decode(raw if isinstance(raw, bytes) else raw.encode())
                except FrameError as exc:
                    log.warning("bad frame from the tunnel dropped", err=exc)
                    continue
                if frame.kind == LOGS_CONNECT:
                    task = asyncio.create_task(self._logs(websocket, frame.connect_id, frame.data.decode()))
                    requests[frame.connect_id] = task
                    task.add_done_callback(functools.partial(_forget, requests, frame.connect_id))
                elif frame.kind == REMOVE_CONNECT:
                    if (running := requests.pop(frame.connect_id, None)) is not None:
                        running.cancel()
                else:  # exec, attach, metrics: not served yet
                    await websocket.send(status_frame(frame.connect_id, 501, "not implemented by edgestream").encode())
                    await websocket.send(Frame(frame.connect_id, CLOSE_CONNECT).encode())
        except ConnectionClosed:
            pass
        finally:
            for task in list(requests.values()):
                task.cancel()

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
        if self.cri is None:
            raise _Answer(503, "edged runs no container runtime on this node")
        labels = {LABEL_POD_NAMESPACE: namespace, LABEL_POD_NAME: pod, LABEL_CONTAINER_NAME: container}
        try:
            found = await self.cri.list_containers(ContainerFilter(label_selector=labels))
        except CRIError as exc:
            raise _Answer(500, f"container runtime: {exc}") from None
        found.sort(key=_attempt, reverse=True)
        index = 1 if options.previous else 0
        if len(found) <= index:
            what = "previous terminated container" if index else "container"
            raise _Answer(404 if not index else 400,
                          f'{what} "{container}" in pod "{pod}" not found')
        chosen = found[index]
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


def _attempt(container: Container) -> tuple[int, int]:
    return (container.metadata.attempt if container.metadata else 0, container.created_at)
