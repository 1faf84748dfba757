"""The cloud end of edge events: EdgeController writes what a node's edged reports into a real control plane.

Reuses test_edgecontroller's harness (a control plane process, the real module bus, a fake cloudhub that
captures replies). Every event message is answered: "OK" when written and when dropped as bad input, so
the edge never sends it again.
"""

from __future__ import annotations

from typing import Any

from cloudcore.edgecontroller.events import EVENT
from cloudcore.edgecontroller.kinds import POD
from cloudcore.edgecontroller.kubeapi import KubeError
from common.constants import Op
from tests.fixtures.controlplane import ControlPlaneProcess
from tests.integration.test_edgecontroller import controller, pod_body
from tests.integration.test_edgecontroller import plane as plane

NODE = "ev-edge-1"


def event(name: str, pod: dict[str, Any], *, count: int = 1, reason: str = "Failed",
          message: str = 'Failed to pull image "x": not found', last: str = "2024-05-01T10:00:00Z") -> dict[str, Any]:
    meta = pod["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": meta["namespace"]},
        "involvedObject": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"],
                           "apiVersion": "v1", "fieldPath": "spec.containers{c}"},
        "reason": reason, "message": message, "type": "Warning",
        "source": {"component": "kubelet", "host": "a-lie"},
        "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": last, "count": count,
    }


async def test_edge_events_are_created_counted_and_listed_by_involved_object(plane: ControlPlaneProcess) -> None:
    async with controller(plane) as h:
        ns = await h.namespace("ev-ok")
        await h.node(NODE)
        pod = await h.create(POD, ns, pod_body("web", NODE))
        first = event("web.17a0", pod)

        answer = await h.request(NODE, Op.INSERT, f"{ns}/event/web.17a0", first)
        assert (answer.operation, answer.content) == (Op.RESPONSE, "OK")
        stored = await h.kube.get(EVENT.object_path(ns, "web.17a0"))
        assert stored["source"] == {"component": "kubelet", "host": NODE}  # the node's identity, not the edge's word
        assert (stored["count"], stored["reason"], stored["involvedObject"]["uid"]) == (1, "Failed",
                                                                                        pod["metadata"]["uid"])

        # a repeat: the count and time go up on the same event; a re-sent insert does the same
        repeat = event("web.17a0", pod, count=4, last="2024-05-01T10:05:00Z")
        assert (await h.request(NODE, Op.UPDATE, f"{ns}/event/web.17a0", repeat)).content == "OK"
        assert (await h.request(NODE, Op.INSERT, f"{ns}/event/web.17a0", repeat)).content == "OK"
        stored = await h.kube.get(EVENT.object_path(ns, "web.17a0"))
        assert (stored["count"], stored["lastTimestamp"]) == (4, "2024-05-01T10:05:00Z")

        # an update whose insert was lost creates the event
        lost = event("web.17a1", pod, count=2, reason="BackOff", message='Back-off pulling image "x"')
        assert (await h.request(NODE, Op.UPDATE, f"{ns}/event/web.17a1", lost)).content == "OK"
        assert (await h.kube.get(EVENT.object_path(ns, "web.17a1")))["count"] == 2

        # patch (a strategic-merge patch string, as upstream's edge sends it)
        patched = await h.request(NODE, Op.PATCH, f"{ns}/event/web.17a1", '{"count": 3}')
        assert patched.content == "OK"
        assert (await h.kube.get(EVENT.object_path(ns, "web.17a1")))["count"] == 3

        listed = await h.kube.get(EVENT.collection_path(ns), {"fieldSelector": "involvedObject.name=web"})
        assert sorted(e["metadata"]["name"] for e in listed["items"]) == ["web.17a0", "web.17a1"]


async def test_bad_events_are_dropped_and_acknowledged(plane: ControlPlaneProcess) -> None:
    async with controller(plane) as h:
        ns = await h.namespace("ev-bad")
        node = "ev-edge-3"
        await h.node(node)
        await h.node("ev-edge-2")
        other = await h.create(POD, ns, pod_body("theirs", "ev-edge-2"))
        mine = await h.create(POD, ns, pod_body("mine", node))
        ghost = {"metadata": {"name": "ghost", "namespace": "ev-no-such-ns", "uid": "g"}}
        cases = {
            "another node's pod": (f"{ns}/event/theirs.1", event("theirs.1", other)),
            "a namespace that does not exist": ("ev-no-such-ns/event/ghost.1", event("ghost.1", ghost)),
            "not an object": (f"{ns}/event/mine.1", "not json"),
            "a name that is not the resource's": (f"{ns}/event/mine.2", event("mine.3", mine)),
            "invalid for the API": (f"{ns}/event/Mine_4", event("Mine_4", mine)),
        }
        for why, (resource, content) in cases.items():
            for operation in (Op.INSERT, Op.UPDATE):
                answer = await h.request(node, operation, resource, content)
                assert (answer.operation, answer.content) == (Op.RESPONSE, "OK"), why
        listed = await h.kube.get(EVENT.collection_path(ns))
        assert listed["items"] == []
        try:
            await h.kube.get(EVENT.object_path("ev-no-such-ns", "ghost.1"))
        except KubeError as exc:
            assert exc.not_found
        else:
            raise AssertionError("an event was written into a namespace that does not exist")
