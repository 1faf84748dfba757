"""Edgecore to mappers: one link per registered mapper, calling its DeviceMapperService over its unix socket.

A link owns one gRPC channel and one task. Its work list is a `MapperSync` (bounded, coalescing; sync.py):
the task takes the next call, builds the request from the Catalog's current object, and makes it with a
deadline. A transport failure (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) is retried after a
back-off (common.reliable ReconnectPolicy: full jitter, doubling to a cap); after `max_attempts` failures in a
row the link gives up on everything pending and waits for new changes, because a mapper that comes back
registers again and then receives the full list. Any other status means the mapper refused that one call:
logged, and that key is left until it changes again.

`Pusher` owns the links: `attach` on a MapperRegister (or for the mappers stored at start), `detach` when a
mapper is displaced, `close` cancels every task and closes every channel. Nothing here touches DeviceTwin's
tables; this module never accepts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import grpc

from common.log import get_logger
from common.reliable.policy import ReconnectBackoff, ReconnectPolicy
from edgecore.dmi import sync as s
from edgecore.dmi.catalog import Catalog, Key
from edgecore.dmi.convert import ConversionError, device_message, model_message
from edgecore.dmi.generate import DMIProto
from edgecore.dmi.registry import MapperRecord

log = get_logger("dmi")

RPC_TIMEOUT: Final = 10.0
MAX_ATTEMPTS: Final = 6
IDLE_WAIT: Final = 30.0  # an idle link wakes this often even without news (cheap; guards against a lost wake)
STOP_TIMEOUT: Final = 5.0
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
PUSH_POLICY: Final = ReconnectPolicy(base=0.5, cap=10.0, stable_after=0.0)
_RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                               grpc.StatusCode.RESOURCE_EXHAUSTED})


def build_request(proto: DMIProto, push: s.Push, obj: dict[str, Any] | None) -> Any:
    """The request of `push`; `obj` is the Catalog's object (None for removals). Raises ConversionError."""
    namespace, name = push.key[1].split("/", 1)
    request = proto.methods[push.rpc].request
    if push.rpc == s.REMOVE_DEVICE:
        return request(deviceName=name, deviceNamespace=namespace)
    if push.rpc == s.REMOVE_MODEL:
        return request(modelName=name, modelNamespace=namespace)
    if obj is None:
        raise ConversionError(f"{push.key[0]} {push.key[1]} is gone")
    if push.rpc in (s.CREATE_MODEL, s.UPDATE_MODEL):
        return request(model=model_message(proto, obj))
    return request(device=device_message(proto, obj))


def channel_target(address: str) -> str:
    return f"unix://{address}"


class MapperLink:
    """The calls to one mapper; `run` is its task."""

    def __init__(self, record: MapperRecord, proto: DMIProto, catalog: Catalog, *, rpc_timeout: float = RPC_TIMEOUT,
                 max_attempts: int = MAX_ATTEMPTS, policy: ReconnectPolicy = PUSH_POLICY,
                 rand: Callable[[], float] = random.random, clock: Callable[[], float] = time.monotonic) -> None:
        self.record = record
        self.proto = proto
        self.catalog = catalog
        self.rpc_timeout = rpc_timeout
        self.max_attempts = max_attempts
        self.sync = s.MapperSync()
        self.backoff = ReconnectBackoff(policy)
        self.rand = rand
        self.clock = clock
        self.failures = 0  # transport failures in a row
        self.delivered = 0
        self._wake = asyncio.Event()

    def mark(self, key: Key) -> None:
        self.sync.mark(key)
        self._wake.set()

    def reset(self, sent: dict[Key, str]) -> None:
        self.sync.reset(sent)
        self.failures = 0
        self.backoff.reset()
        self._wake.set()

    async def run(self) -> None:
        channel = grpc.aio.insecure_channel(channel_target(self.record.address), options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        try:
            while True:
                push = self.sync.next(self.catalog.view(self.record.protocol))
                if push is None:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_WAIT):
                            await self._wake.wait()
                    continue
                await self._deliver(channel, push)
        finally:
            await channel.close()

    async def _deliver(self, channel: grpc.aio.Channel, push: s.Push) -> None:
        entry = self.catalog.get(push.key)
        try:
            request = build_request(self.proto, push, entry.obj if entry else None)
        except ConversionError as exc:
            log.warning("object not sent to the mapper", mapper=self.record.name, rpc=push.rpc,
                        object=push.key[1], err=exc)
            self.sync.drop(push)
            return
        method = self.proto.methods[push.rpc]
        call = channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                   response_deserializer=method.response.FromString)
        try:
            await call(request, timeout=self.rpc_timeout)
        except grpc.aio.AioRpcError as exc:
            await self._failed(push, exc.code(), exc.details() or "")
            return
        self.sync.done(push)
        self.failures = 0
        self.backoff.reset()
        self.delivered += 1
        log.v(2).info("mapper told", mapper=self.record.name, rpc=push.rpc, object=push.key[1])

    async def _failed(self, push: s.Push, code: grpc.StatusCode, details: str) -> None:
        if code not in _RETRYABLE:
            log.warning("mapper refused a call", mapper=self.record.name, rpc=push.rpc, object=push.key[1],
                        code=code.name, details=details)
            self.sync.drop(push)
            return
        self.failures += 1
        if self.failures >= self.max_attempts:
            dropped = self.sync.drop_all()
            log.error("mapper unreachable, pending changes dropped until it registers again or more changes come",
                      mapper=self.record.name, address=self.record.address, dropped=dropped, code=code.name)
            self.failures = 0
            self.backoff.reset()
            return
        delay = self.backoff.next_delay(self.clock(), self.rand)
        log.v(2).info("mapper call failed, retrying", mapper=self.record.name, rpc=push.rpc, object=push.key[1],
                      code=code.name, attempt=self.failures, delay_s=round(delay, 2))
        await asyncio.sleep(delay)


class Pusher:
    """The links of every registered mapper; the owner of their tasks."""

    def __init__(self, proto: DMIProto, catalog: Catalog, **link_options: Any) -> None:
        self.proto = proto
        self.catalog = catalog
        self.link_options = link_options
        self.links: dict[str, MapperLink] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def attach(self, record: MapperRecord, sent: dict[Key, str]) -> MapperLink:
        """Start (or restart, if its address changed) the link of `record`; `sent` is what the mapper holds."""
        link = self.links.get(record.name)
        if link is not None and link.record.address == record.address:
            link.record = record
        else:
            self.detach(record.name)
            link = self.links[record.name] = MapperLink(record, self.proto, self.catalog, **self.link_options)
            task = asyncio.create_task(link.run(), name=f"dmi:mapper:{record.name}")
            task.add_done_callback(self._ended)
            self._tasks[record.name] = task
        link.reset(sent)
        return link

    def detach(self, name: str) -> None:
        self.links.pop(name, None)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def mark(self, keys: Iterable[Key]) -> None:
        """Objects changed: every link looks at them (each decides whether they concern its mapper)."""
        keys = list(keys)
        for link in self.links.values():
            for key in keys:
                link.mark(key)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self.links.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        name = task.get_name().removeprefix("dmi:mapper:")
        log.error("mapper link stopped", mapper=name, err=f"{type(exc).__name__}: {exc}" if exc else "returned")
        if self._tasks.get(name) is task:
            self._tasks.pop(name, None)
            self.links.pop(name, None)
