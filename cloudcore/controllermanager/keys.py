"""The exact strings and kinds of apps.kubeedge.io/v1alpha1 (ref/devices-groups.md 6.1); no logic.

Changing any value here breaks compatibility with upstream clients, nodes and manifests.
"""

from __future__ import annotations

from typing import Final

from cloudcore.edgecontroller.kinds import Kind

GROUP: Final = "apps.kubeedge.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

BELONGING_TO: Final = "apps.kubeedge.io/belonging-to"  # node label, and the generated pods' nodeSelector
FINALIZER: Final = "apps.kubeedge.io/nodegroup-controller"
SERVICE_TOPOLOGY: Final = "apps.kubeedge.io/service-topology"
RANGE_NODEGROUP: Final = "range-nodegroup"
LAST_APPLIED: Final = "apps.kubeedge.io/last-applied-template"
LAST_CONTAINED: Final = "apps.kubeedge.io/last-contained-resources"

# NodeGroup status values
READY: Final = "Ready"
NOT_READY: Final = "NotReady"
UNKNOWN: Final = "Unknown"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
NODE_MISSING_REASON: Final = "node does not exist"

# EdgeApplication workloadStatus conditions (a single string upstream)
PROCESSING: Final = "Processing"
AVAILABLE: Final = "Available"

NODEGROUP: Final = Kind("nodegroup", "NodeGroup", GROUP, VERSION, "nodegroups", namespaced=False)
EDGEAPPLICATION: Final = Kind("edgeapplication", "EdgeApplication", GROUP, VERSION, "edgeapplications")
DEPLOYMENT: Final = Kind("deployment", "Deployment", "apps", "v1", "deployments")
EVENT: Final = Kind("event", "Event", "", "v1", "events")


def already_belongs_reason(node: str, group: str) -> str:
    """Upstream's selectionStatusReason for a node another group holds."""
    return f"node {node} has already belonged to NodeGroup {group}"
