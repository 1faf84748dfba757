"""The cloud's API discovery at the edge: fetched through the dynamiccontroller (our `discover` Application,
which upstream does not have), kept in SQLite, and turned into the remote kinds MetaServer serves.

It is fetched on every connection to the cloud, when a client asks for the discovery documents and the copy
is older than `MAX_AGE`, and when a client names a resource the edge does not know (a CRD created since;
at most once per `MISS_INTERVAL`). Any failure keeps the copy there is, so kubectl resolves the kinds it
knew while the cloud is unreachable, also after an edgecore restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Final

from common.application import DISCOVERY_BUNDLE, DISCOVERY_KEY, Verb
from common.log import get_logger
from edgecore.metaserver.cloud import CloudLink, CloudUnavailable
from edgecore.metaserver.kinds import Kinds
from edgecore.metaserver.state import CacheState

log = get_logger("metaserver")

MAX_AGE: Final = 10.0  # discovery documents served while connected are at most this old (the cloud's TTL)
MISS_INTERVAL: Final = 5.0  # an unknown resource refetches at most this often


class CloudDiscovery:
    def __init__(self, link: CloudLink, state: CacheState, kinds: Kinds) -> None:
        self._link = link
        self._state = state
        self._kinds = kinds
        self._fetched: float | None = None  # monotonic time of the last attempt
        self._lock = asyncio.Lock()  # one fetch at a time; the others wait for it and use its result
        self._generation = 0  # bumped whenever the served kinds are replaced
        kinds.use_discovery(state.discovery)

    async def refresh(self, max_age: float) -> bool:
        """Fetch unless an attempt was made within `max_age` s; True when the served kinds were replaced
        meanwhile (by this call, or by the one it waited for)."""
        if not self._link.connected:
            return False
        generation = self._generation
        async with self._lock:
            if self._fetched is None or time.monotonic() - self._fetched >= max_age:
                await self._fetch()
        return self._generation != generation

    async def _fetch(self) -> None:
        self._fetched = time.monotonic()  # failures count too: a broken cloud is not asked on every request
        try:
            answer = await self._link.ask(Verb.DISCOVER, DISCOVERY_KEY)
        except CloudUnavailable as exc:
            log.v(2).info("cloud discovery not fetched; serving the cached copy", reason=str(exc))
            return
        bundle = answer.body
        if not answer.approved or not _is_bundle(bundle):
            log.warning("cloud discovery refused; serving the cached copy", status=answer.status,
                        reason=answer.reason or answer.error.get("message"))
            return
        self._kinds.use_discovery(bundle)
        self._generation += 1
        await self._state.save_discovery(bundle)
        log.v(2).info("cloud discovery fetched", groups=len(bundle["groups"]))


def _is_bundle(body: Any) -> bool:
    return (isinstance(body, Mapping) and body.get("kind") == DISCOVERY_BUNDLE and isinstance(body.get("groups"), list)
            and isinstance(body.get("resources"), list))
