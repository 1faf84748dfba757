"""kill -9 in the middle of a write burst loses no acknowledged write.

A child process runs the store with 8 concurrent writers and prints every write as soon as its
await returns (the acknowledgement). The test SIGKILLs it after some number of acks, reopens the
same file and checks every printed write against it; then the next round runs on the same file,
so recovery after recovery is covered too.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudcore.controlplane.store.store import Store
from cloudcore.controlplane.store.types import Key

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 8
KEYS_PER_WRITER = 4
LINE_TIMEOUT = 30.0  # the first line waits for the child's imports and open

CHILD = f"""
import asyncio, sys
from pathlib import Path
from cloudcore.controlplane.store.store import Store
from cloudcore.controlplane.store.types import Key

async def main(path: str, synchronous: str, run: int) -> None:
    store = await Store.open(Path(path), synchronous=synchronous, compact_every=None)
    out = sys.stdout

    async def writer(w: int) -> None:
        seq = 0
        while True:
            for k in range({KEYS_PER_WRITER}):
                seq += 1
                name = f"w{{w}}-k{{k}}"
                key = Key("configmaps", "default", name)
                obj = {{"metadata": {{"name": name, "namespace": "default"}},
                       "data": {{"writer": w, "run": run, "seq": seq, "pad": "x" * 200}}}}
                if store.get(key) is None:
                    stored = await store.create(key, obj)
                else:
                    stored = await store.update(key, obj)
                out.write(f"{{name}} {{stored.rv}} {{run}} {{seq}}\\n")
                out.flush()

    await asyncio.gather(*(writer(w) for w in range({WRITERS})))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@dataclass(frozen=True)
class Ack:
    name: str
    rv: int
    run: int
    seq: int


async def run_and_kill(path: Path, synchronous: str, run: int, kill_after: int, stderr: Path) -> list[Ack]:
    """Start the child, SIGKILL it after `kill_after` acks, return every ack it printed."""
    with stderr.open("wb") as err:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(path), synchronous, str(run),
            stdout=asyncio.subprocess.PIPE, stderr=err, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout is not None
    lines: list[bytes] = []
    try:
        while len(lines) < kill_after:
            line = await asyncio.wait_for(child.stdout.readline(), LINE_TIMEOUT)
            assert line, f"child ended early: {tail(stderr)}"
            lines.append(line)
        child.kill()
        # What it printed before dying was acknowledged too.
        lines.extend((await asyncio.wait_for(child.stdout.read(), LINE_TIMEOUT)).splitlines(keepends=True))
    finally:
        if child.returncode is None:
            child.kill()
        await asyncio.wait_for(child.wait(), LINE_TIMEOUT)
    acks = []
    for line in lines:
        if line.endswith(b"\n"):  # a line cut by the kill was never completely printed
            name, rv, run_text, seq = line.split()
            acks.append(Ack(name.decode(), int(rv), int(run_text), int(seq)))
    return acks


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def logged_writes(path: Path, revisions: list[int]) -> dict[int, tuple[str, dict[str, Any]]]:
    """(name, data) of the log rows at `revisions`, read straight from the file."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute(f"SELECT rv, name, data FROM log WHERE rv IN ({','.join('?' * len(revisions))})",
                          revisions).fetchall()
    return {rv: (name, orjson.loads(data)["data"]) for rv, name, data in rows}


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_sigkill_mid_burst_loses_no_acknowledged_write(sqlite_path: Path, tmp_path: Path,
                                                             synchronous: str) -> None:
    latest: dict[str, Ack] = {}
    for run, kill_after in enumerate([1, 150, 1500, 5000, 37], start=1):
        acks = await run_and_kill(sqlite_path, synchronous, run, kill_after, tmp_path / f"child-{run}.err")
        assert len(acks) >= kill_after
        for ack in acks:
            if ack.name not in latest or ack.rv > latest[ack.name].rv:
                latest[ack.name] = ack

        # Every acknowledged write of this round is in the file at its revision.
        logged = logged_writes(sqlite_path, [ack.rv for ack in acks])
        for ack in acks:
            name, data = logged[ack.rv]
            assert (name, data["run"], data["seq"]) == (ack.name, ack.run, ack.seq), ack

        store = await Store.open(sqlite_path, compact_every=None)
        try:
            # Each key holds its latest acknowledged write, or a later one that committed unacked.
            for ack in latest.values():
                stored = store.get(Key("configmaps", "default", ack.name))
                assert stored is not None, ack
                assert stored.rv >= ack.rv, ack
                data = stored.decode()["data"]
                if stored.rv == ack.rv:
                    assert (data["run"], data["seq"]) == (ack.run, ack.seq), ack
                else:
                    assert (data["run"], data["seq"]) > (ack.run, ack.seq), ack
            highest_ack = max(a.rv for a in latest.values())
            assert store.current_rv >= highest_ack
            after = await store.create(Key("configmaps", "default", f"after-{run}"), {"metadata": {}})
            assert after.rv > highest_ack
        finally:
            await store.close()
