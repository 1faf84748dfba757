"""NodeGroup membership and status planning (pure), and the keyed work queue the controllers share."""

from __future__ import annotations

import asyncio
from typing import Any

from cloudcore.controllermanager.keys import BELONGING_TO
from cloudcore.controllermanager.membership import groups_for_node, plan_group, plan_release
from cloudcore.controllermanager.workqueue import KeyQueue


def node(labels: dict[str, str] | None = None, ready: str | None = "True") -> dict[str, Any]:
    status = {"conditions": [{"type": "Ready", "status": ready}]} if ready is not None else {}
    return {"metadata": {"labels": labels or {}}, "status": status}


def group(nodes: list[str] | None = None, match: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if nodes is not None:
        spec["nodes"] = nodes
    if match is not None:
        spec["matchLabels"] = match
    return {"spec": spec}


def test_union_of_names_and_labels_sorted_with_failures() -> None:
    nodes = {"b": node(), "a": node({"zone": "x"}, "False"), "c": node({"zone": "x", BELONGING_TO: "other"}),
             "d": node({"zone": "x", BELONGING_TO: "g"}, None)}
    plan = plan_group("g", group(["b", "ghost"], {"zone": "x"}), nodes)
    assert plan.label == ["a", "b"]
    assert plan.unlabel == []
    assert plan.node_statuses == [
        {"nodeName": "a", "readyStatus": "NotReady", "selectionStatus": "Succeeded"},
        {"nodeName": "b", "readyStatus": "Ready", "selectionStatus": "Succeeded"},
        {"nodeName": "c", "readyStatus": "Ready", "selectionStatus": "Failed",
         "selectionStatusReason": "node c has already belonged to NodeGroup other"},
        {"nodeName": "d", "readyStatus": "Unknown", "selectionStatus": "Succeeded"},
        {"nodeName": "ghost", "readyStatus": "Unknown", "selectionStatus": "Failed",
         "selectionStatusReason": "node does not exist"},
    ]


def test_nil_match_labels_selects_none_and_empty_selects_all() -> None:
    nodes = {"a": node({"k": "v"}), "b": node()}
    assert plan_group("g", group(), nodes).label == []
    assert plan_group("g", group(match={}), nodes).label == ["a", "b"]


def test_leavers_are_unlabelled_and_release_takes_every_member() -> None:
    nodes = {"a": node({BELONGING_TO: "g"}), "b": node({BELONGING_TO: "g", "zone": "x"}),
             "c": node({BELONGING_TO: "h"})}
    assert plan_group("g", group(match={"zone": "x"}), nodes).unlabel == ["a"]
    assert plan_release("g", nodes) == ["a", "b"]


def test_a_node_event_concerns_its_old_and_new_group_and_every_selector() -> None:
    groups = [("byname", group(["n"])), ("bylabel", group(match={"zone": "x"})), ("none", group(["m"]))]
    found = groups_for_node("n", {"zone": "x", BELONGING_TO: "now"}, {BELONGING_TO: "before"}, groups)
    assert found == {"now", "before", "byname", "bylabel"}


async def test_work_queue_dedups_and_never_works_a_key_twice_at_once() -> None:
    queue = KeyQueue(limit=10)
    for key in ("a", "b", "a"):
        await queue.add(key)
    assert len(queue) == 2
    first = await queue.get()
    await queue.add(first)  # added while being worked: comes back only after done
    second = await queue.get()
    assert {first, second} == {"a", "b"}
    async with asyncio.timeout(0.2):
        await queue.done(first, ok=True)
        assert await queue.get() == first


async def test_work_queue_backs_off_a_failed_key() -> None:
    now = [100.0]
    queue = KeyQueue(clock=lambda: now[0])
    await queue.add("k")
    assert await queue.get() == "k"
    assert await queue.done("k", ok=False) == 0.1
    now[0] += 0.1
    async with asyncio.timeout(1):
        assert await queue.get() == "k"
    assert await queue.done("k", ok=False) == 0.2
    assert await queue.done("k", ok=True) is None


async def test_work_queue_is_bounded() -> None:
    queue = KeyQueue(limit=1)
    await queue.add("a")
    blocked = asyncio.create_task(queue.add("b"))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert await queue.get() == "a"
    async with asyncio.timeout(1):
        await blocked
    assert await queue.get() == "b"
