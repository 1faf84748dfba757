"""The Edged module (group `edged`): registers the node with the cloud and keeps its status current.

Registration (`insert` of `<registerNodeNamespace>/node/<name>` with the v1.Node) is a request through
MetaManager, only possible while connected (as upstream); it is retried with back-off until the cloud
answers "OK". The status (`nodestatus` update, NodeStatusRequest) goes every
nodeStatusUpdateFrequency, and at once whenever the cloud connection comes back, through EdgeHub's
outbox: the latest one waits out a disconnect, so the node is Ready again as soon as the link is.

Pods (with a CRI client): MetaManager hands every stored pod insert/update/delete to the `edged` group;
a PodManager runs one worker per pod (edgecore.edged.pods). At start the pods of this node stored in
SQLite are loaded, so they keep running after an edgecore restart without the cloud, and the workers
adopt the containers still running (found by kubelet's labels). Pod status goes up as `podstatus`
updates through MetaManager; a pod the cloud deleted is confirmed gone with a `pod` delete (its UID).
Once the stored pods are loaded, and every minute after, what the runtime and the kubelet root hold of
pods edged does not know is removed (edgecore.edged.orphans).

The node's Lease is renewed every 10 s while connected (edgecore.edged.lease).

Events (edgecore.edged.events), with `modules.edged.reportEvent: true` (upstream's key; false by
default, as upstream, and then no event is recorded or sent): the pod workers record kubelet's pod
events into one EventRecorder, which never blocks them; its task sends each as `insert`/`update` of
`<ns>/event/<name>` (a v1.Event) through MetaManager while the cloud is connected, at most
eventRecordQPS per second, and waits for the cloud's answer (`EVENT_REPLY_TIMEOUT`): a `response`
settles it (the cloud ACKs the events it drops as bad input too); no answer or an `error` (EdgeHub not
connected, the API failing) has it tried again, a few times at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from common.config.base import local_ip
from common.config.edgecore import Edged as EdgedConfig
from common.constants import (
    CLOUD_CONNECTED,
    CLOUD_MODULES,
    RESOURCE_CLOUD_CONNECTION,
    EdgeModule,
    Group,
    Op,
    ResourceType,
)
from common.errors import BusError, ResourceError
from common.log import get_logger
from common.message import Message
from common.modules import ModuleContext
from common.reliable import ReconnectBackoff
from common.resource import parse_edge_resource
from edgecore.cri import CRIClient
from edgecore.edged import orphans
from edgecore.edged.events import EventRecorder, Outgoing
from edgecore.edged.lease import LeaseRenewer
from edgecore.edged.nodestatus import NodeFacts, node_object, status_request
from edgecore.edged.pods.configs import RuntimeOptions
from edgecore.edged.pods.manager import PodManager
from edgecore.edged.pods.spec import PodSpec, PodSpecError, parse_pod
from edgecore.edged.pods.status import JSON
from edgecore.metamanager.store import MetaStore

log = get_logger("edged")

REGISTER_TIMEOUT: Final = 60.0
EVENT_REPLY_TIMEOUT: Final = 10.0
_OK: Final = "OK"


class EdgedModule:
    name = EdgeModule.EDGED
    group = Group.EDGED

    def __init__(self, config: EdgedConfig, cri: CRIClient | None = None, store: MetaStore | None = None,
                 options: RuntimeOptions | None = None) -> None:
        self.config = config
        self.cri = cri
        self.store = store
        self.options = options or RuntimeOptions(root_dir=Path(config.root_directory))
        self.pods: PodManager | None = None
        kubelet = config.tailored_kubelet_config
        self.facts = NodeFacts(
            name=config.hostname_override, node_ip=config.node_ip or local_ip(), labels=dict(config.node_labels),
            taints=[t.model_dump(by_alias=True, exclude_none=True) for t in kubelet.register_with_taints or []],
            max_pods=int(kubelet.max_pods), kubelet_port=int(kubelet.read_only_port), started=datetime.now(UTC))
        self.interval = kubelet.node_status_update_frequency.nanoseconds / 1e9 or 10.0
        self.connected = asyncio.Event()
        self.registered = not kubelet.register_node
        self._report_now = asyncio.Event()
        self.lease = LeaseRenewer(self.facts.name, int(kubelet.node_lease_duration_seconds), self.connected)
        self.events = EventRecorder(self.facts.name, qps=float(kubelet.event_record_qps),
                                    burst=int(kubelet.event_burst)) if config.report_event else None

    async def run(self, ctx: ModuleContext) -> None:
        async with asyncio.TaskGroup() as tasks:
            if self.cri is not None:
                self.pods = PodManager(tasks, self.cri, host_ip=self.facts.node_ip,
                                       on_status=lambda spec, status: self._send_pod_status(ctx, spec, status),
                                       on_deleted=lambda spec: self._confirm_deleted(ctx, spec), options=self.options,
                                       objects=self._stored_object, events=self.events)
                self.pods.load(await self._stored_pods())
                tasks.create_task(orphans.sweep_forever(self.cri, self.pods.workers.keys, self.options.root_dir,
                                                       self.facts.name))
                if self.events is not None:
                    tasks.create_task(self.events.run(lambda outgoing: self._send_event(ctx, outgoing),
                                                      self.connected), name="edged:events")
            tasks.create_task(self._listen(ctx))
            tasks.create_task(self._report(ctx))
            tasks.create_task(self.lease.run(ctx))

    async def _listen(self, ctx: ModuleContext) -> None:
        while True:
            message = await ctx.mailbox.get()
            if message.resource != RESOURCE_CLOUD_CONNECTION:
                self._pod_message(message)
                continue
            if message.content == CLOUD_CONNECTED:
                self.connected.set()
                self._report_now.set()
            else:
                self.connected.clear()

    async def _report(self, ctx: ModuleContext) -> None:
        backoff = ReconnectBackoff()
        while not self.registered:
            await self.connected.wait()
            if await self._register(ctx):
                break
            await asyncio.sleep(backoff.next_delay(time.monotonic(), random.random))
        while True:
            await self._send_status(ctx)
            self._report_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), self.interval)

    async def _register(self, ctx: ModuleContext) -> bool:
        node = node_object(self.facts, datetime.now(UTC))
        request = Message.new(source=EdgeModule.EDGED, group=Group.META, operation=Op.INSERT,
                              resource=self._resource(ResourceType.NODE), content=node)
        try:
            reply = await ctx.bus.request(EdgeModule.METAMANAGER, request, REGISTER_TIMEOUT)
        except (TimeoutError, BusError) as exc:
            log.warning("node registration not answered; retrying", node=self.facts.name, msg_id=request.msg_id,
                        err=exc)
            return False
        if reply.content != _OK:
            log.warning("node registration refused; retrying", node=self.facts.name, msg_id=request.msg_id,
                        reason=str(reply.content)[:200])
            return False
        self.registered = True
        log.info("node registered", node=self.facts.name, msg_id=request.msg_id)
        return True

    async def _send_status(self, ctx: ModuleContext) -> None:
        report = Message.new(source=EdgeModule.EDGED, group=Group.META, operation=Op.UPDATE,
                             resource=self._resource(ResourceType.NODESTATUS),
                             content=status_request(self.facts, datetime.now(UTC)))
        try:
            await ctx.bus.send(EdgeModule.METAMANAGER, report)
        except BusError as exc:
            log.warning("node status not handed to metamanager", node=self.facts.name, msg_id=report.msg_id, err=exc)
            return
        log.v(3).info("node status sent", node=self.facts.name, msg_id=report.msg_id)

    def _resource(self, resource_type: str) -> str:
        return f"{self.config.register_node_namespace}/{resource_type}/{self.facts.name}"

    # ---- pods ---------------------------------------------------------------------------------------

    async def _stored_object(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        """A configMap or secret MetaManager stored (`<ns>/<kind>/<name>`), for pod volumes and env."""
        if self.store is None:
            return None
        value = await self.store.get(f"{namespace}/{kind}/{name}")
        if value is None:
            return None
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            log.warning("stored object unreadable", key=f"{namespace}/{kind}/{name}")
            return None
        return obj if isinstance(obj, dict) else None

    async def _stored_pods(self) -> list[PodSpec]:
        if self.store is None:
            return []
        specs = []
        for key, value in await self.store.list_type(ResourceType.POD):
            spec = self._spec_of(key, orjson.loads(value))
            if spec is not None:
                specs.append(spec)
        log.info("stored pods loaded", node=self.facts.name, pods=len(specs))
        return specs

    def _spec_of(self, resource: str, content: object) -> PodSpec | None:
        try:
            spec = parse_pod(content)
        except PodSpecError as exc:
            log.warning("pod not runnable; ignored", resource=resource, err=exc)
            return None
        if spec.node_name and spec.node_name != self.facts.name:
            return None
        return spec

    def _pod_message(self, message: Message) -> None:
        """A pod insert/update/delete MetaManager stored; anything else is not edged's business yet."""
        try:
            resource = parse_edge_resource(message.resource)
        except ResourceError:
            resource = None
        if self.pods is None or resource is None or resource.type != ResourceType.POD:
            log.v(3).info("message ignored by edged", msg_id=message.msg_id, resource=message.resource)
            return
        spec = self._spec_of(message.resource, message.content)
        if message.operation == Op.DELETE:
            worker = self.pods.find(resource.namespace, resource.name)
            if spec is None and worker is not None:
                spec = worker.spec
            if spec is not None:
                spec = dataclasses.replace(spec, deleting=True)
        if spec is not None:
            self.pods.apply(spec)

    async def _send_pod_status(self, ctx: ModuleContext, spec: PodSpec, status: JSON) -> None:
        report = Message.new(source=EdgeModule.EDGED, group=Group.META, operation=Op.UPDATE,
                             resource=f"{spec.namespace}/{ResourceType.PODSTATUS}/{spec.name}",
                             content={"UID": spec.uid, "Name": spec.name, "Status": status})
        await self._to_meta(ctx, report)

    async def _confirm_deleted(self, ctx: ModuleContext, spec: PodSpec) -> None:
        # edgecontroller then deletes the pod with grace 0, preconditioned on this UID.
        done = Message.new(source=EdgeModule.EDGED, group=Group.META, operation=Op.DELETE,
                           resource=f"{spec.namespace}/{ResourceType.POD}/{spec.name}", content=spec.uid)
        await self._to_meta(ctx, done)

    async def _send_event(self, ctx: ModuleContext, outgoing: Outgoing) -> bool:
        """One event to the cloud; True once the cloud answered (it wrote the event, or never will)."""
        request = Message.new(source=EdgeModule.EDGED, group=Group.META, operation=outgoing.operation,
                              resource=f"{outgoing.namespace}/{ResourceType.EVENT}/{outgoing.name}",
                              content=outgoing.event)
        try:
            reply = await ctx.bus.request(EdgeModule.METAMANAGER, request, EVENT_REPLY_TIMEOUT)
        except (TimeoutError, BusError) as exc:
            log.v(2).info("event not answered", event=outgoing.name, msg_id=request.msg_id, err=exc)
            return False
        if reply.operation == Op.ERROR:
            # EdgeHub's refusal (not connected) or the cloud's (the API failed for now): worth another try.
            # The cloud ACKs an event it drops for good, so this never repeats past the recorder's limit.
            log.v(2).info("event refused", event=outgoing.name, msg_id=request.msg_id,
                          by="cloud" if reply.source in CLOUD_MODULES else "edge", reason=str(reply.content)[:200])
            return False
        log.v(4).info("event sent", event=outgoing.name, msg_id=request.msg_id, count=outgoing.count)
        return True

    async def _to_meta(self, ctx: ModuleContext, message: Message) -> None:
        try:
            await ctx.bus.send(EdgeModule.METAMANAGER, message)
        except BusError as exc:
            log.warning("pod message not handed to metamanager", resource=message.resource, err=exc)
