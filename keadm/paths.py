"""Where keadm reads and writes: upstream's paths, each movable by an environment variable.

Owns only path arithmetic; it never creates anything. The variables are scripts/quickstart's:
KE_ETC (/etc/kubeedge), KE_VAR (/var/lib/kubeedge), KE_LOGS (/var/log/kubeedge), KE_RUN (/var/run/kubeedge),
plus KE_SYSTEMD_DIR (/etc/systemd/system) for unit files and KE_SERVICE_MODE (`auto`, `systemd` or
`daemon`) to force how daemons are run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

DEFAULT_ETC: Final = Path("/etc/kubeedge")
DEFAULT_VAR: Final = Path("/var/lib/kubeedge")
DEFAULT_LOGS: Final = Path("/var/log/kubeedge")
DEFAULT_RUN: Final = Path("/var/run/kubeedge")
DEFAULT_SYSTEMD_DIR: Final = Path("/etc/systemd/system")

Role = Literal["cloud", "edge"]


@dataclass(frozen=True)
class Paths:
    etc: Path = DEFAULT_ETC
    var: Path = DEFAULT_VAR
    logs: Path = DEFAULT_LOGS
    run: Path = DEFAULT_RUN
    systemd_dir: Path = DEFAULT_SYSTEMD_DIR

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Paths:
        source = os.environ if env is None else env

        def pick(name: str, default: Path) -> Path:
            value = source.get(name, "").strip()
            return Path(value).absolute() if value else default

        return cls(pick("KE_ETC", DEFAULT_ETC), pick("KE_VAR", DEFAULT_VAR), pick("KE_LOGS", DEFAULT_LOGS),
                   pick("KE_RUN", DEFAULT_RUN), pick("KE_SYSTEMD_DIR", DEFAULT_SYSTEMD_DIR))

    @property
    def config_dir(self) -> Path:
        return self.etc / "config"

    @property
    def cloudcore_config(self) -> Path:
        return self.config_dir / "cloudcore.yaml"

    @property
    def edgecore_config(self) -> Path:
        return self.config_dir / "edgecore.yaml"

    @property
    def ca_dir(self) -> Path:
        return self.etc / "ca"

    @property
    def certs_dir(self) -> Path:
        return self.etc / "certs"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.etc / "admin.kubeconfig"

    @property
    def controlplane_dir(self) -> Path:
        return self.var / "controlplane"

    def manifest(self, role: Role) -> Path:
        """The record of what `keadm init` (cloud) or `keadm join` (edge) made, read by `keadm reset`."""
        return self.etc / "keadm" / f"{role}.json"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def service_mode(env: Mapping[str, str] | None = None) -> Literal["systemd", "daemon"]:
    """systemd when it is PID 1 (/run/systemd/system exists), else supervised daemons; KE_SERVICE_MODE wins."""
    forced = (os.environ if env is None else env).get("KE_SERVICE_MODE", "auto").strip().lower()
    if forced == "systemd":
        return "systemd"
    if forced == "daemon":
        return "daemon"
    return "systemd" if Path("/run/systemd/system").is_dir() else "daemon"
