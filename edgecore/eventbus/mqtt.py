"""One paho-mqtt client as an asyncio citizen: started, fed and stopped from the event loop.

paho runs its network loop in its own thread (`loop_start`) and reconnects there with back-off
(`reconnect_delay_set`, 1 s doubling to 30 s), re-subscribing on every connect (clean session). Messages
arriving in that thread are handed to the event loop with `call_soon_threadsafe` and go into a bounded
queue owned by the caller: when it is full the message is dropped and counted (logged once per 100).
Publishes while disconnected are queued by paho up to `mqttSessionQueueSize` (QoS > 0) and refused beyond.
The password is given to paho only; nothing here logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.config.edgecore import EventBus as EventBusConfig
from common.log import get_logger

log = get_logger("eventbus")

KEEPALIVE: Final = 30
RECONNECT_MIN: Final = 1
RECONNECT_MAX: Final = 30
STOP_TIMEOUT: Final = 3.0

Deliver = Callable[[str, bytes], None]


class MqttLink:
    """A paho client for one role (`sub` or `pub`); `deliver` (called on the event loop) gets messages."""

    def __init__(self, role: str, host: str, port: int, use_tls: bool, config: EventBusConfig, client_id: str,
                 deliver: Deliver | None = None, subscriptions: Iterable[str] = ()) -> None:
        self.role = role
        self.host = host
        self.port = port
        self.client_id = client_id
        self.qos = int(config.mqtt_qos)
        self.subscriptions: set[str] = set(subscriptions)
        self.connected = asyncio.Event()
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._started = False
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
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
        self._client = client

    def start(self) -> None:
        log.info("mqtt client starting", role=self.role, server=f"{self.host}:{self.port}", client_id=self.client_id)
        self._client.connect_async(self.host, self.port, keepalive=KEEPALIVE)
        self._client.loop_start()
        self._started = True

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(Exception):
            self._client.disconnect()
        try:
            await asyncio.wait_for(asyncio.to_thread(self._client.loop_stop), timeout)
        except TimeoutError:
            log.warning("mqtt network thread did not stop in time", role=self.role, timeout_s=timeout)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.v(2).info("mqtt publish refused", role=self.role, topic=topic, rc=mqtt.error_string(info.rc))
            return False
        return True

    def subscribe(self, topic: str) -> None:
        self.subscriptions.add(topic)
        if self.connected.is_set():
            self._client.subscribe(topic, qos=self.qos)

    def unsubscribe(self, topic: str) -> None:
        self.subscriptions.discard(topic)
        if self.connected.is_set():
            self._client.unsubscribe(topic)

    # -- paho thread ------------------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt connect refused", role=self.role, server=f"{self.host}:{self.port}", reason=str(reason))
            return
        if self.subscriptions:
            client.subscribe([(topic, self.qos) for topic in sorted(self.subscriptions)])
        log.info("mqtt connected", role=self.role, server=f"{self.host}:{self.port}",
                 subscriptions=len(self.subscriptions))
        self._call(self.connected.set)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        log.warning("mqtt disconnected, reconnecting", role=self.role, server=f"{self.host}:{self.port}",
                    reason=str(reason))
        self._call(self.connected.clear)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        deliver = self._deliver
        if deliver is not None:
            topic, payload = message.topic, bytes(message.payload)
            self._call(lambda: deliver(topic, payload))

    def _call(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: edgecore is stopping
            self._loop.call_soon_threadsafe(callback)
