"""EventBus's MQTT topics and where a message on them goes (ref/devices-groups.md 3). Pure.

Edgecore subscribes to exactly upstream's (v1.17+) list. Topics under `$hw/events/device/` and
`$hw/events/node/` go to DeviceTwin (group `twin`, resource = base64url(topic), op `response`); the rest
(`$hw/events/upload/#`, `SYS/dis/upload_records`, `+/user/#`, and topics the cloud subscribed) go to the
cloud through EdgeHub (group `user`, resource = topic, op `upload`).
"""

from __future__ import annotations

import base64
from enum import Enum
from typing import Final
from urllib.parse import urlsplit

SUBSCRIPTIONS: Final = (
    "$hw/events/upload/#",
    "$hw/events/device/+/+/state/update",
    "$hw/events/device/+/+/twin/+",
    "$hw/events/node/+/membership/get",
    "SYS/dis/upload_records",
    "+/user/#",
)
TWIN_PREFIXES: Final = ("$hw/events/device/", "$hw/events/node/")
MAX_PAYLOAD: Final = 1 << 20  # bytes; bigger MQTT messages are not handed on (each would sit in a bounded queue)
ANSWERED_SUFFIXES: Final = ("/twin/update", "/twin/get", "/state/update", "/membership/get")


class Route(Enum):
    TWIN = "twin"
    CLOUD = "cloud"


def route_of(topic: str) -> Route:
    return Route.TWIN if topic.startswith(TWIN_PREFIXES) else Route.CLOUD


def result_topic(topic: str) -> str | None:
    """Where DeviceTwin answers a request on `topic` (`<topic>/result`), None for topics it does not answer."""
    if route_of(topic) is Route.TWIN and topic.endswith(ANSWERED_SUFFIXES):
        return f"{topic}/result"
    return None


def encode_topic(topic: str) -> str:
    return base64.urlsafe_b64encode(topic.encode()).decode()


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT wildcard match (`+` one level, `#` the rest), for tests and cloud subscriptions."""
    pat, top = pattern.split("/"), topic.split("/")
    for i, part in enumerate(pat):
        if part == "#":
            return True
        if i >= len(top) or (part != "+" and part != top[i]):
            return False
    return len(pat) == len(top)


def broker_address(url: str) -> tuple[str, int, bool]:
    """`tcp://host:port` (also `mqtt://`, `ssl://`, `tls://`, `mqtts://`) as host, port and whether TLS."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    scheme = parts.scheme.lower()
    if scheme not in ("tcp", "mqtt", "ssl", "tls", "mqtts", "tcps"):
        raise ValueError(f"MQTT server {url!r}: unsupported scheme {scheme!r}")
    tls = scheme in ("ssl", "tls", "mqtts", "tcps")
    if not parts.hostname:
        raise ValueError(f"MQTT server {url!r}: no host")
    return parts.hostname, parts.port or (8883 if tls else 1883), tls
