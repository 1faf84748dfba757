#!/usr/bin/env python3
"""The node-group endpoint filter's cost per event, and the endpoint bytes it saves each edge node.

In process, no I/O: the edgecontroller's Planner (cloudcore/edgecontroller/planner.py) with 1,000 edge
nodes in 50 node groups (20 each, label `apps.kubeedge.io/belonging-to`) and one Service with a pod on
every node: 10 EndpointSlices of 100 endpoints (the endpointslice controller's default maximum), each
endpoint as that controller writes it (address, conditions, nodeName, targetRef, zone).

Figures:

- filter cost per EndpointSlice event: one slice gets a new resourceVersion and goes to all 1,000 nodes;
  the time of the filter alone (`EndpointViews.views`: 50 filterings, one per group, and 1,000 cache
  lookups), per node. Baseline, same run: the same call for the same slice of an unannotated Service
  (pass-through). Also, for information, the planner's whole broadcast of the event (pushes built) per
  node, with and without the annotation, and the cost when each node filters for itself (cache off);
- bytes of endpoint data one edge node receives per Service change (all 10 slices updated), as encoded
  messages (`push_message` + the wire encoding), with the filter (its group's 20 endpoints) and without
  (all 1,000): the saving the filter buys;
- a node moving to another group: the planner's re-filter (which views changed, pushes built), once.

    .venv/bin/python bench/nodegroups_filter.py [--quick]

`--quick`: fewer repetitions (well under 60 s). Last lines: `name: value unit (target T)`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cloudcore.edgecontroller.endpointfilter import EndpointViews  # noqa: E402
from cloudcore.edgecontroller.informer import Event, EventType  # noqa: E402
from cloudcore.edgecontroller.kinds import ENDPOINTSLICE, SERVICE, Object  # noqa: E402
from cloudcore.edgecontroller.messages import push_message  # noqa: E402
from cloudcore.edgecontroller.planner import Planner, Push  # noqa: E402
from cloudcore.edgecontroller.topology import (  # noqa: E402
    ANNOTATION_SERVICE_TOPOLOGY,
    LABEL_BELONGING_TO,
    LABEL_SERVICE_NAME,
    TopologyIndex,
)
from common.message import encode  # noqa: E402

NODES: Final = 1000
GROUPS: Final = 50
PER_SLICE: Final = 100
NS: Final = "bench"
TARGET_US: Final = 50.0


def node_name(i: int) -> str:
    return f"edge-{i:04d}"


def service(name: str, annotated: bool) -> Object:
    annotations = {ANNOTATION_SERVICE_TOPOLOGY: "range-nodegroup"} if annotated else {}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "resourceVersion": "10", "annotations": annotations},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}


def slices(service_name: str, rv: int) -> list[Object]:
    found = []
    for s in range(NODES // PER_SLICE):
        endpoints = []
        for i in range(s * PER_SLICE, (s + 1) * PER_SLICE):
            endpoints.append({
                "addresses": [f"10.{i // 65536 + 1}.{i // 256 % 256}.{i % 256}"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": node_name(i), "zone": f"zone-{i % GROUPS}",
                "targetRef": {"kind": "Pod", "namespace": NS, "name": f"{service_name}-{i:04d}-7d9f8c6b5-x2k4q",
                              "uid": f"00000000-0000-4000-8000-{i:012d}"},
            })
        found.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                      "metadata": {"name": f"{service_name}-{s:02d}", "namespace": NS, "resourceVersion": str(rv + s),
                                   "labels": {LABEL_SERVICE_NAME: service_name,
                                              "endpointslice.kubernetes.io/managed-by":
                                                  "endpointslice-controller.k8s.io"}},
                      "endpoints": endpoints, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    return found


def planner(annotated: bool) -> tuple[Planner, list[str]]:
    nodes = [node_name(i) for i in range(NODES)]
    found = Planner({})
    for i, node in enumerate(nodes):
        found.node_event(Event(EventType.ADDED, node, {"metadata": {"name": node}}, None))
        labels = {LABEL_BELONGING_TO: f"group-{i % GROUPS:02d}"}
        found.group_event(Event(EventType.ADDED, node, {"metadata": {"name": node, "labels": labels,
                                                                      "resourceVersion": "5"}}, None))
    svc = service("web", annotated)
    found.broadcast_event(SERVICE, Event(EventType.ADDED, f"{NS}/web", svc, None))
    return found, nodes


def with_rv(obj: Object, rv: int) -> Object:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}


def time_views(views: EndpointViews, nodes: list[str], base: Object, rounds: int, rv: int) -> list[float]:
    """Seconds per node of one event's views to every node, per round (each round a new RV)."""
    samples = []
    for r in range(rounds):
        obj = with_rv(base, rv + r)
        started = time.perf_counter()
        views.views(ENDPOINTSLICE.type, obj, nodes)
        samples.append((time.perf_counter() - started) / len(nodes))
    return samples


def time_uncached(index: TopologyIndex, nodes: list[str], base: Object, rounds: int, rv: int) -> list[float]:
    samples = []
    for r in range(rounds):
        obj = with_rv(base, rv + r)
        started = time.perf_counter()
        for node in nodes:
            EndpointViews(index).view(ENDPOINTSLICE.type, obj, node)
        samples.append((time.perf_counter() - started) / len(nodes))
    return samples


def time_broadcast(plan_owner: Planner, base: Object, rounds: int, rv: int) -> list[float]:
    samples = []
    for r in range(rounds):
        obj = with_rv(base, rv + r)
        event = Event(EventType.MODIFIED, f"{NS}/{obj['metadata']['name']}", obj, base)
        started = time.perf_counter()
        plan_owner.broadcast_event(ENDPOINTSLICE, event)
        samples.append((time.perf_counter() - started) / NODES)
    return samples


def bytes_to_node(plan_owner: Planner, objs: list[Object], node: str) -> tuple[int, int]:
    """(encoded message bytes, endpoints) one node receives when every slice of the Service changes."""
    total = endpoints = 0
    for obj in objs:
        view = plan_owner.view(node, ENDPOINTSLICE, obj)
        total += len(encode(push_message(Push(node, "update", ENDPOINTSLICE, view))))
        endpoints += len(view.get("endpoints") or [])
    return total, endpoints


def us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, well under 60 s")
    args = parser.parse_args()
    rounds = 15 if args.quick else 101

    filtered, nodes = planner(annotated=True)
    plain, _ = planner(annotated=False)
    web = slices("web", 1000)
    filtered.caches = {ENDPOINTSLICE.type: {f"{NS}/{obj['metadata']['name']}": obj for obj in web}}  # informer's
    base = web[0]

    filter_cost = us(time_views(filtered.views, nodes, base, rounds, 10_000))
    passthrough = us(time_views(plain.views, nodes, base, rounds, 20_000))
    uncached = us(time_uncached(filtered.topology, nodes, base, max(3, rounds // 10), 30_000))
    broadcast_filtered = us(time_broadcast(filtered, base, rounds, 40_000))
    broadcast_plain = us(time_broadcast(plain, base, rounds, 50_000))
    before = filtered.views.filterings
    filtered.views.views(ENDPOINTSLICE.type, with_rv(base, 60_000), nodes)
    filterings = filtered.views.filterings - before

    node = nodes[123]
    sent_filtered, kept = bytes_to_node(filtered, web, node)
    sent_plain, everything = bytes_to_node(plain, web, node)

    mover = nodes[7]
    started = time.perf_counter()
    plan = filtered.group_event(Event(EventType.MODIFIED, mover, {"metadata": {
        "name": mover, "labels": {LABEL_BELONGING_TO: "group-49"}, "resourceVersion": "70000"}}, None))
    for push in plan.pushes:
        push_message(push)
    move_ms = (time.perf_counter() - started) * 1e3

    print(f"setup: {NODES} edge nodes in {GROUPS} groups, one Service with {len(web)} EndpointSlices of "
          f"{PER_SLICE} endpoints (one pod per node); {rounds} events per figure, medians")
    print(f"filter per event to {NODES} nodes: {filterings} filterings (one per group); "
          f"{filter_cost:.2f} us per node; unannotated pass-through baseline {passthrough:.2f} us per node; "
          f"without the per-group cache {uncached:.2f} us per node")
    print(f"planner broadcast of one slice event (pushes built), per node: filtered {broadcast_filtered:.2f} us, "
          f"unannotated {broadcast_plain:.2f} us")
    print(f"one Service change (all {len(web)} slices) to one node: {sent_filtered:,} B with the filter "
          f"({kept} endpoints), {sent_plain:,} B without ({everything} endpoints); "
          f"{sent_plain / sent_filtered:.1f}x less")
    print(f"a node moving between groups: {len(plan.pushes)} views re-sent, {move_ms:.1f} ms to plan and encode")
    print(f"nodegroups_filter_us_per_node_event: {filter_cost:.2f} us (target <= {TARGET_US:g})")
    print(f"nodegroups_filter_passthrough_us_per_node_event: {passthrough:.2f} us (target baseline)")
    print(f"nodegroups_filter_bytes_per_service_change_filtered: {sent_filtered} B (target < unfiltered)")
    print(f"nodegroups_filter_bytes_per_service_change_unfiltered: {sent_plain} B (target baseline)")


if __name__ == "__main__":
    main()
