"""Application keepalive for one connection, both ends: when to ping and when the peer has gone silent.

Upstream (ref/protocol.md section 3.6): the edge sends op `keepalive` every `heartbeat` (15 s); the
cloud does not answer and closes a node's session when nothing arrived for `keepaliveInterval` (30 s).
So the cloud uses `seen`/`expired`/`expires_at`, the edge uses `pinged`/`next_ping` (and may watch the
cloud's traffic with `seen`/`expired` too). This module only does arithmetic on the `now` it is given;
it never reads a clock, sleeps or sends anything.
"""

from __future__ import annotations


class Keepalive:
    """Last-heard and last-ping times of one connection.

    `interval`: seconds between our pings. `timeout`: silence (seconds since the peer was last
    `seen`) after which the connection counts as dead. `now` at construction is when the connection
    came up; it counts as both the first sign of life and the last ping, so the first ping is due one
    `interval` after connecting.
    """

    __slots__ = ("interval", "last_ping_at", "last_seen_at", "timeout")

    def __init__(self, interval: float, timeout: float, *, now: float) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError(f"interval and timeout must be > 0, got {interval}, {timeout}")
        self.interval = interval
        self.timeout = timeout
        self.last_seen_at = now
        self.last_ping_at = now

    def seen(self, now: float) -> None:
        """The peer showed it is alive (a keepalive, or any message if the caller chooses so)."""
        self.last_seen_at = max(self.last_seen_at, now)

    def expired(self, now: float) -> bool:
        """True once the peer has been silent for `timeout` seconds or more."""
        return now >= self.expires_at

    @property
    def expires_at(self) -> float:
        """When the connection counts as dead unless the peer is `seen` before."""
        return self.last_seen_at + self.timeout

    def pinged(self, now: float) -> None:
        """We just sent our keepalive."""
        self.last_ping_at = now

    def next_ping(self, now: float) -> float:
        """When our next keepalive is due; equal to `now` when it is due already."""
        return max(now, self.last_ping_at + self.interval)
