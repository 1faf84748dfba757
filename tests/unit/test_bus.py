"""Module bus: routing by name and group, bounded mailboxes, request/response, clean close."""

from __future__ import annotations

import asyncio

import pytest

from common.bus import Mailbox, ModuleBus
from common.errors import BusClosedError, BusFullError, DuplicateModuleError, UnknownModuleError
from common.message import Message


def msg(resource: str = "default/pod/a", parent: str = "") -> Message:
    return Message.new(source="test", group="resource", operation="insert", resource=resource,
                       parent_msg_id=parent)


async def test_send_by_name_arrives_in_order() -> None:
    bus = ModuleBus()
    bus.register("metamanager", "meta")
    sent = [msg(f"default/pod/{i}") for i in range(5)]
    for message in sent:
        await bus.send("metamanager", message)
    assert [await bus.receive("metamanager") for _ in sent] == sent


async def test_send_to_group_reaches_every_member() -> None:
    bus = ModuleBus()
    bus.register("eventbus", "bus")
    bus.register("servicebus", "bus")
    bus.register("edged", "edged")
    message = msg()
    await bus.send_to_group("bus", message)
    assert await bus.receive("eventbus") is message
    assert await bus.receive("servicebus") is message
    assert len(bus.mailbox("edged")) == 0


async def test_unknown_module_and_group_are_errors() -> None:
    bus = ModuleBus()
    with pytest.raises(UnknownModuleError, match="nope"):
        await bus.send("nope", msg())
    with pytest.raises(UnknownModuleError, match="group"):
        await bus.send_to_group("nogroup", msg())


def test_duplicate_registration_refused() -> None:
    bus = ModuleBus()
    bus.register("a", "g")
    with pytest.raises(DuplicateModuleError):
        bus.register("a", "g")


async def test_full_mailbox_waits_then_raises_without_enqueueing() -> None:
    bus = ModuleBus(capacity=2, send_timeout=0.05)
    bus.register("slow", "g")
    await bus.send("slow", msg())
    await bus.send("slow", msg())
    overflow = msg()
    with pytest.raises(BusFullError, match=overflow.msg_id):
        await bus.send("slow", overflow)
    assert len(bus.mailbox("slow")) == 2
    with pytest.raises(BusFullError):
        bus.send_nowait("slow", msg())


async def test_full_mailbox_sender_proceeds_when_receiver_drains() -> None:
    bus = ModuleBus(capacity=1, send_timeout=2.0)
    bus.register("m", "g")
    first, second = msg("a/b/1"), msg("a/b/2")
    await bus.send("m", first)
    sender = asyncio.create_task(bus.send("m", second))
    await asyncio.sleep(0)
    assert not sender.done()
    assert await bus.receive("m") is first
    await asyncio.wait_for(sender, 1)
    assert await bus.receive("m") is second


async def test_request_response_matched_by_parent_id() -> None:
    bus = ModuleBus()
    bus.register("metamanager", "meta")

    async def responder() -> None:
        request = await bus.receive("metamanager")
        bus.respond(msg(parent="unrelated"))  # ignored: nobody waits for it
        assert bus.respond(request.response("OK"))

    task = asyncio.create_task(responder())
    request = msg()
    reply = await bus.request("metamanager", request, timeout=1)
    await task
    assert reply.parent_msg_id == request.msg_id and reply.content == "OK"
    assert not bus.is_waiting(request.msg_id)


async def test_request_group_gets_first_answer() -> None:
    bus = ModuleBus()
    bus.register("twin", "twin")

    async def responder() -> None:
        bus.respond((await bus.receive("twin")).response({"ok": True}))

    task = asyncio.create_task(responder())
    reply = await bus.request_group("twin", msg(), timeout=1)
    await task
    assert reply.content == {"ok": True}


async def test_request_timeout_names_message_and_late_response_is_refused() -> None:
    bus = ModuleBus()
    bus.register("m", "g")
    request = msg()
    with pytest.raises(TimeoutError, match=request.msg_id):
        await bus.request("m", request, timeout=0.01)
    late = (await bus.receive("m")).response("OK")
    assert bus.respond(late) is False


async def test_close_wakes_receivers_and_fails_pending_requests() -> None:
    bus = ModuleBus()
    bus.register("a", "g")
    bus.register("b", "g")
    receiver = asyncio.create_task(bus.receive("a"))
    requester = asyncio.create_task(bus.request("b", msg(), timeout=5))
    await asyncio.sleep(0.01)
    bus.close()
    with pytest.raises(BusClosedError):
        await receiver
    with pytest.raises(BusClosedError):
        await requester
    with pytest.raises(BusClosedError):
        bus.register("c", "g")


async def test_cancelled_receiver_leaves_no_waiter_behind() -> None:
    box = Mailbox("m", 4)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    message = msg()
    box.put_nowait(message)
    assert await asyncio.wait_for(box.get(), 1) is message


async def test_many_receivers_share_one_mailbox_each_message_once() -> None:
    bus = ModuleBus()
    bus.register("workers", "g")
    got: list[Message] = []

    async def worker() -> None:
        while True:
            got.append(await bus.receive("workers"))

    tasks = [asyncio.create_task(worker()) for _ in range(3)]
    sent = [msg(f"a/b/{i}") for i in range(50)]
    for message in sent:
        await bus.send("workers", message)
    for _ in range(100):
        if len(got) == len(sent):
            break
        await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    assert sorted(m.msg_id for m in got) == sorted(m.msg_id for m in sent)


async def test_unregister_closes_mailbox_and_leaves_group() -> None:
    bus = ModuleBus()
    bus.register("a", "g")
    bus.unregister("a")
    assert bus.modules() == []
    with pytest.raises(UnknownModuleError):
        await bus.send_to_group("g", msg())


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Mailbox("m", 0)
