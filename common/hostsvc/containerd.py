"""A private containerd (CRI enabled) on this host: layout, config, start, images, teardown.

This module owns everything runtime.md says about running containerd by hand: the per-instance
directory layout (root, state, socket, runc root, CNI conf and IPAM dirs, bridge name and subnet),
the config rendered from `containerd config default` plus the documented deltas (each one asserted),
the bridge CNI conflist, the ready check, importing the local images, and a teardown that removes
containers first (shims outlive containerd), then the daemon, mounts, directories and the bridge.
It never talks to the system containerd (/run/containerd/containerd.sock) and never deletes anything
that its own socket, root, state or bridge name does not identify.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.hostsvc.netns import link_exists
from common.hostsvc.ociimage import BUSYBOX_REF, PAUSE_REF, build_busybox_image, build_pause_image
from common.hostsvc.process import (
    Daemon,
    HostServiceError,
    is_running,
    run_cmd,
    stop_from_pidfile,
)

CNI_BIN_DIR = "/usr/lib/cni"
CRI_NAMESPACE = "k8s.io"
READY_TIMEOUT = 10.0
_SHIM_EXIT_WAIT = 10.0  # shims exit within ~0.1 s when idle, seconds on a loaded 2-core host
_TAG = re.compile(r"[a-z0-9]{1,13}")
_CRI = 'plugins."io.containerd.grpc.v1.cri"'
_HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_-]+)\s*=")
_TOML_KEY_PART = re.compile(r'"([^"]*)"|([^."\s]+)')


class ConfigDeltaError(HostServiceError):
    """A config delta could not be applied: `containerd config default` no longer has the line."""


@dataclass(frozen=True)
class ContainerdLayout:
    """Paths and names of one containerd instance; everything lives under `base`.

    `tag` (1-13 chars of [a-z0-9]) names the CNI bridge `ke<tag>` and network `ke-<tag>`;
    `subnet` is the pod /24 on that bridge.
    """

    base: Path
    tag: str
    subnet: str
    snapshotter: str = "overlayfs"

    @classmethod
    def from_base(
        cls, base: Path, tag: str | None = None, *, subnet: str | None = None, snapshotter: str = "overlayfs"
    ) -> ContainerdLayout:
        """A layout under `base`; `tag` defaults to a hash of the base path, `subnet` to one of the tag."""
        base = base.resolve()
        tag = tag if tag is not None else hashlib.sha256(str(base).encode()).hexdigest()[:8]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"containerd tag {tag!r} must be 1-13 chars of [a-z0-9]")
        return cls(base=base, tag=tag, subnet=subnet or subnet_for_tag(tag), snapshotter=snapshotter)

    @classmethod
    def load(cls, base: Path) -> ContainerdLayout | None:
        """The layout saved by `start` under `base`, None if there is none."""
        try:
            data = json.loads((base.resolve() / "layout.json").read_text())
        except FileNotFoundError:
            return None
        return cls(
            base=Path(data["base"]), tag=data["tag"], subnet=data["subnet"], snapshotter=data["snapshotter"]
        )

    def save(self) -> None:
        data = {
            "base": str(self.base),
            "tag": self.tag,
            "subnet": self.subnet,
            "snapshotter": self.snapshotter,
        }
        self.layout_file.write_text(json.dumps(data, indent=2) + "\n")

    @property
    def layout_file(self) -> Path:
        return self.base / "layout.json"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.state / "runc"

    @property
    def ipam_dir(self) -> Path:
        return self.state / "cni-ipam"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base / "cni" / "net.d"

    @property
    def conflist_path(self) -> Path:
        return self.cni_conf_dir / f"10-{self.network_name}.conflist"

    @property
    def config_path(self) -> Path:
        return self.base / "config.toml"

    @property
    def pidfile(self) -> Path:
        return self.base / "containerd.pid"

    @property
    def logfile(self) -> Path:
        return self.base / "containerd.log"

    @property
    def bridge(self) -> str:
        return f"ke{self.tag}"

    @property
    def network_name(self) -> str:
        return f"ke-{self.tag}"


def subnet_for_tag(tag: str) -> str:
    """A /24 in 10.200.0.0-10.255.255.0 picked by hashing `tag`."""
    digest = hashlib.sha256(tag.encode()).digest()
    return f"10.{200 + digest[0] % 56}.{digest[1]}.0/24"


@dataclass(frozen=True)
class ConfigDelta:
    """Set `key` in TOML table `table` ("" is the top level) to the TOML literal `value`."""

    table: str
    key: str
    value: str

    @property
    def name(self) -> str:
        return f"[{self.table}] {self.key}" if self.table else self.key


def config_deltas(layout: ContainerdLayout) -> list[ConfigDelta]:
    """The deltas of runtime.md ("containerd config: deltas from `containerd config default`")."""

    def s(value: object) -> str:
        return json.dumps(str(value))

    return [
        ConfigDelta("", "root", s(layout.root)),
        ConfigDelta("", "state", s(layout.state)),
        ConfigDelta("grpc", "address", s(layout.socket)),
        ConfigDelta(_CRI, "sandbox_image", s(PAUSE_REF)),
        ConfigDelta(_CRI, "disable_apparmor", "true"),
        ConfigDelta(_CRI, "restrict_oom_score_adj", "true"),
        ConfigDelta(f"{_CRI}.cni", "bin_dir", s(CNI_BIN_DIR)),
        ConfigDelta(f"{_CRI}.cni", "conf_dir", s(layout.cni_conf_dir)),
        ConfigDelta(f"{_CRI}.containerd", "snapshotter", s(layout.snapshotter)),
        ConfigDelta(f"{_CRI}.containerd.runtimes.runc.options", "SystemdCgroup", "false"),
        ConfigDelta(f"{_CRI}.containerd.runtimes.runc.options", "Root", s(layout.runc_root)),
    ]


def _toml_lookup(doc: dict[str, Any], table: str, key: str) -> object:
    node: Any = doc
    for quoted, bare in _TOML_KEY_PART.findall(table):
        node = node[quoted or bare]
    return node[key]


def apply_config_deltas(default_text: str, deltas: list[ConfigDelta]) -> str:
    """Rewrite the value of each delta's key in place; each must hit exactly one line.

    The result is parsed back with tomllib and every delta's value checked, so a config that silently
    lost a delta (for instance the required `restrict_oom_score_adj`) can never be returned.
    """
    by_slot = {(d.table, d.key): d for d in deltas}
    hits = dict.fromkeys(by_slot, 0)
    table = ""
    lines = default_text.splitlines()
    for i, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            table = header.group(1).strip()
            continue
        key_line = _KEY_LINE.match(line)
        if key_line is None:
            continue
        slot = (table, key_line.group(2))
        if slot in by_slot:
            lines[i] = f"{key_line.group(1)}{slot[1]} = {by_slot[slot].value}"
            hits[slot] += 1
    for slot, count in hits.items():
        if count != 1:
            raise ConfigDeltaError(
                f"containerd config delta {by_slot[slot].name} matched {count} lines (expected 1): "
                "the output of `containerd config default` changed, update common/hostsvc/containerd.py"
            )
    text = "\n".join(lines) + "\n"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigDeltaError(f"containerd config is not valid TOML after the deltas: {exc}") from exc
    for delta in deltas:
        want = tomllib.loads(f"v = {delta.value}")["v"]
        try:
            got = _toml_lookup(doc, delta.table, delta.key)
        except (KeyError, TypeError):
            got = None
        if got != want:
            raise ConfigDeltaError(f"containerd config delta {delta.name}: expected {want!r}, parsed {got!r}")
    return text


def render_config(layout: ContainerdLayout) -> str:
    """`containerd config default` with the deltas of `config_deltas(layout)` applied and verified."""
    default = run_cmd(["containerd", "config", "default"], timeout=10).stdout
    return apply_config_deltas(default, config_deltas(layout))


def render_cni_conflist(layout: ContainerdLayout) -> str:
    """Bridge + host-local + portmap on this layout's own bridge and subnet (no masquerade)."""
    conflist = {
        "cniVersion": "0.4.0",
        "name": layout.network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": layout.subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conflist, indent=2) + "\n"


def run_ctr(
    layout: ContainerdLayout,
    *args: str,
    namespace: str | None = CRI_NAMESPACE,
    timeout: float = 30.0,
    check: bool = True,
) -> str:
    """Run `ctr` against this instance and return its stdout (HostServiceError on failure with `check`)."""
    argv = ["ctr", "--address", str(layout.socket), "--connect-timeout", "2s"]
    if namespace is not None:
        argv += ["--namespace", namespace]
    return run_cmd([*argv, *args], timeout=timeout, check=check).stdout


def responsive(layout: ContainerdLayout) -> bool:
    """True when the daemon answers `ctr version` on its socket."""
    if not layout.socket.is_socket():
        return False
    argv = ["ctr", "--address", str(layout.socket), "--connect-timeout", "1s", "version"]
    return run_cmd(argv, timeout=5, check=False).returncode == 0


def _launch(layout: ContainerdLayout) -> Daemon:
    daemon = Daemon.start(
        ["containerd", "--config", str(layout.config_path)], pidfile=layout.pidfile, logfile=layout.logfile
    )
    daemon.wait_ready(lambda: responsive(layout), READY_TIMEOUT, what="containerd")
    return daemon


def start(layout: ContainerdLayout) -> Daemon:
    """Write config, conflist and layout.json under `layout.base`, start containerd, wait until ready."""
    if is_running(layout.pidfile) is not None:
        raise HostServiceError(f"containerd already running for {layout.base} (pidfile {layout.pidfile})")
    for path in (layout.base, layout.root, layout.state, layout.cni_conf_dir):
        path.mkdir(parents=True, exist_ok=True)
    layout.config_path.write_text(render_config(layout))
    layout.conflist_path.write_text(render_cni_conflist(layout))
    layout.save()
    return _launch(layout)


def import_image(layout: ContainerdLayout, archive: Path, namespace: str = CRI_NAMESPACE) -> None:
    """`ctr images import` of an OCI archive, unpacked for this layout's snapshotter."""
    run_ctr(
        layout,
        "images",
        "import",
        "--snapshotter",
        layout.snapshotter,
        str(archive),
        namespace=namespace,
        timeout=60,
    )


def ensure_local_images(layout: ContainerdLayout, images_dir: Path) -> list[str]:
    """Build busybox.oci.tar and pause.oci.tar in `images_dir` if missing, import both; return the refs."""
    wanted = (
        (BUSYBOX_REF, images_dir / "busybox.oci.tar", build_busybox_image),
        (PAUSE_REF, images_dir / "pause.oci.tar", build_pause_image),
    )
    for ref, archive, build in wanted:
        if not archive.exists():
            build(archive, ref)
        import_image(layout, archive)
    return [ref for ref, _, _ in wanted]


def _network_netns_files(layout: ContainerdLayout, namespace: str, container: str) -> list[str]:
    """The netns files CRI bind-mounted for a pod sandbox (/var/run/netns/cni-...); [] if unknown."""
    done = run_ctr(layout, "containers", "info", container, namespace=namespace, check=False)
    try:
        spec = json.loads(done).get("Spec") or {}
    except json.JSONDecodeError:
        return []
    namespaces = (spec.get("linux") or {}).get("namespaces") or []
    paths = (ns.get("path") or "" for ns in namespaces if ns.get("type") == "network")
    return [path for path in paths if path and not path.startswith("/proc/")]


def _remove_everything(layout: ContainerdLayout) -> None:
    """Delete every task (killing it) and container in every namespace, then CRI's pod netns files.

    Each delete is tried even if an earlier one failed (after a restart `ctr` may report a closed
    ttrpc connection for a task it did delete); what is still listed afterwards is the error.
    """
    leftovers = []
    for namespace in run_ctr(layout, "namespaces", "list", "-q", namespace=None).split():
        containers = run_ctr(layout, "containers", "list", "-q", namespace=namespace).split()
        netns_files = [p for c in containers for p in _network_netns_files(layout, namespace, c)]
        for task in run_ctr(layout, "tasks", "list", "-q", namespace=namespace).split():
            run_ctr(layout, "tasks", "delete", "--force", task, namespace=namespace, check=False)
        for container in containers:
            run_ctr(layout, "containers", "delete", container, namespace=namespace, check=False)
        for path in netns_files:
            _unmount(os.path.realpath(path))
            Path(path).unlink(missing_ok=True)
        leftovers += [
            f"{namespace}/{c}"
            for c in run_ctr(layout, "containers", "list", "-q", namespace=namespace).split()
        ]
    if leftovers:
        raise HostServiceError(f"containers still present after delete: {', '.join(leftovers)}")


def shim_pids(layout: ContainerdLayout) -> list[int]:
    """PIDs of containerd shims that serve this instance (their argv holds `-address <our socket>`)."""
    pids = []
    want = str(layout.socket).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]).startswith(b"containerd-shim") and want in argv:
            pids.append(int(entry.name))
    return pids


def mounts_under(paths: list[Path]) -> list[str]:
    """Mount points at or below any of `paths`, deepest first (from /proc/mounts, octal escapes decoded)."""
    prefixes = [os.path.realpath(p) for p in paths]
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _unmount(point: str) -> None:
    if run_cmd(["umount", point], timeout=10, check=False).returncode != 0:
        run_cmd(["umount", "-l", point], timeout=10, check=False)


def teardown(layout: ContainerdLayout, daemon: Daemon | None = None) -> None:
    """Remove every trace of this instance; safe to call twice and after a crash.

    Order: containers and tasks first (if containerd died but its shims live, it is restarted briefly
    for that), then containerd itself, any shim left, mounts under root/state (deepest first), the
    root and state directories, and the CNI bridge. Problems are collected and raised at the end, after
    every step has been tried.
    """
    problems: list[str] = []
    running = daemon.running() if daemon is not None else is_running(layout.pidfile) is not None
    if not running and shim_pids(layout) and layout.config_path.exists():
        try:
            daemon = _launch(layout)
            running = True
        except HostServiceError as exc:
            problems.append(f"restarting containerd to clean up its shims failed: {exc}")
    if running:
        try:
            _remove_everything(layout)
        except HostServiceError as exc:
            problems.append(f"removing containers failed: {exc}")
    try:
        if daemon is not None:
            daemon.stop()
        else:
            stop_from_pidfile(layout.pidfile)
    except HostServiceError as exc:
        problems.append(f"stopping containerd failed: {exc}")
    deadline = time.monotonic() + _SHIM_EXIT_WAIT
    while shim_pids(layout) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in shim_pids(layout):
        problems.append(f"killed leftover shim pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for point in mounts_under([layout.root, layout.state]):
        _unmount(point)
    for directory in (layout.root, layout.state):
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            problems.append(f"could not remove {directory}")
    if link_exists(layout.bridge):
        try:
            run_cmd(["ip", "link", "del", layout.bridge], timeout=10)
        except HostServiceError as exc:
            problems.append(str(exc))
    if problems:
        raise HostServiceError("containerd teardown: " + "; ".join(problems))
