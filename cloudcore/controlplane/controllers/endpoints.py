"""Endpoints and EndpointSlice controller: what a Service with a selector points at.

Owns, for every Service with a spec.selector, the Endpoints object of the same name and the
EndpointSlices labelled `kubernetes.io/service-name=<svc>` and
`endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io`. Pods count when their
labels match the selector, they have status.podIP (IPv4) and they have not finished. Each service
port's targetPort is resolved per pod (a number as is, a name through the pod's container ports
with that name and protocol; a pod without it is left out of that port).

Endpoints: subsets grouping pods by their resolved ports, ready pods in `addresses`, not-ready
ones in `notReadyAddresses`, terminating pods left out (publishNotReadyAddresses makes every
non-terminating pod ready); beyond 1000 addresses it is truncated (ready ones kept first) and
annotated `endpoints.kubernetes.io/over-capacity: truncated`, as kube does. EndpointSlices
(discovery.k8s.io/v1, addressType IPv4, at most 100 endpoints each, named by generateName `<svc>-`,
owned by the Service so the garbage collector deletes them with it): endpoints with their address,
ready/serving/terminating conditions, nodeName and targetRef; an endpoint stays in the slice it is
in, new ones fill free room first; a Service with no endpoints keeps one empty slice. Pod changes
are coalesced briefly and only changed objects are written; the Endpoints object goes when its
Service does.

What it must never do: touch Endpoints of Services without a selector (someone else manages
them) or of ExternalName Services, or slices another controller manages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from cloudcore.controlplane.api.objects import ObjectAPI
from cloudcore.controlplane.api.selectors import from_match_labels
from cloudcore.controlplane.controllers import kit
from cloudcore.controlplane.controllers.kit import Controller, Informers, PodSummary, Snapshot
from cloudcore.controlplane.store.types import Key, StoredObject

SLICE_GR: Final = "endpointslices.discovery.k8s.io"
SERVICE_NAME: Final = "kubernetes.io/service-name"
MANAGED_BY: Final = "endpointslice.kubernetes.io/managed-by"
MANAGER: Final = "endpointslice-controller.k8s.io"
HEADLESS: Final = "service.kubernetes.io/headless"
MAX_ENDPOINTS_PER_SLICE: Final = 100
MAX_ENDPOINTS_ADDRESSES: Final = 1000
OVER_CAPACITY: Final = "endpoints.kubernetes.io/over-capacity"
# Pod changes are gathered this long before the endpoints are rewritten (one write for a burst).
COALESCE: Final = 0.1

Port = tuple[str, int, str, str]  # name, resolved port, protocol, appProtocol ("" when unset)


def resolve_ports(service: Mapping[str, Any], pod: PodSummary) -> tuple[Port, ...]:
    """The service's ports as this pod serves them (ports whose named targetPort the pod lacks are left out)."""
    resolved: list[Port] = []
    for port in (service.get("spec") or {}).get("ports") or ():
        protocol = port.get("protocol") or "TCP"
        target = port.get("targetPort", port.get("port"))
        number: int | None = None
        if isinstance(target, int):
            number = target
        elif isinstance(target, str) and target.isdigit():
            number = int(target)
        elif isinstance(target, str):
            number = next((n for name, n, proto in pod.ports if name == target and proto == protocol), None)
        if number is not None:
            resolved.append((str(port.get("name") or ""), number, protocol, str(port.get("appProtocol") or "")))
    return tuple(resolved)


def _port_objects(ports: tuple[Port, ...], *, slice_form: bool) -> list[dict[str, Any]]:
    out = []
    for name, number, protocol, app_protocol in ports:
        entry: dict[str, Any] = {"port": number, "protocol": protocol}
        if name or slice_form:
            entry["name"] = name
        if app_protocol:
            entry["appProtocol"] = app_protocol
        out.append(entry)
    return out


def _target_ref(pod: PodSummary) -> dict[str, Any]:
    return {"kind": "Pod", "namespace": pod.key.namespace, "name": pod.key.name, "uid": pod.uid}


def _hostname(service: Mapping[str, Any], pod: PodSummary) -> str:
    return pod.hostname if pod.hostname and pod.subdomain == service["metadata"]["name"] else ""


def _eligible(pod: PodSummary) -> bool:
    return bool(pod.ip) and ":" not in pod.ip and not pod.terminal


def build_subsets(service: Mapping[str, Any], pods: Iterable[PodSummary]) -> list[dict[str, Any]]:
    """Endpoints.subsets for these pods (already selected), packed by identical port lists."""
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    groups: dict[tuple[Port, ...], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    has_ports = bool((service.get("spec") or {}).get("ports"))
    for pod in pods:
        if not _eligible(pod) or pod.deleting:
            continue
        ports = resolve_ports(service, pod)
        if has_ports and not ports:
            continue
        address: dict[str, Any] = {"ip": pod.ip}
        hostname = _hostname(service, pod)
        if hostname:
            address["hostname"] = hostname
        if pod.node:
            address["nodeName"] = pod.node
        address["targetRef"] = _target_ref(pod)
        ready, not_ready = groups.setdefault(ports, ([], []))
        (ready if publish or pod.ready else not_ready).append(address)
    budget = MAX_ENDPOINTS_ADDRESSES
    for which in (0, 1):  # over capacity: ready addresses first, then not-ready ones, like kube
        for ports in sorted(groups):
            addresses = groups[ports][which]
            addresses.sort(key=_address_order)
            del addresses[max(0, budget):]
            budget -= len(addresses)
    subsets = []
    for ports in sorted(groups):
        ready, not_ready = groups[ports]
        if not ready and not not_ready:
            continue
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if ports:
            subset["ports"] = _port_objects(ports, slice_form=False)
        subsets.append(subset)
    return subsets


def _address_order(address: Mapping[str, Any]) -> tuple[str, str]:
    return str(address.get("ip", "")), str((address.get("targetRef") or {}).get("name", ""))


def build_slice_groups(service: Mapping[str, Any], pods: Iterable[PodSummary]
                       ) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(ports, endpoints) for each distinct resolved port list, endpoints in address order."""
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    has_ports = bool((service.get("spec") or {}).get("ports"))
    groups: dict[tuple[Port, ...], list[dict[str, Any]]] = {}
    for pod in pods:
        if not _eligible(pod):
            continue
        ports = resolve_ports(service, pod)
        if has_ports and not ports:
            continue
        terminating = pod.deleting
        serving = publish or pod.ready
        endpoint: dict[str, Any] = {"addresses": [pod.ip],
                                    "conditions": {"ready": serving and not terminating, "serving": serving,
                                                   "terminating": terminating}}
        hostname = _hostname(service, pod)
        if hostname:
            endpoint["hostname"] = hostname
        if pod.node:
            endpoint["nodeName"] = pod.node
        endpoint["targetRef"] = _target_ref(pod)
        groups.setdefault(ports, []).append(endpoint)
    return [(_port_objects(ports, slice_form=True),
             sorted(groups[ports], key=lambda e: (e["addresses"][0], e["targetRef"]["name"])))
            for ports in sorted(groups)]


SlicePlan = list[tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]]


def plan_slices(existing: list[dict[str, Any]], groups: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]
                ) -> tuple[SlicePlan, list[dict[str, Any]]]:
    """Which slices to keep (with which endpoints), create (None) and delete, moving as little as possible.

    Like kube's reconciler: an endpoint stays in the slice it is in while that slice still has its
    ports; new endpoints fill slices with room, then new slices of at most 100. A service with no
    endpoints keeps one empty slice.
    """
    remaining = sorted(existing, key=lambda s: s["metadata"]["name"])
    plan: SlicePlan = []
    for ports, endpoints in groups:
        wanted = {_endpoint_id(e): e for e in endpoints}
        mine = [s for s in remaining if (s.get("ports") or []) == ports]
        remaining = [s for s in remaining if (s.get("ports") or []) != ports]
        placed: set[str] = set()
        entries: list[tuple[dict[str, Any] | None, list[dict[str, Any]]]] = []
        for current in mine:
            kept = []
            for endpoint in current.get("endpoints") or ():
                ident = _endpoint_id(endpoint)
                if ident in wanted and ident not in placed:
                    kept.append(wanted[ident])
                    placed.add(ident)
            entries.append((current, kept))
        leftover = [e for ident, e in wanted.items() if ident not in placed]
        for _, kept in entries:
            room = MAX_ENDPOINTS_PER_SLICE - len(kept)
            if room > 0 and leftover:
                kept.extend(leftover[:room])
                leftover = leftover[room:]
        for start in range(0, len(leftover), MAX_ENDPOINTS_PER_SLICE):
            entries.append((None, leftover[start:start + MAX_ENDPOINTS_PER_SLICE]))
        for slice_obj, kept in entries:
            if kept:
                plan.append((slice_obj, ports, kept))
            elif slice_obj is not None:
                remaining.append(slice_obj)
    if not plan:  # the placeholder: one slice without endpoints
        keep = min(remaining, key=lambda s: s["metadata"]["name"]) if remaining else None
        remaining = [s for s in remaining if s is not keep]
        plan.append((keep, [], []))
    return plan, remaining


def _endpoint_id(endpoint: Mapping[str, Any]) -> str:
    ref = endpoint.get("targetRef") or {}
    return str(ref.get("uid") or ref.get("name") or (endpoint.get("addresses") or [""])[0])


def _endpoint_view(pod: PodSummary) -> tuple[Any, ...]:
    """What of a pod the endpoints depend on (a change to none of it does not wake the controller)."""
    return (pod.labels, pod.ip, pod.ready, pod.terminal, pod.deleting, pod.node, pod.hostname, pod.subdomain,
            pod.ports)


class EndpointsController(Controller):
    name = "endpointslice-controller"
    workers = 2

    def __init__(self, objects: ObjectAPI, informers: Informers, **kwargs: Any) -> None:
        super().__init__(objects, informers, **kwargs)
        self.ep_info = self.info("", "v1", "endpoints")
        self.slice_info = self.info("discovery.k8s.io", "v1", "endpointslices")
        self.services = self.watch("services", kit.same_key)
        self.services.add_index("namespace", kit.namespace_index)
        self.pods = self.watch("pods", self._pod_changed, coalesce=COALESCE)
        self.pods.add_index("label", _label_index)
        self.summaries = kit.pod_summaries(self.pods)
        self.endpoints = self.watch("endpoints", lambda old, new: [Key("services", k.namespace, k.name)
                                                                    for k in kit.same_key(old, new)])
        self.slices = self.watch(SLICE_GR, self._slice_changed)
        self.slices.add_index("service", _slice_service)
        self._selectors: dict[Key, tuple[int, dict[str, str] | None]] = {}

    def _selector(self, stored: StoredObject) -> dict[str, str] | None:
        cached = self._selectors.get(stored.key)
        if cached is not None and cached[0] == stored.rv:
            return cached[1]
        selector = (stored.decode().get("spec") or {}).get("selector") or None
        self._selectors[stored.key] = (stored.rv, selector)
        return selector

    def _pod_changed(self, old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        if old is not None and new is not None and \
                _endpoint_view(self.summaries.of(old)) == _endpoint_view(self.summaries.of(new)):
            return ()
        keys: set[Key] = set()
        for snapshot in (old, new):
            if snapshot is None:
                continue
            for stored in self.services.by_index("namespace", snapshot.key.namespace):
                selector = self._selector(stored)
                if selector and from_match_labels(selector).matches(snapshot.stored.labels):
                    keys.add(stored.key)
        return keys

    @staticmethod
    def _slice_changed(old: Snapshot | None, new: Snapshot | None) -> Iterable[Key]:
        keys = set()
        for snapshot in (old, new):
            if snapshot is not None:
                service = next(iter(_slice_service(snapshot)), None)
                if service is not None:
                    keys.add(Key("services", snapshot.key.namespace, service.partition("/")[2]))
        return keys

    async def reconcile(self, key: Key) -> float | None:
        stored = self.services.get(key)
        if stored is None:
            self._selectors.pop(key, None)
            existing = self.endpoints.get(Key("endpoints", key.namespace, key.name))
            if existing is not None:
                await self.delete(self.ep_info, key.namespace, key.name, uid=existing.uid)
            return None
        service = stored.decode()
        selector = self._selector(stored)
        if not selector or service["metadata"].get("deletionTimestamp") or \
                (service.get("spec") or {}).get("type") == "ExternalName":
            return None
        matcher = from_match_labels(selector)
        # Candidates: the pods with the rarest of the selector's label pairs; then the full match.
        candidates = min((self.pods.by_index("label", f"{key.namespace}/{k}={v}") for k, v in selector.items()),
                         key=len)
        found = (self.summaries.get(s.key) for s in candidates if matcher.matches(s.labels))
        pods = [p for p in found if p is not None]
        await self._sync_endpoints(service, pods)
        await self._sync_slices(service, pods)
        return None

    def _labels(self, service: dict[str, Any]) -> dict[str, str]:
        labels = dict(service["metadata"].get("labels") or {})
        if (service.get("spec") or {}).get("clusterIP") == "None":
            labels[HEADLESS] = ""
        return labels

    async def _sync_endpoints(self, service: dict[str, Any], pods: list[PodSummary]) -> None:
        meta = service["metadata"]
        subsets = build_subsets(service, pods)
        labels = self._labels(service)
        truncated = sum(1 for p in pods if _eligible(p) and not p.deleting) > MAX_ENDPOINTS_ADDRESSES
        stored = self.endpoints.get(Key("endpoints", meta["namespace"], meta["name"]))
        current: dict[str, Any] = stored.decode() if stored is not None else {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
        annotations = dict(current["metadata"].get("annotations") or {})
        if truncated:
            annotations[OVER_CAPACITY] = "truncated"
        else:
            annotations.pop(OVER_CAPACITY, None)
        if stored is not None and (current.get("subsets") or []) == subsets and \
                (current["metadata"].get("labels") or {}) == labels and \
                (current["metadata"].get("annotations") or {}) == annotations:
            return
        current["metadata"]["labels"] = labels
        if annotations:
            current["metadata"]["annotations"] = annotations
        else:
            current["metadata"].pop("annotations", None)
        if subsets:
            current["subsets"] = subsets
        else:
            current.pop("subsets", None)
        if stored is None:
            await self.create(self.ep_info, meta["namespace"], current)
        else:
            await self.update(self.ep_info, current)

    async def _sync_slices(self, service: dict[str, Any], pods: list[PodSummary]) -> None:
        meta = service["metadata"]
        namespace = meta["namespace"]
        labels = {**self._labels(service), SERVICE_NAME: meta["name"], MANAGED_BY: MANAGER}
        owner = {"apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta["uid"],
                 "controller": True, "blockOwnerDeletion": True}
        existing = [s.decode() for s in self.slices.by_index("service", f"{namespace}/{meta['name']}")]
        plan, stale = plan_slices(existing, build_slice_groups(service, pods))
        for current, ports, endpoints in plan:
            if current is None:
                body: dict[str, Any] = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                                        "metadata": {"generateName": f"{meta['name']}-", "namespace": namespace,
                                                     "labels": labels, "ownerReferences": [owner]},
                                        "addressType": "IPv4", "endpoints": endpoints}
                _set_ports(body, ports)
                await self.create(self.slice_info, namespace, body)
            elif _slice_content(current) != (ports, endpoints, labels, [owner]):
                current["metadata"]["labels"] = labels
                current["metadata"]["ownerReferences"] = [owner]
                current["addressType"] = "IPv4"
                current["endpoints"] = endpoints
                _set_ports(current, ports)
                await self.update(self.slice_info, current)
        for gone in stale:
            await self.delete(self.slice_info, namespace, gone["metadata"]["name"], uid=gone["metadata"]["uid"])


def _set_ports(body: dict[str, Any], ports: list[dict[str, Any]]) -> None:
    if ports:
        body["ports"] = ports
    else:
        body.pop("ports", None)


def _slice_content(obj: dict[str, Any]) -> tuple[Any, ...]:
    return (obj.get("ports") or [], obj.get("endpoints") or [], obj["metadata"].get("labels") or {},
            obj["metadata"].get("ownerReferences") or [])


def _label_index(snapshot: Snapshot) -> Iterable[str]:
    """Index function: `<namespace>/<key>=<value>` for each label of a pod."""
    namespace = snapshot.key.namespace
    return [f"{namespace}/{k}={v}" for k, v in snapshot.stored.labels.items()]


def _slice_service(snapshot: Snapshot) -> Iterable[str]:
    """Index function: `<namespace>/<service>` of the slices this controller manages."""
    labels = snapshot.stored.labels
    if labels.get(MANAGED_BY) != MANAGER or not labels.get(SERVICE_NAME):
        return ()
    return (f"{snapshot.key.namespace}/{labels[SERVICE_NAME]}",)

