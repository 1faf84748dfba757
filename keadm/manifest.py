"""The record of what one `keadm init` or `keadm join` made, so that `keadm reset` removes exactly that.

Entries, in creation order: `daemon` (name, pidfile), `unit` (a systemd unit file), `file`, `tree` (a
directory keadm created whose whole content is keadm's or its daemons'), `dir` (a directory keadm created
that may be shared: removed only when empty). The file is saved after every entry, so a run that fails
half-way can still be reset. It never records a path that existed before keadm touched it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["daemon", "unit", "file", "tree", "dir"]


@dataclass
class Entry:
    kind: Kind
    path: str
    name: str = ""


@dataclass
class Manifest:
    path: Path
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a keadm manifest ({exc}): remove it by hand") from None
        entries = [Entry(str(e["kind"]), str(e["path"]), str(e.get("name", "")))  # type: ignore[arg-type]
                   for e in raw.get("entries", [])]
        return cls(path, entries)

    def save(self) -> None:
        self._make_dirs(self.path.parent)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"entries": [e.__dict__ for e in self.entries]}, indent=1) + "\n")
        os.replace(tmp, self.path)

    def _make_dirs(self, directory: Path) -> None:
        """Create `directory` and missing parents; record the ones made (the manifest's own dir too)."""
        missing: list[Path] = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for made in reversed(missing):
            made.mkdir(mode=0o755)
            self.entries.append(Entry("dir", str(made)))

    def make_dirs(self, directory: Path) -> None:
        self._make_dirs(directory)
        self.save()

    def add(self, kind: Kind, path: Path, name: str = "") -> None:
        if not any(e.kind == kind and e.path == str(path) for e in self.entries):
            self.entries.append(Entry(kind, str(path), name))
            self.save()

    def add_new(self, kind: Kind, path: Path) -> None:
        """Record `path` only if it does not exist yet (call before the write that creates it)."""
        if not path.exists():
            self.add(kind, path)

    def of_kind(self, kind: Kind) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]
