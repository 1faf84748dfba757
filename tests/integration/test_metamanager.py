"""MetaManager on a real SQLite file and a real module bus: store before ACK, dedup by resourceVersion,
queries from the cloud or the store; and the edge outbox's rows across a reopen."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.bus import ModuleBus
from common.config.edgecore import MetaManager as MetaManagerConfig
from common.constants import CLOUD_CONNECTED, RESOURCE_CLOUD_CONNECTION, EdgeModule, Group, Op
from common.message import Message, encode
from common.modules import ModuleContext
from edgecore.edgehub.outbox_store import PersistentOutbox
from edgecore.metamanager.module import MetaManagerModule
from edgecore.metamanager.store import MetaChange, MetaStore


def pod(name: str, rv: int, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                             "resourceVersion": str(rv)}, **extra}


def cloud(operation: str, resource: str, content: Any = None, rv: str = "") -> Message:
    return Message.new(source="edgecontroller", group=Group.RESOURCE, operation=operation, resource=resource,
                       content=content, resource_version=rv)


def rows(path: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {key: kind for key, kind in db.execute("SELECT key, type FROM meta")}


async def test_store_writes_a_batch_in_order_and_skips_stale_versions(sqlite_path: Path) -> None:
    store = await MetaStore.open(sqlite_path)
    try:
        applied = await store.apply([
            MetaChange("default/pod/a", "pod", '{"v": 1}', 5),
            MetaChange("default/pod/a", "pod", '{"v": 2}', 7),
            MetaChange("default/pod/a", "pod", '{"v": 0}', 6),  # older than what this batch wrote
            MetaChange("default/configmap/c", "configmap", '{"v": 1}', 3),
        ])
        assert applied.written == [True, True, False, True]
        assert [(e.seq, e.key, e.event, e.rv) for e in applied.events] == [
            (1, "default/pod/a", "ADDED", 5), (2, "default/pod/a", "MODIFIED", 7),
            (3, "default/configmap/c", "ADDED", 3)]
        assert await store.get("default/pod/a") == '{"v": 2}'
        assert store.resource_version("default/pod/a") == 7
        assert (await store.apply([MetaChange("default/pod/a", "pod", '{"v": 9}', 7)])).written == [False]
    finally:
        await store.close()
    assert rows(sqlite_path) == {"default/pod/a": "pod", "default/configmap/c": "configmap"}


async def test_store_index_is_rebuilt_on_open_and_pod_delete_removes_its_podpatch(sqlite_path: Path) -> None:
    store = await MetaStore.open(sqlite_path)
    await store.apply([MetaChange("default/pod/a", "pod", '{"metadata": {"resourceVersion": "12"}}', 12),
                       MetaChange("default/podpatch/a", "podpatch", '{"x": 1}')])
    await store.close()
    store = await MetaStore.open(sqlite_path)
    try:
        assert store.resource_version("default/pod/a") == 12
        applied = await store.apply([MetaChange("default/pod/a", "pod", None, 15)])
        assert applied.written == [True]
        (deleted,) = applied.events  # the last stored pod, carrying the delete's resourceVersion
        assert (deleted.event, deleted.rv, deleted.value) == ("DELETED", 15, '{"metadata":{"resourceVersion":"15"}}')
        assert (await store.apply([MetaChange("default/pod/a", "pod", None)])).events == []
        assert store.resource_version("default/pod/a") is None
        assert await store.list_type("pod") == []
    finally:
        await store.close()
    assert rows(sqlite_path) == {}


@contextlib.asynccontextmanager
async def running(sqlite_path: Path, timeout: int = 2) -> AsyncIterator[tuple[ModuleBus, Any, MetaStore]]:
    """MetaManager on a bus with a stand-in `websocket` mailbox where everything for the cloud lands."""
    bus = ModuleBus()
    hub = bus.register(EdgeModule.EDGEHUB, Group.HUB)
    store = await MetaStore.open(sqlite_path)
    module = MetaManagerModule(MetaManagerConfig(remoteQueryTimeout=timeout), store)
    task = asyncio.create_task(module.run(ModuleContext(bus, bus.register(module.name, module.group))))
    try:
        yield bus, hub, store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()


async def next_for_cloud(hub: Any) -> Message:
    async with asyncio.timeout(5):
        message: Message = await hub.get()
        return message


async def test_cloud_objects_are_on_disk_before_their_ack(sqlite_path: Path) -> None:
    async with running(sqlite_path) as (bus, hub, _store):
        sent = [cloud(Op.INSERT, f"default/pod/p{i}", pod(f"p{i}", 10 + i), str(10 + i)) for i in range(20)]
        for message in sent:
            await bus.send_to_group(Group.META, message)
        acks = [await next_for_cloud(hub) for _ in sent]
        assert [(a.operation, a.content, a.parent_msg_id) for a in acks] == [("response", "OK", m.msg_id) for m in sent]
        assert len(rows(sqlite_path)) == 20  # read by another connection: committed
        resend = sent[3]
        await bus.send_to_group(Group.META, resend)
        assert (await next_for_cloud(hub)).parent_msg_id == resend.msg_id
        await bus.send_to_group(Group.META, cloud(Op.DELETE, "default/pod/p0", pod("p0", 30)))
        await next_for_cloud(hub)
        assert "default/pod/p0" not in rows(sqlite_path)


async def test_a_malformed_cloud_object_is_acked_and_not_stored(sqlite_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    async with running(sqlite_path) as (bus, hub, _store):
        bad = cloud(Op.UPDATE, "default/pod/x", "not an object", "5")
        await bus.send_to_group(Group.META, bad)
        assert (await next_for_cloud(hub)).parent_msg_id == bad.msg_id
    assert rows(sqlite_path) == {}
    (record,) = [r for r in caplog.records if r.name == "kubeedge.metamanager"]
    assert record.kfields["msg_id"] == bad.msg_id  # type: ignore[attr-defined]


async def test_query_offline_is_answered_from_the_store(sqlite_path: Path) -> None:
    async with running(sqlite_path) as (bus, hub, _store):
        await bus.send_to_group(Group.META, cloud(Op.INSERT, "default/configmap/cm", {"data": {"k": "v"},
                                                                                  "metadata": {"name": "cm"}}, "4"))
        await next_for_cloud(hub)
        ask = Message.new(source="edged", group=Group.META, operation=Op.QUERY, resource="default/configmap/cm")
        answer = await bus.request(EdgeModule.METAMANAGER, ask, timeout=5)
        assert (answer.operation, answer.content["data"]) == (Op.RESPONSE, {"k": "v"})
        missing = ask._replace(header=ask.header._replace(msg_id="other")).with_resource("default/secret/nope")
        answer = await bus.request(EdgeModule.METAMANAGER, missing, timeout=5)
        assert answer.operation == Op.ERROR and "not found" in answer.content


async def test_query_online_goes_to_the_cloud_and_the_answer_is_stored(sqlite_path: Path) -> None:
    async with running(sqlite_path) as (bus, hub, _store):
        await bus.send_to_group(Group.META, Message.new(source="edgehub", group=Group.META, operation=Op.CONNECT,
                                                        resource=RESOURCE_CLOUD_CONNECTION, content=CLOUD_CONNECTED))
        ask = Message.new(source="edged", group=Group.META, operation=Op.QUERY, resource="default/secret/s")
        pending = asyncio.create_task(bus.request(EdgeModule.METAMANAGER, ask, timeout=5))
        remote = await next_for_cloud(hub)
        assert remote.msg_id != ask.msg_id and (remote.operation, remote.resource) == (Op.QUERY, "default/secret/s")
        secret = {"kind": "Secret", "metadata": {"name": "s", "resourceVersion": "8"}, "data": {"a": "Yg=="}}
        assert bus.respond(remote.response(secret))
        answer = await pending
        assert answer.parent_msg_id == ask.msg_id and answer.content == secret
        assert rows(sqlite_path) == {"default/secret/s": "secret"}


async def test_query_falls_back_to_the_store_when_the_cloud_is_silent(sqlite_path: Path) -> None:
    async with running(sqlite_path, timeout=1) as (bus, hub, _store):
        await bus.send_to_group(Group.META, cloud(Op.INSERT, "default/service/web", {"metadata": {"name": "web"}}, "2"))
        await next_for_cloud(hub)
        await bus.send_to_group(Group.META, Message.new(source="edgehub", group=Group.META, operation=Op.CONNECT,
                                                        resource=RESOURCE_CLOUD_CONNECTION, content=CLOUD_CONNECTED))
        ask = Message.new(source="edged", group=Group.META, operation=Op.QUERY, resource="default/service/web")
        answer = await bus.request(EdgeModule.METAMANAGER, ask, timeout=5)
        assert answer.content == {"metadata": {"name": "web"}}


async def test_edge_messages_go_to_the_cloud_unchanged(sqlite_path: Path) -> None:
    async with running(sqlite_path) as (bus, hub, _store):
        report = Message.new(source="edged", group=Group.META, operation=Op.UPDATE, resource="default/podstatus/p",
                             content={"UID": "u"})
        await bus.send_to_group(Group.META, report)
        assert await next_for_cloud(hub) == report


async def test_a_reported_pod_status_is_kept_in_the_stored_pod_at_its_resource_version(sqlite_path: Path) -> None:
    """The cloud does not echo status-only pod changes back, so the edge's own copy carries edged's status."""
    async with running(sqlite_path) as (bus, hub, store):
        stored = pod("p", 12, status={"phase": "Pending"})
        stored["metadata"]["uid"] = "u1"
        await bus.send_to_group(Group.META, cloud(Op.INSERT, "default/pod/p", stored, "12"))
        await next_for_cloud(hub)  # its ACK

        def status_report(uid: str, phase: str) -> Message:
            return Message.new(source="edged", group=Group.META, operation=Op.UPDATE, resource="default/podstatus/p",
                               content={"UID": uid, "Name": "p", "Status": {"phase": phase}})

        running_report = status_report("u1", "Running")
        await bus.send_to_group(Group.META, running_report)
        assert await next_for_cloud(hub) == running_report  # still goes up unchanged
        await bus.send_to_group(Group.META, status_report("other-uid", "Failed"))  # not this pod's: not kept
        await next_for_cloud(hub)
        kept = json.loads(await store.get("default/pod/p") or "null")
        assert kept["status"] == {"phase": "Running"} and kept["metadata"]["resourceVersion"] == "12"
        assert store.resource_version("default/pod/p") == 12
        # The cloud's next version of the pod replaces it as before; a re-send of version 12 does not.
        await bus.send_to_group(Group.META, cloud(Op.UPDATE, "default/pod/p", stored, "12"))
        await next_for_cloud(hub)
        assert json.loads(await store.get("default/pod/p") or "null")["status"] == {"phase": "Running"}
        await bus.send_to_group(Group.META, cloud(Op.UPDATE, "default/pod/p", {**pod("p", 13), "status": {}}, "13"))
        await next_for_cloud(hub)
        assert json.loads(await store.get("default/pod/p") or "null")["status"] == {}


async def test_a_status_report_for_a_stored_pod_that_is_not_json_leaves_it_and_metamanager_running(
        sqlite_path: Path) -> None:
    async with running(sqlite_path) as (bus, hub, store):
        await store.apply([MetaChange("default/pod/bad", "pod", "{not json", 3)])
        bad = Message.new(source="edged", group=Group.META, operation=Op.UPDATE, resource="default/podstatus/bad",
                          content={"UID": "u", "Name": "bad", "Status": {"phase": "Running"}})
        await bus.send_to_group(Group.META, bad)
        assert await next_for_cloud(hub) == bad
        after = cloud(Op.INSERT, "default/pod/p", pod("p", 4), "4")
        await bus.send_to_group(Group.META, after)
        assert (await next_for_cloud(hub)).parent_msg_id == after.msg_id  # still storing and ACKing
        assert await store.get("default/pod/bad") == "{not json"


def report(n: int, name: str = "p") -> Message:
    return Message.new(source="edged", group=Group.META, operation=Op.UPDATE, resource=f"default/podstatus/{name}",
                       content={"n": n})


async def test_outbox_rows_survive_a_reopen_in_order_with_their_msg_ids(sqlite_path: Path) -> None:
    outbox = await PersistentOutbox.open(sqlite_path)
    first, second, newer = report(1, "a"), report(1, "b"), report(2, "a")
    await outbox.put("a", first)
    await outbox.put("b", second)
    (written, _) = outbox.next_batch(0, limit=2)
    await outbox.put("a", newer)  # waits behind the one in flight; the row holds the newest
    await outbox.close()

    outbox = await PersistentOutbox.open(sqlite_path)
    try:
        again = outbox.next_batch(0, limit=10)
        assert [(o.key, o.message) for o in again] == [("a", newer), ("b", second)]
        assert written.message == first
        assert await outbox.ack(newer.msg_id) == "a"
        assert await outbox.ack("unknown") is None
    finally:
        await outbox.close()
    with contextlib.closing(sqlite3.connect(sqlite_path)) as db:
        assert [tuple(r) for r in db.execute("SELECT key, msg_id, message FROM outbox")] == [
            ("b", second.msg_id, encode(second))]


async def test_event_log_is_trimmed_to_its_limit_and_numbered_on_across_a_reopen(sqlite_path: Path) -> None:
    store = await MetaStore.open(sqlite_path, event_log_limit=3)
    await store.apply([MetaChange(f"default/pod/p{i}", "pod", f'{{"n": {i}}}', 10 + i) for i in range(5)])
    await store.close()
    store = await MetaStore.open(sqlite_path, event_log_limit=3)
    try:
        applied = await store.apply([MetaChange("default/pod/p0", "pod", None, 20)])
        assert [(e.seq, e.event, e.rv, e.value) for e in applied.events] == [(6, "DELETED", 20, '{"n": 0}')]
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(sqlite_path)) as db:
        logged = [tuple(r) for r in db.execute("SELECT seq, key, event, rv FROM meta_events ORDER BY seq")]
    assert logged == [(4, "default/pod/p3", "ADDED", 13), (5, "default/pod/p4", "ADDED", 14),
                      (6, "default/pod/p0", "DELETED", 20)]


async def test_a_node_delete_in_upstreams_form_removes_the_stored_node(sqlite_path: Path) -> None:
    async with running(sqlite_path) as (bus, hub, _store):
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "e1", "resourceVersion": "3"}}
        await bus.send_to_group(Group.META, cloud(Op.INSERT, "null/node/e1", node, "3"))
        await next_for_cloud(hub)
        assert rows(sqlite_path) == {"null/node/e1": "node"}
        await bus.send_to_group(Group.META, cloud(Op.DELETE, "namespace/node/e1", node, "4"))
        await next_for_cloud(hub)
        assert rows(sqlite_path) == {}
