"""Step-by-step progress for keadm: `[3/7] fetch CA from 10.0.0.1:10002 ... ok (0.2 s)`.

Owns the output format and the failure shape: every failure names the step, the cause and the fix
(`StepFailed`). It never prints secrets: callers pass text that holds none.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class StepError(Exception):
    """Raised inside a step: what went wrong and what the user should do."""

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix


class StepFailed(Exception):
    """A step failed; `str()` is the message keadm prints before exiting non-zero."""

    def __init__(self, label: str, title: str, cause: str, fix: str) -> None:
        super().__init__(f"{label} {title}: {cause}")
        self.label, self.title, self.cause, self.fix = label, title, cause, fix

    def render(self) -> str:
        return f"error: {self.label} {self.title} failed: {self.cause}\n  fix: {self.fix}"


class Step:
    """The running step: `note()` lines are printed, indented, after its result."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.extend(text.splitlines())


class Progress:
    def __init__(self, total: int, out: TextIO | None = None) -> None:
        self.total = total
        self.index = 0
        self.out = out if out is not None else sys.stdout

    def _print(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.out, flush=True)

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        self.index += 1
        label = f"[{self.index}/{self.total}]"
        self._print(f"{label} {title} ...", end=" ")
        started = time.monotonic()
        current = Step()
        try:
            yield current
        except StepError as exc:
            self._print(f"FAILED ({time.monotonic() - started:.1f} s)")
            raise StepFailed(label, title, exc.cause, exc.fix) from exc
        except StepFailed:
            raise
        except Exception as exc:
            self._print(f"FAILED ({time.monotonic() - started:.1f} s)")
            raise StepFailed(label, title, f"{type(exc).__name__}: {exc}",
                             "see the cause above; it is unexpected, so please report it") from exc
        self._print(f"ok ({time.monotonic() - started:.1f} s)")
        for line in current.notes:
            self._print(f"      {line}")
