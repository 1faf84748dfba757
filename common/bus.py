"""The module bus: how modules inside one cloudcore or edgecore process talk (upstream beehive).

Owns the registry of modules by name and group, one bounded mailbox per module, and the table of
requests waiting for a response. A module never calls another module: it sends a message.

Overflow policy (every mailbox is bounded, default 1024 messages like beehive's channels):
- `send` / `send_to_group` wait for room up to the bus's `send_timeout`; past it they raise
  `BusFullError` and the message is NOT enqueued: the sender decides (retry, drop with a log line,
  or fail its own request). Nothing is dropped silently.
- `send_nowait` never waits: it raises `BusFullError` at once when the mailbox is full.

Request/response: `request` registers the message id, sends, and waits (bounded) for the message
whose `parent_msg_id` is that id, delivered by the responder through `respond`. A response nobody
waits for any more (timed out) makes `respond` return False.

Close: `close()` fails every pending request and wakes every receiver with `BusClosedError`.
Asyncio only; no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from common.errors import BusClosedError, BusFullError, DuplicateModuleError, UnknownModuleError
from common.message import Message

DEFAULT_MAILBOX_CAPACITY: Final = 1024
DEFAULT_SEND_TIMEOUT: Final = 5.0

_Deliver = Callable[[], Awaitable[None]]


class Mailbox:
    """Bounded FIFO of messages for one module; any number of receiving tasks may share it."""

    __slots__ = ("_closed", "_getters", "_items", "_putters", "capacity", "name")

    def __init__(self, name: str, capacity: int = DEFAULT_MAILBOX_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox {name}: capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._items: deque[Message] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, message: Message) -> None:
        if self._closed:
            raise BusClosedError(f"mailbox {self.name} is closed")
        if len(self._items) >= self.capacity:
            raise BusFullError(f"mailbox {self.name} is full ({self.capacity} messages)")
        self._items.append(message)
        _wake_first(self._getters)

    async def put(self, message: Message, timeout: float) -> None:
        """Enqueue, waiting for room at most `timeout` seconds (then BusFullError)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self._items) >= self.capacity and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BusFullError(
                    f"mailbox {self.name} stayed full ({self.capacity} messages) for {timeout:g}s; "
                    f"message {message.msg_id} not enqueued")
            waiter: asyncio.Future[None] = loop.create_future()
            self._putters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                _discard(self._putters, waiter)
        self.put_nowait(message)

    async def get(self) -> Message:
        """Next message; raises BusClosedError once the mailbox is closed and drained."""
        while not self._items:
            if self._closed:
                raise BusClosedError(f"mailbox {self.name} is closed")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            finally:
                _discard(self._getters, waiter)
        message = self._items.popleft()
        _wake_first(self._putters)
        return message

    def take_ready(self, limit: int) -> list[Message]:
        """Up to `limit` messages already queued, without waiting (to batch work such as one commit)."""
        taken = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
        for _ in taken:
            _wake_first(self._putters)
        return taken

    def close(self) -> None:
        self._closed = True
        for waiter in (*self._getters, *self._putters):
            if not waiter.done():
                waiter.set_result(None)


def _wake_first(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


def _discard(waiters: deque[asyncio.Future[None]], waiter: asyncio.Future[None]) -> None:
    with contextlib.suppress(ValueError):  # already popped by the waker
        waiters.remove(waiter)


class ModuleBus:
    """Registry and router for the modules of one process."""

    def __init__(self, *, capacity: int = DEFAULT_MAILBOX_CAPACITY,
                 send_timeout: float = DEFAULT_SEND_TIMEOUT) -> None:
        self.capacity = capacity
        self.send_timeout = send_timeout
        self._mailboxes: dict[str, Mailbox] = {}
        self._groups: dict[str, list[Mailbox]] = {}
        self._waiting_responses: dict[str, asyncio.Future[Message]] = {}
        self._closed = False

    # registry -----------------------------------------------------------------------------------
    def register(self, name: str, group: str, capacity: int | None = None) -> Mailbox:
        if self._closed:
            raise BusClosedError("bus is closed")
        if name in self._mailboxes:
            raise DuplicateModuleError(f"module {name!r} is already registered")
        mailbox = Mailbox(name, capacity or self.capacity)
        self._mailboxes[name] = mailbox
        if group:
            self._groups.setdefault(group, []).append(mailbox)
        return mailbox

    def unregister(self, name: str) -> None:
        mailbox = self._mailboxes.pop(name, None)
        if mailbox is None:
            return
        mailbox.close()
        for group, members in list(self._groups.items()):
            if mailbox in members:
                members.remove(mailbox)
                if not members:
                    del self._groups[group]

    def modules(self) -> list[str]:
        return sorted(self._mailboxes)

    def mailbox(self, name: str) -> Mailbox:
        try:
            return self._mailboxes[name]
        except KeyError:
            raise UnknownModuleError(f"no module named {name!r} on the bus") from None

    def _group(self, group: str) -> list[Mailbox]:
        members = self._groups.get(group)
        if not members:
            raise UnknownModuleError(f"no module in group {group!r} on the bus")
        return members

    # sending ------------------------------------------------------------------------------------
    async def send(self, module: str, message: Message) -> None:
        """Deliver to one module, waiting for room up to `send_timeout` (then BusFullError)."""
        mailbox = self.mailbox(module)
        if len(mailbox) < mailbox.capacity and not mailbox.closed:
            mailbox.put_nowait(message)  # fast path: no await, no timer
            return
        await mailbox.put(message, self.send_timeout)

    def send_nowait(self, module: str, message: Message) -> None:
        self.mailbox(module).put_nowait(message)

    async def send_to_group(self, group: str, message: Message) -> None:
        """Deliver the same message to every module of `group` (beehive SendToGroup)."""
        for mailbox in tuple(self._group(group)):
            if len(mailbox) < mailbox.capacity and not mailbox.closed:
                mailbox.put_nowait(message)
            else:
                await mailbox.put(message, self.send_timeout)

    async def receive(self, module: str) -> Message:
        return await self.mailbox(module).get()

    # request / response -------------------------------------------------------------------------
    async def request(self, module: str, message: Message, timeout: float) -> Message:
        """Send and wait for the response whose parent_msg_id is this message's id."""
        return await self._request(message, timeout, lambda: self.send(module, message))

    async def request_group(self, group: str, message: Message, timeout: float) -> Message:
        """Send to a group and wait for the first response (beehive SendSync to a group's member)."""
        return await self._request(message, timeout, lambda: self.send_to_group(group, message))

    async def _request(self, message: Message, timeout: float, deliver: _Deliver) -> Message:
        if self._closed:
            raise BusClosedError("bus is closed")
        msg_id = message.msg_id
        if msg_id in self._waiting_responses:
            raise ValueError(f"a request with msg_id {msg_id} is already waiting for its response")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting_responses[msg_id] = future
        try:
            async with asyncio.timeout(timeout):
                await deliver()
                return await future
        except TimeoutError:
            raise TimeoutError(f"no response to message {msg_id} within {timeout:g}s") from None
        finally:
            self._waiting_responses.pop(msg_id, None)

    def respond(self, response: Message) -> bool:
        """Hand a response to the request waiting for it; False when nobody waits (late or unknown)."""
        future = self._waiting_responses.pop(response.parent_msg_id, None)
        if future is None or future.done():
            return False
        future.set_result(response)
        return True

    def is_waiting(self, msg_id: str) -> bool:
        return msg_id in self._waiting_responses

    # shutdown -----------------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        for future in self._waiting_responses.values():
            if not future.done():
                future.set_exception(BusClosedError("bus closed while waiting for a response"))
        self._waiting_responses.clear()
        for mailbox in self._mailboxes.values():
            mailbox.close()
