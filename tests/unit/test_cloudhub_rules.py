"""CloudHub's fire-and-forget rule: which cloud-to-edge messages wait for an ACK."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from cloudcore.cloudhub.hub import CloudHubModule, needs_ack
from common.config.cloudcore import CloudHub
from common.message import Message
from common.reliable import EnqueueResult


def message(operation: str, resource: str, group: str = "resource", content: object = None) -> Message:
    return Message.new(source="edgecontroller", group=group, operation=operation, resource=resource, content=content)


@pytest.mark.parametrize(("msg", "acked"), [
    (message("update", "default/pod/p", content={"metadata": {}}), True),
    (message("delete", "default/configmap/c"), True),
    (message("insert", "null/node/edge-1", content={}), True),
    (message("response", "default/configmap/c", content={"metadata": {}}), False),  # a query's answer
    (message("response", "default/node/edge-1", content="OK"), False),
    (message("error", "default/secret/s", content="forbidden"), False),
    (message("update", "membership", group="twin"), False),
    (message("update", "default/serviceaccounttoken/t"), False),
    (message("publish", "topic", group="user"), False),
])
def test_replies_and_upstreams_no_ack_resources_are_fire_and_forget(msg: Message, acked: bool) -> None:
    assert needs_ack(msg) is acked


async def test_dropped_content_is_taken_again_from_the_edgecontroller_cache() -> None:
    cached = Message.new(source="edgecontroller", group="resource", operation="update",
                         resource="node/edge-1/default/pod/p", content={"metadata": {}}, resource_version="42")
    asked: list[str] = []

    def lookup(resource: str) -> Message | None:
        asked.append(resource)
        return cached if resource == cached.resource else None

    hub = CloudHubModule(CloudHub(), cast(Any, None), lookup)
    resolved = hub._current("edge-1", "default/pod/p")
    assert resolved == (cached.with_resource("default/pod/p"), 42, False)
    assert hub._current("edge-1", "default/pod/gone") is None
    assert asked == ["node/edge-1/default/pod/p", "node/edge-1/default/pod/gone"]


async def test_concurrent_first_uses_of_a_node_queue_all_see_its_acked_versions() -> None:
    class Records:  # like ObjectSyncStore: listed once by the first caller, handed out per node
        def __init__(self) -> None:
            self.index: dict[str, dict[str, int]] | None = None

        async def load(self, node: str) -> dict[str, int]:
            if self.index is None:
                self.index = {}
                await asyncio.sleep(0.05)  # the LIST, during which another caller comes
                self.index = {"edge-1": {"default/pod/p": 5}}
            return self.index.pop(node, {})

    hub = CloudHubModule(CloudHub(), cast(Any, None))
    hub.syncs = cast(Any, Records())
    acked_copy = Message.new(source="edgecontroller", group="resource", operation="update",
                             resource="default/pod/p", content={"metadata": {}}, resource_version="5")

    async def enqueue_once_loaded() -> EnqueueResult:
        queue = await hub.load_queue("edge-1")
        return queue.enqueue("default/pod/p", acked_copy, rv=5, delete=False)

    _, result = await asyncio.gather(hub.load_queue("edge-1"), enqueue_once_loaded())
    assert result is EnqueueResult.STALE
