"""Which cloudcore EdgeHub dials next, and how long it waits first (sans-I/O; docs/ha.md).

`edgeHub.websocket.server` (or `quic.server`) may list several `host:port` separated by commas, e.g.
`10.0.0.1:10000,10.0.0.2:10000`. One address (upstream's form, or a TCP load balancer) behaves exactly
as before: every failure waits the reconnect back-off, then the same server is dialed again.

With several, they are tried in the order listed, starting from the first:
- a failed dial, or a connection the cloud refused (closed with `REFUSED_MARK` in its reason: another
  cloudcore serves the node), moves to the next server at once; only after every server of the round
  has failed does the edge wait the back-off (`ReconnectBackoff`: jittered, doubling, reset once a
  connection stayed up), and the next round starts where the last one ended;
- a connection that was up and then dropped is dialed again on the same server after the back-off (it
  served us; if its instance died, that dial fails at once and the next server follows).

Never does I/O, reads a clock or draws random numbers itself: `now` and `rand` are passed in.
"""

from __future__ import annotations

from collections.abc import Callable

from common.reliable import ReconnectBackoff

# The cloud's close reason for a connection refused because another cloudcore serves the node
# (cloudcore/cloudhub/ownership.py TRY_ANOTHER).
REFUSED_MARK = "try another cloudcore"


def parse_servers(value: str) -> tuple[str, ...]:
    """`a:1, b:2` -> ("a:1", "b:2"); blanks dropped; the value itself when it lists nothing."""
    servers = tuple(part.strip() for part in value.split(",") if part.strip())
    return servers or (value,)


def is_refusal(reason: str) -> bool:
    return REFUSED_MARK in reason


class ServerRotation:
    """The dial order over the configured servers, with one `ReconnectBackoff` across them."""

    def __init__(self, servers: str | tuple[str, ...], backoff: ReconnectBackoff | None = None) -> None:
        self.servers = parse_servers(servers) if isinstance(servers, str) else servers
        if not self.servers:
            raise ValueError("no server to dial")
        self.backoff = backoff or ReconnectBackoff()
        self.index = 0
        self._round_start = 0

    @property
    def current(self) -> str:
        return self.servers[self.index]

    def connected(self, now: float) -> None:
        """The current server accepted the connection (it may still refuse the node: `failed`)."""
        self.backoff.connected(now)

    def failed(self, now: float, rand: Callable[[], float]) -> float:
        """The dial failed or the cloud refused the node: seconds to wait, then dial `current`."""
        self.index = (self.index + 1) % len(self.servers)
        if self.index != self._round_start:
            return 0.0
        return self.backoff.next_delay(now, rand)  # every server failed this round

    def dropped(self, now: float, rand: Callable[[], float]) -> float:
        """A connection that was serving dropped: back off, then dial the same server first."""
        self._round_start = self.index
        return self.backoff.next_delay(now, rand)
