"""Upstream KubeEdge names: operations, groups, modules, resource types and resource-string tokens.

Values are upstream's wire strings (ref/protocol.md section 2). The route fields of a message stay
plain `str`, so a name we do not list still passes through unchanged; these constants only spare
callers from typing the strings twice.
"""

from __future__ import annotations

from typing import Final


class Op:
    """Route operations (beehive model, CloudHub, edge, tasks, viaduct control)."""

    INSERT: Final = "insert"
    DELETE: Final = "delete"
    QUERY: Final = "query"
    UPDATE: Final = "update"
    PATCH: Final = "patch"
    UPLOAD: Final = "upload"
    RESPONSE: Final = "response"
    ERROR: Final = "error"
    KEEPALIVE: Final = "keepalive"
    CONNECTED: Final = "connected"
    DISCONNECTED: Final = "disconnected"
    GET: Final = "get"
    GET_RESULT: Final = "get_result"
    LIST: Final = "list"
    DETAIL: Final = "detail"
    DELTA: Final = "delta"
    DOCUMENT: Final = "document"
    UPDATED: Final = "updated"
    DELETED: Final = "deleted"
    CONNECT: Final = "connect"
    SUBSCRIBE: Final = "subscribe"
    UNSUBSCRIBE: Final = "unsubscribe"
    MESSAGE: Final = "message"
    PUBLISH: Final = "publish"
    START: Final = "start"
    STOP: Final = "stop"
    UPGRADE: Final = "upgrade"
    PREPULL: Final = "prepull"
    APPLICATION_RESPONSE: Final = "applicationResponse"
    # viaduct control messages, answered by the transport itself
    HEADER: Final = "header"
    CONFIG: Final = "config"
    PING: Final = "ping"
    PONG: Final = "pong"


class Group:
    """Route groups on the wire and edge module groups."""

    RESOURCE: Final = "resource"
    FUNC: Final = "func"
    TWIN: Final = "twin"
    USER: Final = "user"
    META: Final = "meta"
    HUB: Final = "hub"
    BUS: Final = "bus"
    EDGED: Final = "edged"
    EDGESTREAM: Final = "edgestream"


class CloudModule:
    CLOUDHUB: Final = "cloudhub"
    EDGECONTROLLER: Final = "edgecontroller"
    DEVICECONTROLLER: Final = "devicecontroller"
    SYNCCONTROLLER: Final = "synccontroller"
    DYNAMICCONTROLLER: Final = "dynamiccontroller"
    CLOUDSTREAM: Final = "cloudStream"
    ROUTER: Final = "router"
    TASKMANAGER: Final = "taskmanager"
    NODEUPGRADEJOBCONTROLLER: Final = "nodeupgradejobcontroller"
    POLICYCONTROLLER: Final = "policycontroller"


CLOUD_MODULES: Final = frozenset(
    value for key, value in vars(CloudModule).items() if not key.startswith("_") and isinstance(value, str)
)


class EdgeModule:
    # the edge hub keeps upstream's module name "websocket" even when QUIC carries the traffic
    EDGEHUB: Final = "websocket"
    EDGED: Final = "edged"
    EVENTBUS: Final = "eventbus"
    SERVICEBUS: Final = "servicebus"
    EDGESTREAM: Final = "edgestream"
    TWIN: Final = "twin"
    METAMANAGER: Final = "metamanager"


class ResourceType:
    POD: Final = "pod"
    EVENT: Final = "event"
    CONFIGMAP: Final = "configmap"
    SERVICEACCOUNTTOKEN: Final = "serviceaccounttoken"
    SECRET: Final = "secret"
    NODE: Final = "node"
    PODLIST: Final = "podlist"
    PODSTATUS: Final = "podstatus"
    PODPATCH: Final = "podpatch"
    NODESTATUS: Final = "nodestatus"
    NODEPATCH: Final = "nodepatch"
    RULE: Final = "rule"
    RULEENDPOINT: Final = "ruleendpoint"
    RULESTATUS: Final = "rulestatus"
    LEASE: Final = "lease"
    SERVICEACCOUNTACCESS: Final = "serviceaccountaccess"
    CERTIFICATESIGNINGREQUEST: Final = "certificatesigningrequest"
    K8S_CA: Final = "k8s/ca.crt"
    SERVICE: Final = "service"
    ENDPOINTS: Final = "endpoints"
    ENDPOINTSLICE: Final = "endpointslice"
    DEVICE: Final = "device"
    DEVICEMODEL: Final = "devicemodel"
    MEMBERSHIP: Final = "membership"


# Namespace token for cluster-scoped objects, and the one upstream uses in the node-delete message.
NAMESPACE_CLUSTER_SCOPED: Final = "null"
NAMESPACE_NODE_DELETE: Final = "namespace"

# Resource of the edge-internal cloud connection event and its two contents.
RESOURCE_CLOUD_CONNECTION: Final = "node/connection"
CLOUD_CONNECTED: Final = "cloud_connected"
CLOUD_DISCONNECTED: Final = "cloud_disconnected"

# Cloud-internal header type of an edgecontroller update that changed only what the edge reported itself
# (a pod's status): CloudHub records it as acknowledged instead of sending it when it can (NodeQueue.advance).
# Never on the wire: CloudHub clears it before queueing such a message for sending.
HEADER_EDGE_HAS_IT: Final = "kubeedge-py/edge-has-it"

DEFAULT_PROJECT_ID: Final = "e632aba927ea4ac2b575ec1603d56f10"
SYSTEM_NAMESPACE: Final = "kubeedge"

# Node labels the edge kubelet sets at registration (ref/config.md section 6); cloud components tell
# edge nodes by the first one.
LABEL_EDGE_NODE: Final = "node-role.kubernetes.io/edge"
LABEL_AGENT_NODE: Final = "node-role.kubernetes.io/agent"
# Where node Leases live (Kubernetes convention; the edge sends `kube-node-lease/lease/<node>`).
NODE_LEASE_NAMESPACE: Final = "kube-node-lease"
