"""The cloud's API discovery for edge MetaServers: the answer to our `discover` Application (upstream has none).

An edge MetaServer serves kinds its node does not sync through this controller, and kubectl must resolve
them there, also while the edge is offline; so the edge fetches the cloud's discovery once per connection
(and when a client asks for a kind it does not know) and keeps it in SQLite. One Application answers it
all, as a `DiscoveryBundle`:

    {"kind": "DiscoveryBundle", "groups": [<APIGroup>...], "resources": [<APIResourceList>...]}

`groups` is the `/apis` APIGroupList's groups and `resources` the legacy resource list of `/api/v1` and
of every group version, each fetched from the API server (at most `FETCH_CONCURRENCY` at once). A group
version whose list cannot be read (an aggregated API that is down) is left out of both, so the edge never
advertises a version it cannot describe. Bundles are shared for `TTL` seconds: a fleet reconnecting at
once costs the API server one discovery walk.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON
from common.application import DISCOVERY_BUNDLE
from common.log import get_logger

log = get_logger("dynamiccontroller")

TTL: Final = 10.0
FETCH_CONCURRENCY: Final = 8


class Discovery:
    """The current bundle, fetched at most once per `ttl` (concurrent askers share one fetch)."""

    def __init__(self, client: KubeJSON, ttl: float = TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._bundle: dict[str, Any] | None = None
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def bundle(self) -> dict[str, Any]:
        """The bundle; KubeError when the API server cannot be read."""
        async with self._lock:
            if self._bundle is None or time.monotonic() - self._fetched > self.ttl:
                self._bundle = await fetch(self.client)
                self._fetched = time.monotonic()
            return self._bundle


async def fetch(client: KubeJSON) -> dict[str, Any]:
    group_list = await client.get("/apis")
    groups = [g for g in group_list.get("groups") or [] if isinstance(g, dict) and g.get("name")]
    paths = ["/api/v1"] + [f"/apis/{v['groupVersion']}" for g in groups for v in g.get("versions") or []
                           if isinstance(v, dict) and v.get("groupVersion")]
    slots = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def read(path: str) -> dict[str, Any] | KubeError | None:
        # errors are returned, not raised: a TaskGroup would wrap them in an ExceptionGroup
        async with slots:
            try:
                return await client.get(path)
            except KubeError as exc:
                if exc.unreachable:
                    return exc
                log.warning("group version left out of the edge's discovery", path=path, err=exc)
                return None

    async with asyncio.TaskGroup() as tasks:
        reads = [tasks.create_task(read(path)) for path in paths]
    lists = []
    for found in (r.result() for r in reads):
        if isinstance(found, KubeError):
            raise found
        if found is not None:
            lists.append(found)
    described = {str(found.get("groupVersion")) for found in lists}
    kept = [found for found in (_described(g, described) for g in groups) if found is not None]
    return {"kind": DISCOVERY_BUNDLE, "groups": kept, "resources": lists}


def _described(group: dict[str, Any], described: set[str]) -> dict[str, Any] | None:
    """The group with only the versions whose resource lists were read; None when none was."""
    versions = [v for v in group.get("versions") or [] if isinstance(v, dict) and v.get("groupVersion") in described]
    if not versions:
        return None
    preferred = group.get("preferredVersion")
    if not isinstance(preferred, dict) or preferred not in versions:
        preferred = versions[0]
    return {**group, "versions": versions, "preferredVersion": preferred}
