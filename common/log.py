"""klog-style logging: one line per event, `-v`/`--v` verbosity, structured fields, secrets redacted.

Line shape (klog's header, then klog's structured form):

    I1124 17:19:11.123456    4242 cloudhub] "node connected" node="edge-1" msg_id="6f1c..."

Severity I/W/E/F, month+day, time with microseconds, pid, the module, the quoted message, then
`key="value"` fields. `log.v(2).info(...)` prints only at `--v=2` or higher, like klog's V(2).
Anything that looks like a join token, a JWT, a bearer header or a PEM private key is replaced by
`<redacted>`, and so is every field whose name says it holds a secret: a log line must never leak
credentials into journald.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, Final, TextIO

_SEVERITY: Final = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
                    logging.CRITICAL: "F"}
_SECRET_FIELD: Final = re.compile(r"token|password|passwd|secret|private|credential|authorization",
                                  re.IGNORECASE)
_SECRET_TEXT: Final = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"  # PEM keys
    r"|(?:[0-9a-f]{64}\.)?eyJ[\w-]*\.[\w-]+\.[\w-]+"  # join token (CA hash + JWT) or bare JWT
    r"|(?i:bearer)\s+\S+",
    re.DOTALL,
)
REDACTED: Final = "<redacted>"
ROOT: Final = "kubeedge"

_verbosity = 0


def redact(text: str) -> str:
    return _SECRET_TEXT.sub(REDACTED, text)


def _quote(value: object) -> str:
    text = redact(str(value))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class KlogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = record.created
        local = time.localtime(seconds)
        micros = int((seconds - int(seconds)) * 1_000_000)
        module = record.name.removeprefix(ROOT + ".") if record.name != ROOT else ROOT
        parts = [
            f"{_SEVERITY.get(record.levelno, 'I')}{local.tm_mon:02d}{local.tm_mday:02d} "
            f"{time.strftime('%H:%M:%S', local)}.{micros:06d} {record.process:>7} {module}] "
            f"{_quote(record.getMessage())}"
        ]
        fields: dict[str, Any] = getattr(record, "kfields", {})
        for key, value in fields.items():
            shown = REDACTED if _SECRET_FIELD.search(key) else value
            parts.append(f"{key}={_quote(shown)}")
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            parts.append(f"err={_quote(f'{type(exc).__name__}: {exc}')}")
            if _verbosity >= 4:  # tracebacks only when asked for: one line per event otherwise
                parts.append("\n" + redact(self.formatException(record.exc_info)))
        return " ".join(parts)


class KLogger:
    """A module's logger: `info/warning/error(message, **fields)` and `v(level)` gating."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def v(self, level: int) -> KLogger | _Silent:
        return self if _verbosity >= level else _SILENT

    def enabled(self, level: int) -> bool:
        return _verbosity >= level

    def info(self, message: str, **fields: Any) -> None:
        self._log(logging.INFO, message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._log(logging.WARNING, message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log(logging.ERROR, message, fields)

    def exception(self, message: str, **fields: Any) -> None:
        """Error with the active exception's type and text as `err` (traceback at --v>=4)."""
        self._log(logging.ERROR, message, fields, exc_info=True)

    def _log(self, level: int, message: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, message, extra={"kfields": fields}, exc_info=exc_info, stacklevel=3)


class _Silent:
    """What `v(level)` returns when the level is off: every call is a no-op."""

    __slots__ = ()

    def info(self, message: str, **fields: Any) -> None:
        pass

    warning = error = exception = info


_SILENT: Final = _Silent()


def get_logger(module: str) -> KLogger:
    return KLogger(logging.getLogger(f"{ROOT}.{module}"))


def setup(verbosity: int = 2, stream: TextIO | None = None) -> None:
    """Configure the process's logging once: klog lines on stderr (journald reads them from there)."""
    global _verbosity
    _verbosity = max(0, verbosity)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KlogFormatter())
    root = logging.getLogger(ROOT)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    # Libraries log through the stdlib root logger: keep their warnings, in our format.
    library_root = logging.getLogger()
    library_root.handlers[:] = [handler]
    library_root.setLevel(logging.DEBUG if _verbosity >= 6 else logging.WARNING)


def verbosity() -> int:
    return _verbosity


def add_verbosity_flag(parser: Any) -> None:
    """`-v N` / `--v=N` like upstream's klog flag (default 2, the usual production level)."""
    parser.add_argument("-v", "--v", dest="v", type=int, default=int(os.environ.get("KUBEEDGE_V", "2")),
                        metavar="N", help="log verbosity, klog style: 0 quiet .. 4 debug .. 6 trace "
                                          "(default 2; env KUBEEDGE_V)")
