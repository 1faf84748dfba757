"""Registered mappers and the rule for a MapperRegister (pure; the caller probes sockets and persists).

A mapper is known by name and serves one protocol at one address (its unix socket). The rule:

- a new name for a protocol nobody serves: registered;
- the same name at the same address (a mapper restarting): accepted again, the record refreshed, nothing
  displaced (idempotent);
- otherwise the request would displace records: the one of the same name at another address, and the one of
  another name serving the same protocol. The caller probes each displaced mapper's socket: if any still
  answers, the request is refused (ALREADY_EXISTS) and nothing changes; if none answers, they are replaced.
  A displaced record at the requester's own address is not probed (only one process can listen there: the
  requester, e.g. a mapper renamed and restarted in place).

So a mapper that moved its socket, or was replaced by another build, takes over once the old one is gone,
while a second copy started by mistake is told so and cannot steal the devices of a running one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

MAX_NAME: Final = 128
MAX_ADDRESS: Final = 107  # sun_path is 108 bytes with the terminating NUL


@dataclass(frozen=True, slots=True)
class MapperRecord:
    name: str
    protocol: str
    address: str  # absolute unix socket path
    version: str = ""
    api_version: str = ""
    state: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    displaced: list[MapperRecord] = field(default_factory=list)  # replaced when the request succeeds
    refresh: bool = False  # same name, same address: the mapper restarted
    address: str = ""  # the requester's

    @property
    def to_probe(self) -> list[MapperRecord]:
        """The displaced mappers that must not answer for the request to succeed."""
        return [m for m in self.displaced if m.address != self.address]


def socket_path(address: str) -> str:
    """The socket path of MapperInfo.address (`/path`, `unix:/path` or `unix:///path`)."""
    raw = address.strip()
    for prefix in ("unix://", "unix:"):
        if raw.startswith(prefix):
            return raw.removeprefix(prefix)
    return raw


def validate(record: MapperRecord) -> str | None:
    """Why the record cannot be registered, or None."""
    if not record.name or len(record.name) > MAX_NAME or "/" in record.name:
        return f"mapper name {record.name!r} must be 1-{MAX_NAME} characters without '/'"
    if not record.protocol:
        return f"mapper {record.name!r} gives no protocol"
    if not record.address.startswith("/") or len(record.address.encode()) > MAX_ADDRESS:
        return (f"mapper {record.name!r}: address {record.address!r} must be an absolute unix socket path of at most "
                f"{MAX_ADDRESS} bytes")
    return None


def decide(mappers: dict[str, MapperRecord], new: MapperRecord) -> Decision:
    """What registering `new` would displace, given the registered `mappers` (by name)."""
    same_name = mappers.get(new.name)
    displaced = []
    if same_name is not None and same_name.address != new.address:
        displaced.append(same_name)
    displaced.extend(m for m in mappers.values() if m.name != new.name and m.protocol == new.protocol)
    return Decision(displaced=displaced, refresh=same_name is not None and same_name.address == new.address,
                    address=new.address)


def conflict_message(new: MapperRecord, alive: MapperRecord) -> str:
    if alive.name == new.name:
        return (f"mapper {new.name!r} is already registered at {alive.address}, which still answers; stop that "
                f"mapper first or register under another name")
    return (f"protocol {new.protocol!r} is already served by mapper {alive.name!r} at {alive.address}, which still "
            f"answers; stop it first (one mapper per protocol)")


def after(mappers: dict[str, MapperRecord], new: MapperRecord, decision: Decision) -> dict[str, MapperRecord]:
    """The registered mappers once `new` is accepted."""
    gone = {m.name for m in decision.displaced}
    out = {name: m for name, m in mappers.items() if name not in gone}
    out[new.name] = new
    return out


def for_protocol(mappers: dict[str, MapperRecord], protocol: str) -> MapperRecord | None:
    return next((m for m in mappers.values() if m.protocol == protocol), None)
