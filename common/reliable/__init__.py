"""Reliable delivery, sans-I/O: CloudHub's per-node queue, the edge outbox, retry and keepalive policy.

Plain classes driven by an injected clock (`now`); the asyncio shells in cloudcore/cloudhub and
edgecore/edgehub own sockets, sleeps, persistence and ObjectSync. Nothing here does I/O.
"""

from common.reliable.keepalive import Keepalive
from common.reliable.nodequeue import (
    Acked,
    Advanced,
    EnqueueResult,
    NodeQueue,
    NodeQueueStats,
    Outgoing,
    Resolved,
    Resolver,
    encoded_size,
)
from common.reliable.outbox import Outbox, OutboxRow, OutboxStats
from common.reliable.policy import ReconnectBackoff, ReconnectPolicy, ResendSchedule, RetryPolicy, Tracked

__all__ = [
    "Acked",
    "Advanced",
    "EnqueueResult",
    "Keepalive",
    "NodeQueue",
    "NodeQueueStats",
    "Outbox",
    "OutboxRow",
    "OutboxStats",
    "Outgoing",
    "ReconnectBackoff",
    "ReconnectPolicy",
    "ResendSchedule",
    "Resolved",
    "Resolver",
    "RetryPolicy",
    "Tracked",
    "encoded_size",
]
