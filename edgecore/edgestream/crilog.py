"""Container logs as kubelet serves them, read from the CRI log file.

A CRI log line is `<RFC3339Nano time> <stdout|stderr> <P|F> <text>\n`: F ends a line, P is a part of a
longer one (no newline of its own). `LogOptions` are kubelet's query keys; `read_log` writes the texts
(with `timestamps`, each line prefixed by its time and a space), from the last `tailLines` lines,
skipping lines before `sinceTime`/`sinceSeconds`, cut at `limitBytes`, and with `follow` goes on with
what is appended until `running()` says the container stopped (the rest is drained first). A file that
is rotated (a new inode, or truncated) while followed is read again from its start.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

CHUNK: Final = 64 * 1024
POLL: Final = 0.1  # seconds between looks at a followed file
RUNNING_EVERY: Final = 10  # polls between asking whether the container still runs


class LogOptionsError(ValueError):
    """A query value that is not valid (answered 400)."""


@dataclass(frozen=True, slots=True)
class LogLine:
    time: bytes
    stream: bytes
    partial: bool
    text: bytes

    @classmethod
    def parse(cls, raw: bytes) -> LogLine | None:
        """One line of the file without its newline; None when it is not in the CRI format."""
        parts = raw.split(b" ", 3)
        if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
            return None
        if len(parts) == 3:  # an empty text: "<time> <stream> F"
            parts.append(b"")
        time, stream, tag, text = parts
        if tag.split(b":", 1)[0] not in (b"P", b"F"):
            return None
        return cls(time, stream, tag.startswith(b"P"), text)

    def render(self, timestamps: bool) -> bytes:
        return (self.time + b" " if timestamps else b"") + self.text + (b"" if self.partial else b"\n")

    def moment(self) -> datetime | None:
        return parse_time(self.time.decode(errors="replace"))


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time with up to nanoseconds (Python keeps microseconds)."""
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + (rest[:digits] + "000000")[:6] + rest[digits:]
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _bool(value: str | None) -> bool:
    return value is not None and value != "0" and value.lower() != "false"


def _int(query: Mapping[str, str], key: str, minimum: int) -> int | None:
    value = query.get(key)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise LogOptionsError(f"{key}: not an integer: {value!r}") from None
    if number < minimum:
        raise LogOptionsError(f"{key}: must be at least {minimum}: {number}")
    return number


@dataclass(frozen=True, slots=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since: datetime | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str], now: datetime | None = None) -> LogOptions:
        since = None
        if "sinceTime" in query:
            since = parse_time(query["sinceTime"])
            if since is None:
                raise LogOptionsError(f"sinceTime: not an RFC 3339 time: {query['sinceTime']!r}")
        seconds = _int(query, "sinceSeconds", 1)
        if seconds is not None:
            since = (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        return cls(follow=_bool(query.get("follow")), previous=_bool(query.get("previous")),
                   timestamps=_bool(query.get("timestamps")), tail_lines=_int(query, "tailLines", 0),
                   limit_bytes=_int(query, "limitBytes", 1), since=since)


def tail_offset(path: Path, lines: int) -> int:
    """Where the last `lines` lines of the file start (a last line without its newline counts)."""
    with path.open("rb") as file:
        end = file.seek(0, os.SEEK_END)
        if lines == 0:
            return end
        position, found = end, 0
        skip_final = True  # the file's final newline ends the last line, it does not start one
        while position > 0:
            size = min(CHUNK, position)
            position -= size
            file.seek(position)
            block = file.read(size)
            for index in range(len(block) - 1, -1, -1):
                if block[index] != 0x0A:
                    skip_final = False
                    continue
                if skip_final:
                    skip_final = False
                    continue
                found += 1
                if found == lines:
                    return position + index + 1
        return 0


Write = Callable[[bytes], Awaitable[None]]
Running = Callable[[], Awaitable[bool]]


class _Writer:
    """Renders lines to `write`, applying since and limitBytes; `done` once the limit is reached."""

    def __init__(self, options: LogOptions, write: Write) -> None:
        self.options, self.write = options, write
        self.left = options.limit_bytes
        self.done = False

    async def lines(self, raws: list[bytes]) -> None:
        out = bytearray()
        for raw in raws:
            line = LogLine.parse(raw)
            if line is None:
                continue
            if self.options.since is not None:
                moment = line.moment()
                if moment is not None and moment < self.options.since:
                    continue
            out += line.render(self.options.timestamps)
        if not out or self.done:
            return
        if self.left is not None:
            out = out[:self.left]
            self.left -= len(out)
            self.done = self.left <= 0
        await self.write(bytes(out))


async def read_log(path: Path, options: LogOptions, write: Write, running: Running | None = None) -> None:
    """Write the container's log to `write` as kubelet would (see the module's docstring)."""
    writer = _Writer(options, write)
    start = 0 if options.tail_lines is None else await asyncio.to_thread(tail_offset, path, options.tail_lines)
    file = path.open("rb")
    try:
        file.seek(start)
        inode, pending, polls = os.fstat(file.fileno()).st_ino, b"", 0
        stopping = False
        while not writer.done:
            block = await asyncio.to_thread(file.read, CHUNK)
            if block:
                *complete, pending = (pending + block).split(b"\n")
                await writer.lines(complete)
                continue
            if not options.follow or stopping:
                break
            polls += 1
            if running is not None and polls % RUNNING_EVERY == 0 and not await running():
                stopping = True  # one more read drains what was written before it stopped
                continue
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_ino != inode or current.st_size < file.tell()):
                file.close()
                file = path.open("rb")
                inode, pending = os.fstat(file.fileno()).st_ino, b""
                continue
            await asyncio.sleep(POLL)
        if pending and not writer.done:
            await writer.lines([pending])
    finally:
        file.close()
