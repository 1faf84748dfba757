"""The node-group endpoint filter on the dynamiccontroller's path: its index, fed by two small informers.

Owns two informers (Nodes labelled `apps.kubeedge.io/belonging-to`, Services annotated
`apps.kubeedge.io/service-topology: range-nodegroup`; each keeps only those) feeding a TopologyIndex,
and the EndpointViews cache over it (cloudcore/edgecontroller/endpointfilter.py), so that the
EndpointSlices/Endpoints a MetaServer lists, gets or watches are each node's view, exactly as the
edgecontroller pushes them. A change of membership or annotation, once both informers are synced, is
handed to `on_change` (the subscriptions re-send the views that changed). Never answers with an
unfiltered object: readers wait for `ready` (bounded by the caller's timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cloudcore.edgecontroller.endpointfilter import EndpointViews
from cloudcore.edgecontroller.informer import Event, EventType, Informer
from cloudcore.edgecontroller.kinds import ENDPOINTS, ENDPOINTSLICE, NODE, SERVICE, Kind, Object, name_of, namespace_of
from cloudcore.edgecontroller.kubeapi import KubeJSON
from cloudcore.edgecontroller.topology import (
    GroupMove,
    ServiceKey,
    TopologyIndex,
    group_label,
    has_group,
    is_range_nodegroup,
    parse_rv,
    rv_number,
)
from common.log import get_logger

log = get_logger("dynamiccontroller")

Change = GroupMove | ServiceKey
OnChange = Callable[[Change], Awaitable[None]]
_ENDPOINT_RESOURCES = frozenset({(ENDPOINTS.group, ENDPOINTS.plural), (ENDPOINTSLICE.group, ENDPOINTSLICE.plural)})


def is_endpoint_resource(group: str, plural: str) -> bool:
    return (group, plural) in _ENDPOINT_RESOURCES


def is_endpoint_kind(kind: Kind) -> bool:
    return is_endpoint_resource(kind.group, kind.plural)


class EndpointTopology:
    def __init__(self, client: KubeJSON, on_change: OnChange) -> None:
        self.index = TopologyIndex()
        self.views = EndpointViews(self.index)
        self.ready = asyncio.Event()
        self._on_change = on_change
        self.members = Informer(client, NODE, self._on_member, keep=has_group)
        self.services = Informer(client, SERVICE, self._on_service, keep=is_range_nodegroup)

    async def run(self) -> None:
        """Both informers (owned by this task group), until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.members.run(), name="dynamiccontroller:nodegroup-members")
            tasks.create_task(self.services.run(), name="dynamiccontroller:range-nodegroup-services")
            await self.members.synced.wait()
            await self.services.synced.wait()
            # Views sent by an earlier cloudcore carry floors below both lists' RVs (topology.py); a change
            # missed by the earlier list of the two comes as an event with a higher RV than the base.
            self.index.base_floor = min(parse_rv(self.members.rv), parse_rv(self.services.rv))
            self.ready.set()
            log.info("endpoint filter ready", groups=len(self.index.nodes_by_group),
                     annotated_services=len(self.index.annotated))

    async def wait_ready(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            return False
        return True

    def view(self, kind: Kind, obj: Object, node: str) -> Object:
        return self.views.view(kind.type, obj, node) if is_endpoint_kind(kind) else obj

    async def _on_member(self, event: Event) -> None:
        group = group_label(event.obj) if event.type in (EventType.ADDED, EventType.MODIFIED) else ""
        move = self.index.set_node_group(event.key, group, rv_number(event.obj))
        if move is not None and self.ready.is_set():
            log.v(2).info("node group changed", node=move.node, old=move.old, new=move.new)
            await self._on_change(move)

    async def _on_service(self, event: Event) -> None:
        annotated = event.type in (EventType.ADDED, EventType.MODIFIED)
        service = (namespace_of(event.obj), name_of(event.obj))
        if self.index.set_service(service, annotated, rv_number(event.obj)) and self.ready.is_set():
            log.v(2).info("service topology changed", service=f"{service[0]}/{service[1]}", annotated=annotated)
            await self._on_change(service)
