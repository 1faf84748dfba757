"""Which cloudcore serves which edge node: one coordination.k8s.io/v1 Lease per node (docs/ha.md).

Owns the node leases of this instance (`cloudcore-node-<node>` in `namespace`, holderIdentity = this
instance's id): acquiring one before a node's session starts, renewing them while the sessions live
(one conditional write per node per renew period, spread by jitter), releasing one (holder emptied,
the object kept) when a session ends, and telling CloudHub when one is lost. It never touches sessions,
queues or ObjectSync: CloudHub asks, and closes the session it is told to.

Two layers, as everywhere in cloudhub: `LeaseBook` decides (plain class, injected clocks, no I/O;
tests/unit/test_ownership.py) and `NodeOwnership` is the thin asyncio shell around the API.

Rules:
- A node's lease may be taken when it does not exist, when its holder is empty (released) or this
  instance, or when it has expired: its renewTime + leaseDurationSeconds is past by the wall clock
  (instances need synchronised clocks, as Kubernetes node leases do), or this instance has seen the
  same resourceVersion for a whole lease duration (so a holder whose clock runs behind cannot keep it
  forever). Every write is conditional on the resourceVersion read: of two instances racing, one wins.
- Held by another live instance: the connection is refused (CloudHub closes it with
  `TRY_ANOTHER` in the reason) and the edge dials its next server. Accepting and waiting was
  rejected: the edge would announce itself connected while nothing flows.
- Continuity: the book remembers the resourceVersion of its last write per node. If the lease still
  has it when the node comes back, nobody else served the node meanwhile and the queue's acked versions
  are current; otherwise (`Claim.taken_over`) CloudHub reloads them from ObjectSync.
- Renewal: every `renew_interval` x U(0.8, 1.0) seconds per lease. A renew that meets another holder
  (conflict) loses the lease; one that cannot reach the API keeps trying, and a lease not renewed for
  `duration - renew_interval` seconds (the renew deadline) is given up before anyone may take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from kubernetes_asyncio.client import CoordinationV1Api, V1Lease, V1LeaseSpec, V1ObjectMeta
from kubernetes_asyncio.client.exceptions import ApiException

from common.log import get_logger

log = get_logger("ownership")

LEASE_PREFIX: Final = "cloudcore-node-"
# Starts the close reason of a connection refused for ownership; the edge then dials its next server
# (edgecore/edgehub/servers.py keeps the same text).
TRY_ANOTHER: Final = "try another cloudcore"
_API_TIMEOUT: Final = 10.0
_RELEASE_TIMEOUT: Final = 1.5  # short: releases run at shutdown, which must end within 5 s
_RENEWERS: Final = 8  # lease writes in flight at once
_RETRY_AFTER_FAILURE: Final = 1.0


def instance_identity() -> str:
    """hostname_pid_random: unique per process, readable in `kubectl get lease`."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(4)}"


def lease_name(node: str) -> str:
    return f"{LEASE_PREFIX}{node}"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """What the API holds for a node's lease."""

    holder: str  # "" once released
    renewed_at: float | None  # renewTime, seconds since the epoch
    duration: float
    resource_version: str
    transitions: int = 0


class Action(enum.Enum):
    CREATE = "create"  # no lease yet
    TAKE = "take"  # conditional update to us (released, ours, or expired)
    REFUSE = "refuse"  # another live instance holds it


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    holder: str = ""  # REFUSE: who holds it
    remaining: float = 0.0  # REFUSE: seconds until it expires unless renewed


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of `NodeOwnership.acquire`."""

    granted: bool
    taken_over: bool = False  # granted, and someone else wrote the lease since our last write
    holder: str = ""  # refused: the live holder
    remaining: float = 0.0


@dataclass(slots=True)
class _Held:
    resource_version: str
    renewed_mono: float  # when the last successful write was sent (local monotonic clock)
    due: float  # next renew (monotonic)


@dataclass(slots=True)
class _Seen:
    resource_version: str
    since: float  # monotonic: first time this instance read this resourceVersion


class LeaseBook:
    """The lease decisions of one instance (sans-I/O): what to write, when to renew, when to give up."""

    def __init__(self, identity: str, duration: float, renew_interval: float,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0 < renew_interval < duration:
            raise ValueError(f"need 0 < renew_interval < duration, got {renew_interval}, {duration}")
        self.identity = identity
        self.duration = duration
        self.renew_interval = renew_interval
        self._rand = rand
        self.held: dict[str, _Held] = {}
        self._last_written_rv: dict[str, str] = {}  # per node: our last write, kept after release
        self._seen: dict[str, _Seen] = {}  # per node: other holders' records as first observed

    # -- acquiring -----------------------------------------------------------------------------------
    def plan(self, node: str, current: LeaseRecord | None, now_mono: float, now_wall: float) -> Plan:
        """What to do to get `node`'s lease given its current record."""
        if current is None:
            return Plan(Action.CREATE)
        if current.holder in ("", self.identity):
            return Plan(Action.TAKE)
        remaining = self._remaining(node, current, now_mono, now_wall)
        if remaining <= 0:
            return Plan(Action.TAKE)
        return Plan(Action.REFUSE, current.holder, remaining)

    def _remaining(self, node: str, current: LeaseRecord, now_mono: float, now_wall: float) -> float:
        """Seconds the holder's lease has left: the shorter of the wall-clock and the observed view."""
        seen = self._seen.get(node)
        if seen is None or seen.resource_version != current.resource_version:
            seen = self._seen[node] = _Seen(current.resource_version, now_mono)
        observed = seen.since + current.duration - now_mono
        if current.renewed_at is None:
            return observed
        return min(observed, current.renewed_at + current.duration - now_wall)

    def written(self, node: str, previous: LeaseRecord | None, resource_version: str, now_mono: float) -> bool:
        """Our create/take of `node`'s lease succeeded (sent at `now_mono`, now at `resource_version`).
        True when someone else wrote the lease since our last write (the node was served elsewhere)."""
        taken_over = previous is None or self._last_written_rv.get(node) != previous.resource_version
        self._last_written_rv[node] = resource_version
        self._seen.pop(node, None)
        self.held[node] = _Held(resource_version, now_mono, self._next_due(now_mono))
        return taken_over

    def spec(self, holder: str, renewed_at: float, transitions: int) -> V1LeaseSpec:
        """The Lease spec to write (holder this instance, or "" to release)."""
        stamp = datetime.fromtimestamp(renewed_at, UTC)
        return V1LeaseSpec(holder_identity=holder, lease_duration_seconds=int(self.duration), renew_time=stamp,
                           acquire_time=stamp if holder else None, lease_transitions=transitions)

    # -- renewing ------------------------------------------------------------------------------------
    def _next_due(self, now_mono: float) -> float:
        return now_mono + self.renew_interval * (0.8 + 0.2 * self._rand())

    def due(self, now_mono: float) -> list[str]:
        """Held leases whose renew time has come."""
        return [node for node, held in self.held.items() if held.due <= now_mono]

    def next_deadline(self) -> float | None:
        """When `due` or `overdue` may next return something."""
        if not self.held:
            return None
        return min(min(h.due, h.renewed_mono + self.renew_deadline) for h in self.held.values())

    @property
    def renew_deadline(self) -> float:
        """Seconds without a successful renew after which a lease is given up (before it can expire)."""
        return self.duration - self.renew_interval

    def renewed(self, node: str, resource_version: str, sent_mono: float) -> None:
        held = self.held.get(node)
        if held is None:
            return
        held.resource_version = resource_version
        held.renewed_mono = sent_mono
        held.due = self._next_due(sent_mono)
        self._last_written_rv[node] = resource_version

    def renew_failed(self, node: str, now_mono: float) -> None:
        """The API could not be reached: try again soon (the renew deadline still applies)."""
        held = self.held.get(node)
        if held is not None:
            held.due = now_mono + min(_RETRY_AFTER_FAILURE, self.renew_interval)

    def overdue(self, now_mono: float) -> list[str]:
        """Held leases not renewed within the renew deadline: the caller gives them up."""
        return [node for node, held in self.held.items() if now_mono - held.renewed_mono >= self.renew_deadline]

    def lost(self, node: str) -> None:
        """Another instance holds the lease now (or we gave it up): forget it."""
        self.held.pop(node, None)

    def released(self, node: str, resource_version: str | None) -> None:
        """We emptied the holder (at `resource_version`), or could not (None)."""
        self.held.pop(node, None)
        if resource_version is not None:
            self._last_written_rv[node] = resource_version


class OwnershipError(Exception):
    """The lease could not be read or written (API unreachable, refused)."""


def _record_of(found: Any) -> LeaseRecord:
    spec = found.spec
    renewed = spec.renew_time if spec is not None else None
    return LeaseRecord(
        holder=(spec.holder_identity or "") if spec is not None else "",
        renewed_at=renewed.timestamp() if isinstance(renewed, datetime) else None,
        duration=float((spec.lease_duration_seconds if spec is not None else None) or 0),
        resource_version=str(found.metadata.resource_version or ""),
        transitions=int((spec.lease_transitions if spec is not None else None) or 0),
    )


OnLost = Callable[[str, str], Awaitable[None]]  # (node, why): the session must end


class NodeOwnership:
    """The asyncio shell: Lease reads/writes with kubernetes_asyncio, the renew loop, per-node order."""

    def __init__(self, api: CoordinationV1Api, namespace: str, identity: str, duration: float, renew_interval: float,
                 on_lost: OnLost, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.namespace = namespace
        self.book = LeaseBook(identity, duration, renew_interval)
        self._on_lost = on_lost
        self._clock, self._wall = clock, wall_clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._claimant: dict[str, object] = {}  # node -> the session token that holds the lease
        self._transitions: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self.writes = 0  # lease API writes (create, take, renew, release): the cost figure
        self.refused = 0

    @property
    def identity(self) -> str:
        return self.book.identity

    def _lock(self, node: str) -> asyncio.Lock:
        return self._locks.setdefault(node, asyncio.Lock())

    async def _read(self, node: str) -> LeaseRecord | None:
        try:
            found = await self.api.read_namespaced_lease(lease_name(node), self.namespace,
                                                         _request_timeout=_API_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise OwnershipError(f"cannot read lease {lease_name(node)}: {exc.status} {exc.reason}") from exc
        return _record_of(found)

    def _body(self, node: str, holder: str, resource_version: str | None, transitions: int) -> V1Lease:
        metadata = V1ObjectMeta(name=lease_name(node), namespace=self.namespace, resource_version=resource_version)
        return V1Lease(api_version="coordination.k8s.io/v1", kind="Lease", metadata=metadata,
                       spec=self.book.spec(holder, self._wall(), transitions))

    async def _write(self, node: str, body: V1Lease, create: bool) -> str:
        """Create or conditionally replace; the new resourceVersion. ApiException 409 on a lost race."""
        self.writes += 1
        if create:
            written = await self.api.create_namespaced_lease(self.namespace, body, _request_timeout=_API_TIMEOUT)
        else:
            written = await self.api.replace_namespaced_lease(lease_name(node), self.namespace, body,
                                                              _request_timeout=_API_TIMEOUT)
        return str(written.metadata.resource_version)

    async def acquire(self, node: str, token: object) -> Claim:
        """Take `node`'s lease for the session `token`, or say who holds it. Raises OwnershipError."""
        async with self._lock(node):
            try:
                async with asyncio.timeout(2 * _API_TIMEOUT):
                    for _ in range(3):  # a lost race re-reads: the winner may have released meanwhile
                        current = await self._read(node)
                        plan = self.book.plan(node, current, self._clock(), self._wall())
                        if plan.action is Action.REFUSE:
                            self.refused += 1
                            return Claim(False, holder=plan.holder, remaining=plan.remaining)
                        transitions = 0 if current is None else current.transitions
                        if current is not None and current.holder != self.identity:
                            transitions += 1
                        body = self._body(node, self.identity, None if current is None else current.resource_version,
                                          transitions)
                        sent = self._clock()
                        try:
                            rv = await self._write(node, body, create=current is None)
                        except ApiException as exc:
                            if exc.status == 409:
                                continue
                            raise OwnershipError(f"cannot write lease {lease_name(node)}: "
                                                 f"{exc.status} {exc.reason}") from exc
                        self._transitions[node] = transitions
                        self._claimant[node] = token
                        taken_over = self.book.written(node, current, rv, sent)
                        self._wakeup.set()
                        return Claim(True, taken_over=taken_over)
            except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                raise OwnershipError(f"cannot reach the API for lease {lease_name(node)}: {exc!r}") from exc
            raise OwnershipError(f"lease {lease_name(node)} kept changing")

    async def release(self, node: str, token: object) -> None:
        """The session `token` ended: empty the holder so that another instance can take the node at once.
        A no-op when a newer session of the node holds the lease, or when it was lost."""
        async with self._lock(node):
            if self._claimant.get(node) is not token:
                return
            del self._claimant[node]
            held = self.book.held.get(node)
            if held is None:
                return
            body = self._body(node, "", held.resource_version, self._transitions.get(node, 0))
            rv: str | None = None
            try:
                async with asyncio.timeout(_RELEASE_TIMEOUT):
                    rv = await self._write(node, body, create=False)
            except (ApiException, OSError, TimeoutError, aiohttp.ClientError) as exc:
                log.warning("node lease not released; it expires on its own", node=node, err=exc)
            self.book.released(node, rv)
            log.v(2).info("node lease released", node=node)

    async def run(self) -> None:
        """Renew held leases until cancelled; give up those lost or past the renew deadline."""
        gate = asyncio.Semaphore(_RENEWERS)
        async with asyncio.TaskGroup() as tasks:
            while True:
                now = self._clock()
                for node in self.book.overdue(now):
                    tasks.create_task(self._give_up(node, "lease not renewed in time (API unreachable?)"))
                for node in self.book.due(now):
                    self.book.held[node].due = float("inf")  # one renew in flight per lease
                    tasks.create_task(self._renew(node, gate))
                deadline = self.book.next_deadline()
                self._wakeup.clear()
                timeout = None if deadline is None else max(0.05, deadline - self._clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _renew(self, node: str, gate: asyncio.Semaphore) -> None:
        async with gate, self._lock(node):
            held = self.book.held.get(node)
            if held is None:
                return
            body = self._body(node, self.identity, held.resource_version, self._transitions.get(node, 0))
            sent = self._clock()
            try:
                async with asyncio.timeout(_API_TIMEOUT):
                    rv = await self._write(node, body, create=False)
            except ApiException as exc:
                if exc.status in (404, 409):
                    await self._lost_locked(node, f"lease changed under us ({exc.status})")
                    return
                log.warning("node lease not renewed; retrying", node=node, status=exc.status)
                self.book.renew_failed(node, self._clock())
                return
            except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                log.warning("node lease not renewed; retrying", node=node, err=exc)
                self.book.renew_failed(node, self._clock())
                return
            finally:
                self._wakeup.set()
            self.book.renewed(node, rv, sent)

    async def _lost_locked(self, node: str, why: str) -> None:
        """A renew conflict: someone else may hold it; check, and end the session unless it is still ours."""
        try:
            current = await self._read(node)
        except OwnershipError:
            current = None
        if current is not None and current.holder == self.identity:
            self.book.renewed(node, current.resource_version, self._clock())  # our own write, answer lost
            return
        self.book.lost(node)
        self._claimant.pop(node, None)
        log.warning("node lease lost; dropping the node's session", node=node, why=why,
                    holder=current.holder if current is not None else "")
        await self._on_lost(node, why)

    async def _give_up(self, node: str, why: str) -> None:
        async with self._lock(node):
            if node not in self.book.held:
                return
            self.book.lost(node)
            self._claimant.pop(node, None)
            log.warning("node lease given up; dropping the node's session", node=node, why=why)
        await self._on_lost(node, why)
