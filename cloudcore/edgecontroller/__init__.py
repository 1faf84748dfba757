"""cloudcore's EdgeController: pods, ConfigMaps, Secrets, Services and Nodes down to edge nodes; node
registration, node and pod status, leases, queries and pod deletion up from them.

Layout: `kinds` (the kinds and object helpers), `kubeapi` (JSON over kubernetes_asyncio), `informer`
(list + watch caches), `refs` and `planner` (who gets what; pure), `messages` (message shapes),
`downstream` (informers to CloudHub), `nodes`, `pods`, `queries` (edge requests), `upstream` (their
dispatch), `sender` (the bus to CloudHub), `module` (the module itself).
"""

from cloudcore.edgecontroller.module import EdgeControllerModule

__all__ = ["EdgeControllerModule"]
