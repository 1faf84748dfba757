"""The `default/kubernetes` Service and its Endpoints and EndpointSlice, as kube-apiserver keeps them.

In-cluster clients find the API server through this Service, and KubeEdge rewrites its EndpointSlice
for edge nodes so that their pods reach the edge's MetaServer (cloudcore/edgecontroller/filters.py):
without these objects neither works. Made at start when missing, and their address corrected when the
control plane now listens elsewhere; never deleted.
"""

from __future__ import annotations

from typing import Any, Final

from cloudcore.controlplane.api import errors
from cloudcore.controlplane.api.objects import ObjectAPI, WriteOptions
from cloudcore.controlplane.store.types import Key

NAME: Final = "kubernetes"
NAMESPACE: Final = "default"
CLUSTER_IP: Final = "10.96.0.1"  # the first address of the service range, as kube-apiserver reserves it
_LABELS: Final = {"component": "apiserver", "provider": "kubernetes"}


def _objects(address: str, port: int) -> list[tuple[tuple[str, str, str], dict[str, Any]]]:
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": dict(_LABELS)}
    return [
        (("", "v1", "services"), {"metadata": meta, "spec": {
            "type": "ClusterIP", "clusterIP": CLUSTER_IP, "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}),
        (("", "v1", "endpoints"), {"metadata": meta, "subsets": [
            {"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}),
        (("discovery.k8s.io", "v1", "endpointslices"), {
            "metadata": {**meta, "labels": {**_LABELS, "kubernetes.io/service-name": NAME}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
    ]


async def ensure(objects: ObjectAPI, address: str, port: int) -> None:
    for (group, version, plural), body in _objects(address, port):
        info = objects.registry.get(group, version, plural)
        assert info is not None, plural
        stored = objects.store.get(Key(info.gr, NAMESPACE, NAME))
        if stored is None:
            try:
                await objects.create(info, NAMESPACE, body, WriteOptions())
            except errors.APIError as exc:
                if exc.code != 409:
                    raise
            continue
        current = stored.decode()
        if plural != "services" and {k: current.get(k) for k in body if k != "metadata"} != \
                {k: v for k, v in body.items() if k != "metadata"}:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await objects.update(info, NAMESPACE, NAME, body, WriteOptions())
