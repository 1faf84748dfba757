"""A private mosquitto broker: config rendering, file-permission checks, start and stop by pidfile.

This module owns the broker recipe of runtime.md: anonymous listeners on one address, an optional TLS
listener (CA, server cert and key supplied by the caller; a client certificate is optional unless
asked for), logging to stdout (captured in the log file). Started as root, mosquitto drops to user
`mosquitto`, so `start` checks up front that this user can read every file it needs. It never
changes the permissions of the caller's certificate files: it says which one is unreadable.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from common.hostsvc.process import Daemon, HostServiceError, StopOutcome, is_running, stop_from_pidfile

BROKER_USER = "mosquitto"
READY_TIMEOUT = 5.0
PIDFILE_NAME = "mosquitto.pid"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the TLS listener."""

    ca: Path
    cert: Path
    key: Path
    require_certificate: bool = False


@dataclass(frozen=True)
class MosquittoLayout:
    """One broker: its directory (conf, pidfile, log, data) and listeners."""

    dir: Path
    port: int
    tls_port: int | None = None
    bind: str = "127.0.0.1"
    certs: TlsFiles | None = None
    persistence: bool = False

    def __post_init__(self) -> None:
        if (self.tls_port is None) != (self.certs is None):
            raise ValueError("a TLS listener needs both tls_port and certs")

    @property
    def conf_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def pidfile(self) -> Path:
        return self.dir / PIDFILE_NAME

    @property
    def logfile(self) -> Path:
        return self.dir / "mosquitto.log"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def probe_host(self) -> str:
        """Where a client on this host reaches the listeners."""
        return "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind


def render_conf(layout: MosquittoLayout) -> str:
    """The mosquitto.conf text for `layout`."""
    lines = [
        "# written by common.hostsvc.mosquitto",
        "per_listener_settings false",
        "allow_anonymous true",
        f"persistence {'true' if layout.persistence else 'false'}",
    ]
    if layout.persistence:
        lines.append(f"persistence_location {layout.data_dir}/")
    lines += ["log_dest stdout", f"listener {layout.port} {layout.bind}"]
    if layout.certs is not None:
        lines += [
            f"listener {layout.tls_port} {layout.bind}",
            f"cafile {layout.certs.ca}",
            f"certfile {layout.certs.cert}",
            f"keyfile {layout.certs.key}",
            f"require_certificate {'true' if layout.certs.require_certificate else 'false'}",
        ]
    return "\n".join(lines) + "\n"


def _allowed(st: os.stat_result, uid: int, gid: int, bits: tuple[int, int, int]) -> bool:
    user_bit, group_bit, other_bit = bits
    if st.st_uid == uid:
        return bool(st.st_mode & user_bit)
    if st.st_gid == gid:
        return bool(st.st_mode & group_bit)
    return bool(st.st_mode & other_bit)


def check_readable_by_broker(paths: list[Path]) -> None:
    """Raise HostServiceError unless user `mosquitto` can traverse to and read each of `paths`.

    A mode-bit check (owner, group, other; no ACLs), done up front because mosquitto would otherwise
    only log "Unable to load server key file" and exit.

    Only meaningful as root (otherwise mosquitto keeps the caller's identity); a no-op then.
    """
    if os.geteuid() != 0:
        return
    try:
        account = pwd.getpwnam(BROKER_USER)
    except KeyError as exc:
        raise HostServiceError(f"user {BROKER_USER!r} does not exist: install the mosquitto package") from exc
    read = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    search = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
    for path in paths:
        path = path.resolve()
        for parent in reversed(path.parents):
            if not _allowed(parent.stat(), account.pw_uid, account.pw_gid, search):
                raise HostServiceError(
                    f"user {BROKER_USER!r} cannot traverse {parent} to reach {path}: chmod o+x it"
                )
        if not _allowed(path.stat(), account.pw_uid, account.pw_gid, read):
            raise HostServiceError(f"user {BROKER_USER!r} cannot read {path}: chmod 644 it")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start(layout: MosquittoLayout, timeout: float = READY_TIMEOUT) -> Daemon:
    """Write the conf, check permissions, start mosquitto; ready once every listener accepts TCP.

    The conf is read while still root; certificates and the data dir are opened after the switch to
    user `mosquitto`, so only those are checked.
    """
    if is_running(layout.pidfile) is not None:
        raise HostServiceError(f"mosquitto already running for {layout.dir} (pidfile {layout.pidfile})")
    layout.dir.mkdir(parents=True, exist_ok=True)
    layout.conf_path.write_text(render_conf(layout))
    needed = [layout.certs.ca, layout.certs.cert, layout.certs.key] if layout.certs is not None else []
    if layout.persistence:
        layout.data_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam(BROKER_USER)
            os.chown(layout.data_dir, account.pw_uid, account.pw_gid)
        needed.append(layout.data_dir)
    check_readable_by_broker(needed)
    ports = [layout.port] + ([layout.tls_port] if layout.tls_port is not None else [])
    daemon = Daemon.start(
        ["mosquitto", "-c", str(layout.conf_path)], pidfile=layout.pidfile, logfile=layout.logfile
    )
    daemon.wait_ready(lambda: all(_port_open(layout.probe_host, p) for p in ports), timeout, what="mosquitto")
    return daemon


def stop(directory: Path) -> StopOutcome:
    """Stop the broker whose layout directory is `directory`, from any process."""
    return stop_from_pidfile(directory / PIDFILE_NAME)
