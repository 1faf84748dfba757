"""Edged's event recorder: core/v1 Events about pods, as kubelet records them, sent up best-effort.

Owns three things:

- building the Event: involvedObject = the Pod (uid, resourceVersion, and fieldPath
  `spec.containers{<name>}` / `spec.initContainers{<name>}` for a container's events), reason,
  message, type Normal/Warning, source {component kubelet, host <node>}, count, first/lastTimestamp,
  name `<pod>.<hex of the nanosecond time>`;
- correlating (`EventCorrelator`, sans-I/O, time passed in), in the order of client-go's correlator:
  a spam filter (a token bucket per object and reason: `SPAM_BURST` events, then one per
  `SPAM_REFILL` seconds; what it refuses is dropped and counted), aggregation (more than
  `SIMILAR_LIMIT` distinct messages for one object, type and reason within `SIMILAR_WINDOW` become one
  event "(combined from similar events): <latest message>"), and deduplication (an event identical to
  one already recorded is that event again: count + 1, lastTimestamp now, same name, sent as an
  `update`; a new one is an `insert`). Both caches are LRUs of `CACHE_SIZE` keys;
- sending (`EventRecorder.run`, the one task that does I/O): events wait in a queue of at most
  `QUEUE_LIMIT` entries keyed by event name (a newer count of a waiting event replaces it in place), go
  out only while the cloud is connected, at most `qps` per second with `burst` (eventRecordQPS /
  eventBurst), each through the `deliver` callable; one that fails is tried again, `MAX_TRIES` times
  in all.

It never blocks the caller: `record`/`pod` return at once, and an event that finds the queue full is
dropped and counted (logged at -v 2). Events are best-effort, as kubelet's are; nothing waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from common.constants import Op
from common.log import get_logger
from edgecore.edged.pods.spec import PodSpec
from edgecore.edged.pods.status import rfc3339

log = get_logger("edged")

NORMAL: Final = "Normal"
WARNING: Final = "Warning"
EventType = Literal["Normal", "Warning"]
COMPONENT: Final = "kubelet"

CACHE_SIZE: Final = 4096
SPAM_BURST: Final = 25
SPAM_REFILL: Final = 300.0  # seconds per token once the burst is spent (client-go: 1 per 5 minutes)
SIMILAR_LIMIT: Final = 10
SIMILAR_WINDOW: Final = 600.0
COMBINED_PREFIX: Final = "(combined from similar events): "
MESSAGE_LIMIT: Final = 1024  # characters: a runtime's error text can be long; the link carries it

QUEUE_LIMIT: Final = 1000
MAX_TRIES: Final = 5
RETRY_PAUSE: Final = 1.0
IDLE_WAIT: Final = 30.0  # the sender re-checks its queue and the connection at least this often

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An event's involvedObject."""

    kind: str
    namespace: str
    name: str
    uid: str
    api_version: str = "v1"
    resource_version: str = ""
    field_path: str = ""

    def as_json(self) -> JSON:
        found: JSON = {"kind": self.kind, "namespace": self.namespace, "name": self.name, "uid": self.uid,
                       "apiVersion": self.api_version}
        if self.resource_version:
            found["resourceVersion"] = self.resource_version
        if self.field_path:
            found["fieldPath"] = self.field_path
        return found


def pod_ref(spec: PodSpec, container: str = "") -> ObjectRef:
    """The pod, or one of its (init) containers, as kubelet names it in events."""
    field_path = ""
    if container:
        field_path = f"spec.initContainers{{{container}}}" if spec.is_init(container) else \
            f"spec.containers{{{container}}}"
    return ObjectRef(kind="Pod", namespace=spec.namespace, name=spec.name, uid=spec.uid,
                     resource_version=spec.resource_version, field_path=field_path)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to send: `insert` the first time, `update` (the same name, a higher count) after."""

    operation: str
    event: JSON

    @property
    def name(self) -> str:
        return str(self.event["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.event["metadata"]["namespace"])

    @property
    def count(self) -> int:
        return int(self.event["count"])


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; rate 0 means no limit. Time is passed in."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.at = now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = max(self.at, now)

    def delay(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(slots=True)
class _Seen:
    name: str
    count: int
    first: float


@dataclass(slots=True)
class _Similar:
    messages: set[str] = field(default_factory=set)
    since: float = 0.0


def _touch(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


class EventCorrelator:
    """Turns recorded occurrences into the Events to send (sans-I/O: every call is given the time)."""

    def __init__(self, host: str, *, component: str = COMPONENT, cache_size: int = CACHE_SIZE,
                 spam_burst: int = SPAM_BURST, spam_refill: float = SPAM_REFILL,
                 similar_limit: int = SIMILAR_LIMIT, similar_window: float = SIMILAR_WINDOW) -> None:
        self.host = host
        self.component = component
        self.cache_size = cache_size
        self.spam_burst = spam_burst
        self.spam_refill = spam_refill
        self.similar_limit = similar_limit
        self.similar_window = similar_window
        self.spam_dropped = 0
        self._spam: OrderedDict[tuple[str, ...], TokenBucket] = OrderedDict()
        self._similar: OrderedDict[tuple[str, ...], _Similar] = OrderedDict()
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        self._last_ns = 0

    def correlate(self, ref: ObjectRef, event_type: EventType, reason: str, message: str,
                  now: float) -> Outgoing | None:
        """The Event to send for this occurrence, or None when the spam filter refuses it."""
        message = message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT - 3] + "..."
        obj = (ref.kind, ref.namespace, ref.name, ref.uid, ref.api_version)
        if not self._allowed((*obj, reason), now):
            self.spam_dropped += 1
            return None
        message = self._aggregate((*obj, event_type, reason), message, now)
        key = (*obj, ref.field_path, event_type, reason, message)
        seen = self._seen.get(key)
        if seen is None:
            seen = _Seen(self._new_name(ref.name, now), 0, now)
        seen.count += 1
        _touch(self._seen, key, seen, self.cache_size)
        operation = Op.INSERT if seen.count == 1 else Op.UPDATE
        return Outgoing(operation, self._event(ref, event_type, reason, message, seen, now))

    def _allowed(self, key: tuple[str, ...], now: float) -> bool:
        bucket = self._spam.get(key)
        if bucket is None:
            bucket = TokenBucket(1 / self.spam_refill, self.spam_burst, now)
        _touch(self._spam, key, bucket, self.cache_size)
        return bucket.take(now)

    def _aggregate(self, key: tuple[str, ...], message: str, now: float) -> str:
        similar = self._similar.get(key)
        if similar is None or now - similar.since > self.similar_window:
            similar = _Similar(since=now)
        if len(similar.messages) <= self.similar_limit:  # bounded: past the limit only the fact counts
            similar.messages.add(message)
        _touch(self._similar, key, similar, self.cache_size)
        return COMBINED_PREFIX + message if len(similar.messages) > self.similar_limit else message

    def _new_name(self, name: str, now: float) -> str:
        self._last_ns = max(int(now * 1e9), self._last_ns + 1)  # unique even for two events in one ns
        return f"{name}.{self._last_ns:x}"

    def _event(self, ref: ObjectRef, event_type: str, reason: str, message: str, seen: _Seen, now: float) -> JSON:
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": seen.name, "namespace": ref.namespace or "default"},
            "involvedObject": ref.as_json(),
            "reason": reason, "message": message, "type": event_type,
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": rfc3339(seen.first), "lastTimestamp": rfc3339(now), "count": seen.count,
            "reportingComponent": self.component, "reportingInstance": self.host,
        }


# `deliver(outgoing)`: True once the cloud has the event (or refused it for good), False to try again.
Deliver = Callable[[Outgoing], Awaitable[bool]]


@dataclass(slots=True)
class _Waiting:
    outgoing: Outgoing
    tries: int = 0


@dataclass(slots=True)
class EventStats:
    recorded: int = 0
    sent: int = 0
    dropped_full: int = 0  # the queue was full
    dropped_tries: int = 0  # MAX_TRIES failed deliveries


class EventRecorder:
    """Records pod events without blocking and sends them from its own task (`run`)."""

    def __init__(self, host: str, *, qps: float = 50.0, burst: int = 100, queue_limit: int = QUEUE_LIMIT,
                 clock: Callable[[], float] = time.time, correlator: EventCorrelator | None = None,
                 retry_pause: float = RETRY_PAUSE) -> None:
        self.correlator = correlator or EventCorrelator(host)
        self.queue_limit = queue_limit
        self.stats = EventStats()
        self._qps = qps
        self._burst = burst
        self._clock = clock
        self._retry_pause = retry_pause
        self._waiting: OrderedDict[str, _Waiting] = OrderedDict()
        self._wake = asyncio.Event()

    @property
    def waiting(self) -> list[Outgoing]:
        """The events not sent yet, oldest first."""
        return [w.outgoing for w in self._waiting.values()]

    def pod(self, spec: PodSpec, event_type: EventType, reason: str, message: str, container: str = "") -> None:
        self.record(pod_ref(spec, container), event_type, reason, message)

    def record(self, ref: ObjectRef, event_type: EventType, reason: str, message: str) -> None:
        """Take one occurrence; never blocks, never raises for a full queue (the event is dropped)."""
        self.stats.recorded += 1
        outgoing = self.correlator.correlate(ref, event_type, reason, message, self._clock())
        if outgoing is None:
            log.v(2).info("event dropped by the spam filter", pod=f"{ref.namespace}/{ref.name}", reason=reason,
                          dropped=self.correlator.spam_dropped)
            return
        waiting = self._waiting.get(outgoing.name)
        if waiting is not None:
            # Not sent yet: the newer count goes in its place; an unsent insert stays an insert.
            operation = Op.INSERT if waiting.outgoing.operation == Op.INSERT else outgoing.operation
            waiting.outgoing = Outgoing(operation, outgoing.event)
            return
        if len(self._waiting) >= self.queue_limit:
            self.stats.dropped_full += 1
            log.v(2).info("event dropped: queue full", pod=f"{ref.namespace}/{ref.name}", reason=reason,
                          dropped=self.stats.dropped_full)
            return
        self._waiting[outgoing.name] = _Waiting(outgoing)
        self._wake.set()

    async def run(self, deliver: Deliver, ready: asyncio.Event) -> None:
        """Send what waits, while `ready` (the cloud connection) is set, until cancelled."""
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(self._qps, self._burst, loop.time())
        while True:
            if not self._waiting:
                self._wake.clear()
                await _wait(self._wake, IDLE_WAIT)
                continue
            if not ready.is_set():
                await _wait(ready, IDLE_WAIT)
                continue
            delay = bucket.delay(loop.time())
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            bucket.take(loop.time())
            name, waiting = self._waiting.popitem(last=False)
            if await self._deliver(deliver, waiting.outgoing):
                self.stats.sent += 1
                continue
            waiting.tries += 1
            if waiting.tries >= MAX_TRIES:
                self.stats.dropped_tries += 1
                log.v(2).info("event dropped after failed deliveries", event=name, tries=waiting.tries)
            elif name not in self._waiting:  # else a newer count of it waits already
                self._waiting[name] = waiting
            await asyncio.sleep(self._retry_pause)

    @staticmethod
    async def _deliver(deliver: Deliver, outgoing: Outgoing) -> bool:
        try:
            return await deliver(outgoing)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in the sink must not end event reporting for the node
            log.exception("event delivery failed", event=outgoing.name)
            return False


async def _wait(flag: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(flag.wait(), timeout)
