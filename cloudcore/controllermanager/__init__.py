"""cloudcore's controllerManager: NodeGroup and EdgeApplication controllers (apps.kubeedge.io/v1alpha1).

Layout: `keys` (exact upstream strings and kinds), `imageref` and `overriders` (per-target Deployment
changes; pure), `membership` (NodeGroup membership and status; pure), `render` (an EdgeApplication's
objects and problems; pure), `workqueue` and `workers` (keyed queue with back-off), `discovery`
(apiVersion/kind to REST path), `events` (core/v1 Events), `nodegroup` and `edgeapplication` (the two
controllers: informers and API writes), `module` (the cloudcore module).
"""

from cloudcore.controllermanager.module import ControllerManagerModule

__all__ = ["ControllerManagerModule"]
