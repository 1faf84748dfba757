"""What one mapper must be told next (sans-I/O): level-triggered, like a controller's work queue.

`sent` is what we believe the mapper holds (key -> digest), `dirty` the keys that changed since. `next(view)`
compares a dirty key's place in `view` (what the mapper should hold, from the Catalog) with `sent` and gives
the RPC that closes the gap: Create/Update/RemoveDeviceModel, Register/Update/RemoveDevice. Several changes of
one key before it is sent collapse into one call with the latest object. Models are created before the devices
that need them, and removed after them.

Bounded: at most `limit` dirty keys; past that the set is dropped and a full comparison of every known key is
done instead (`resync`), which needs no memory beyond `sent` and the view. After a MapperRegister, `reset` makes
`sent` the mapper's answer set, since it received exactly that list (or, without data, had it already).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from edgecore.dmi.catalog import MODEL, Key

DEFAULT_LIMIT: Final = 16384

CREATE_MODEL: Final = "CreateDeviceModel"
UPDATE_MODEL: Final = "UpdateDeviceModel"
REMOVE_MODEL: Final = "RemoveDeviceModel"
REGISTER_DEVICE: Final = "RegisterDevice"
UPDATE_DEVICE: Final = "UpdateDevice"
REMOVE_DEVICE: Final = "RemoveDevice"
# Lower goes first: models a device needs, then removals that free models, then devices, then model removals.
_PRIORITY: Final = {CREATE_MODEL: 0, UPDATE_MODEL: 0, REMOVE_DEVICE: 1, REGISTER_DEVICE: 2, UPDATE_DEVICE: 2,
                    REMOVE_MODEL: 3}


@dataclass(frozen=True, slots=True)
class Push:
    rpc: str
    key: Key
    digest: str | None  # the digest the mapper holds once the call succeeds (None: removed)


def action(key: Key, want: str | None, have: str | None) -> str | None:
    """The RPC that takes the mapper from `have` to `want` for `key` (digests; None = absent)."""
    kind = key[0]
    if want is None:
        if have is None:
            return None
        return REMOVE_MODEL if kind == MODEL else REMOVE_DEVICE
    if have is None:
        return CREATE_MODEL if kind == MODEL else REGISTER_DEVICE
    if have == want:
        return None
    return UPDATE_MODEL if kind == MODEL else UPDATE_DEVICE


class MapperSync:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.sent: dict[Key, str] = {}
        self.dirty: dict[Key, None] = {}  # insertion-ordered set
        self.resync = False

    def mark(self, key: Key) -> None:
        if self.resync or key in self.dirty:
            return
        if len(self.dirty) >= self.limit:
            self.dirty.clear()
            self.resync = True
            return
        self.dirty[key] = None

    def reset(self, sent: dict[Key, str]) -> None:
        """The mapper (re-)registered and holds `sent`: forget every older belief and pending change."""
        self.sent = dict(sent)
        self.dirty.clear()
        self.resync = False

    @property
    def idle(self) -> bool:
        return not self.dirty and not self.resync

    def next(self, view: dict[Key, str]) -> Push | None:
        """The next call to make (None: the mapper is up to date); keys needing nothing leave `dirty`."""
        if self.resync:
            self.resync = False
            self.dirty = dict.fromkeys([*self.sent, *(k for k in view if k not in self.sent)])
        best: Push | None = None
        for key in list(self.dirty):
            want = view.get(key)
            rpc = action(key, want, self.sent.get(key))
            if rpc is None:
                del self.dirty[key]
                continue
            if best is None or _PRIORITY[rpc] < _PRIORITY[best.rpc]:
                best = Push(rpc, key, want)
                if _PRIORITY[rpc] == 0:
                    break
        return best

    def done(self, push: Push) -> None:
        """The call succeeded: the mapper holds `push.digest`. The key stays dirty if it changed meanwhile
        (`next` then finds nothing left to do, or the newer change)."""
        if push.digest is None:
            self.sent.pop(push.key, None)
        else:
            self.sent[push.key] = push.digest

    def drop(self, push: Push) -> None:
        """Give up on this key until it changes again (the mapper refused it)."""
        self.dirty.pop(push.key, None)

    def drop_all(self) -> int:
        """Give up on every pending key (the mapper stays unreachable); returns how many."""
        count = len(self.dirty)
        self.dirty.clear()
        self.resync = False
        return count

