"""One paho-mqtt client driven by the asyncio event loop: no network thread of its own.

paho runs in "external loop" mode: the loop reads the socket when it is readable (`add_reader` ->
`loop_read`), a publish is written at once on the non-blocking socket (and through `add_writer` only when the
kernel buffer is full), and `loop_misc` runs every second for the keepalive. Messages reach `deliver` on the
loop itself, in order, with no thread hand-off (each hop between threads costs a GIL switch under load).
Only the blocking part of a connect (TCP connect and TLS handshake, bounded by paho's connect timeout) runs in
a worker thread. Each connection gets TCP_NODELAY (paho does not set it): a result, a document and a delta
written back to back would otherwise wait for the broker's delayed ACK.

`run` (a task owned by the module) connects and reconnects with back-off (1 s doubling to 30 s, jittered,
reset once a connection lasted 30 s) and re-subscribes on every connect (clean session). Publishes while
disconnected are queued by paho up to `mqttSessionQueueSize` (QoS > 0) and refused beyond; while the socket
stays backlogged past `wait_drained`'s timeout, publishes are refused, so the backlog stays bounded.
The password is given to paho only; nothing here logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.config.edgecore import EventBus as EventBusConfig
from common.log import get_logger
from common.reliable import ReconnectBackoff, ReconnectPolicy

log = get_logger("eventbus")

KEEPALIVE: Final = 30
CONNECT_TIMEOUT: Final = 5.0  # paho's bound on the TCP connect and on the TLS handshake
STOP_TIMEOUT: Final = 3.0
MISC_INTERVAL: Final = 1.0
RECONNECT_POLICY: Final = ReconnectPolicy(base=1.0, cap=30.0, stable_after=30.0)
_OK: Final = mqtt.MQTT_ERR_SUCCESS

Deliver = Callable[[str, bytes], None]


def _equal_jitter() -> float:
    return 0.5 + random.random() / 2  # spreads reconnects; not a secret


class MqttLink:
    """A paho client for one role (`sub-<broker>` or `pub-<broker>`); `deliver` (called on the loop) gets messages.

    Create it on the event loop; run `run()` as a task; use `publish`/`subscribe`/`unsubscribe` from the loop."""

    def __init__(self, role: str, host: str, port: int, use_tls: bool, config: EventBusConfig, client_id: str,
                 deliver: Deliver | None = None, subscriptions: Iterable[str] = (),
                 rand: Callable[[], float] = _equal_jitter) -> None:
        self.role = role
        self.host = host
        self.port = port
        self.client_id = client_id
        self.qos = int(config.mqtt_qos)
        self.subscriptions: set[str] = set(subscriptions)
        self.connected = asyncio.Event()
        self.connects = 0
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._rand = rand
        self._sock: Any = None  # the socket registered with the loop
        self._lost = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._stalled = False
        self._connecting = False
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.connect_timeout = CONNECT_TIMEOUT
        client.max_queued_messages_set(max(int(config.mqtt_session_queue_size), 0))
        if config.mqtt_username:
            client.username_pw_set(config.mqtt_username, config.mqtt_password or None)
        tls = config.event_bus_tls
        if tls.enable or use_tls:
            files = (tls.tls_mqtt_ca_file, tls.tls_mqtt_cert_file, tls.tls_mqtt_private_key_file) if tls.enable \
                else ("", "", "")
            ca, cert, key = (f if f and Path(f).is_file() else None for f in files)
            client.tls_set(ca_certs=ca, certfile=cert if key else None, keyfile=key if cert else None,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_close = self._on_socket_close
        client.connect_async(host, port, keepalive=KEEPALIVE)  # only stores the address
        self._client = client

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def backlogged(self) -> bool:
        """Packets are waiting for the socket to become writable."""
        return self._client.want_write()

    # -- lifetime ---------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve, reconnect with back-off; until cancelled (then disconnects)."""
        backoff = ReconnectBackoff(RECONNECT_POLICY)
        log.info("mqtt client starting", role=self.role, server=self.server, client_id=self.client_id)
        connecting: asyncio.Future[Any] | None = None
        failures = 0
        try:
            while True:
                self._connecting = True
                connecting = asyncio.ensure_future(asyncio.to_thread(self._client.reconnect))
                try:
                    await connecting
                except (OSError, ssl.SSLError, ValueError) as exc:
                    failures += 1
                    delay = backoff.next_delay(time.monotonic(), self._rand)
                    fields = {"role": self.role, "server": self.server, "err": str(exc)[:200],
                              "retry_in_s": round(delay, 2), "failures": failures}
                    if failures == 1:
                        log.warning("mqtt connect failed, retrying", **fields)
                    else:
                        log.v(2).info("mqtt connect failed, retrying", **fields)
                    await asyncio.sleep(delay)
                    continue
                finally:
                    self._connecting = False
                connecting, failures = None, 0
                backoff.connected(time.monotonic())
                self._attach()
                await self._serve()
                delay = backoff.next_delay(time.monotonic(), self._rand)
                await asyncio.sleep(delay)
        finally:
            if connecting is not None and not connecting.done():  # a worker thread still connecting: let it end
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(connecting), STOP_TIMEOUT)
            self._close()

    async def _serve(self) -> None:
        """Keepalive until the connection is lost."""
        self._lost.clear()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), MISC_INTERVAL)
            if self._lost.is_set() or self._client.loop_misc() != _OK:
                return
            self._flush()

    def _attach(self) -> None:
        sock = self._client.socket()
        if sock is None:
            return
        self._sock = sock
        if isinstance(sock, socket.socket):  # ssl.SSLSocket too; paho's WebSocket wrapper is left as it is
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock, self._on_readable)
        self._flush()

    def _close(self) -> None:
        client = self._client
        with contextlib.suppress(Exception):
            if self.connected.is_set():
                client.disconnect()  # DISCONNECT is written at once; paho then closes the socket
        sock = client.socket()
        if sock is not None:
            self._detach()
            with contextlib.suppress(OSError):
                sock.close()
        self._detach()
        self.connected.clear()

    def _detach(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
        self._drained.set()

    # -- I/O callbacks (on the loop) --------------------------------------------------------------------------
    def _on_readable(self) -> None:
        client = self._client
        rc = client.loop_read()
        sock = client.socket()
        while rc == _OK and isinstance(sock, ssl.SSLSocket) and sock.pending():
            rc = client.loop_read()  # TLS records already decrypted: the fd will not signal them
        self._flush()

    def _on_writable(self) -> None:
        self._client.loop_write()
        self._flush()

    def _flush(self) -> None:
        """Write what paho queued (e.g. inside a callback); wait for writability only if the kernel is full."""
        client, sock = self._client, self._sock
        if sock is None:
            return
        if client.want_write():
            client.loop_write()
        if client.want_write() and self._sock is not None:
            self._drained.clear()
            self._loop.add_writer(sock, self._on_writable)
        elif self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)
            self._drained.set()
            self._stalled = False

    def _on_socket_close(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            self._socket_closed(sock)
        else:  # paho closing an old socket inside reconnect(), in the connect thread
            self._loop.call_soon_threadsafe(self._socket_closed, sock)

    def _socket_closed(self, sock: Any) -> None:
        if sock is self._sock:
            self._detach()
        self._lost.set()

    # -- paho callbacks (on the loop: they run inside loop_read / loop_misc) ----------------------------------
    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt connect refused", role=self.role, server=self.server, reason=str(reason))
            return
        if self.subscriptions:
            client.subscribe([(topic, self.qos) for topic in sorted(self.subscriptions)])
        self.connects += 1
        log.info("mqtt connected", role=self.role, server=self.server, subscriptions=len(self.subscriptions))
        self.connected.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if self.connected.is_set():
            log.warning("mqtt disconnected, reconnecting", role=self.role, server=self.server, reason=str(reason))
        self.connected.clear()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._deliver is not None:
            self._deliver(message.topic, bytes(message.payload))

    # -- use --------------------------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        if self._connecting or self._stalled:
            log.v(2).info("mqtt publish refused", role=self.role, topic=topic,
                          why="connecting" if self._connecting else "socket backlogged")
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != _OK:
            log.v(2).info("mqtt publish refused", role=self.role, topic=topic, rc=mqtt.error_string(info.rc))
            return False
        if self._client.want_write():
            self._flush()
        return True

    async def wait_drained(self, timeout: float) -> bool:
        """Until nothing waits for the socket (True), or `timeout`: then publishes are refused until it drains."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            if not self._stalled:
                log.warning("mqtt socket backlogged, refusing publishes until it drains", role=self.role,
                            server=self.server, waited_s=timeout)
            self._stalled = True
            return False
        return True

    def subscribe(self, topic: str) -> None:
        self.subscriptions.add(topic)
        if self.connected.is_set():
            self._client.subscribe(topic, qos=self.qos)
            self._flush()

    def unsubscribe(self, topic: str) -> None:
        self.subscriptions.discard(topic)
        if self.connected.is_set():
            self._client.unsubscribe(topic)
            self._flush()
