"""containerd config rendering: every runtime.md delta lands (checked with tomllib), and a changed
`containerd config default` makes rendering fail loudly, naming the delta. Also the layout names and
the CNI conflist. Runs `containerd config default` (no daemon, no root).
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from common.hostsvc.containerd import (
    ConfigDeltaError,
    ContainerdLayout,
    apply_config_deltas,
    config_deltas,
    render_cni_conflist,
    render_config,
    subnet_for_tag,
)
from common.hostsvc.process import run_cmd
from tests.fixtures.paths import require_binary

CRI = "io.containerd.grpc.v1.cri"


@pytest.fixture
def layout(tmp_path: Path) -> ContainerdLayout:
    return ContainerdLayout.from_base(tmp_path / "ctd", "unit1")


@pytest.fixture(scope="module")
def default_text() -> str:
    require_binary("containerd")
    return run_cmd(["containerd", "config", "default"], timeout=10).stdout


def _cri(doc: dict[str, Any]) -> dict[str, Any]:
    cri: dict[str, Any] = doc["plugins"][CRI]
    return cri


def test_render_config_applies_every_runtime_md_delta(layout: ContainerdLayout, default_text: str) -> None:
    doc = tomllib.loads(render_config(layout))
    cri = _cri(doc)
    runc = cri["containerd"]["runtimes"]["runc"]
    assert doc["root"] == str(layout.root)
    assert doc["state"] == str(layout.state)
    assert doc["grpc"]["address"] == str(layout.socket)
    assert cri["sandbox_image"] == "docker.io/local/pause:1.0"
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"
    assert cri["cni"]["conf_dir"] == str(layout.cni_conf_dir)
    assert runc["options"]["SystemdCgroup"] is False
    assert cri["disable_apparmor"] is True
    assert cri["restrict_oom_score_adj"] is True  # required: no CAP_SYS_RESOURCE on these machines
    assert runc["options"]["Root"] == str(layout.runc_root)
    # Everything else is containerd's own default, untouched.
    assert doc["disabled_plugins"] == tomllib.loads(default_text)["disabled_plugins"] == []
    assert runc["runtime_type"] == "io.containerd.runc.v2"


def test_render_config_uses_the_layout_snapshotter(tmp_path: Path) -> None:
    native = ContainerdLayout.from_base(tmp_path, "unit2", snapshotter="native")
    assert _cri(tomllib.loads(render_config(native)))["containerd"]["snapshotter"] == "native"


def test_socket_path_fits_a_unix_socket(layout: ContainerdLayout) -> None:
    long_base = ContainerdLayout.from_base(Path("/run/ke-test-abcdefgh/containerd"), "abcdefgh")
    assert len(str(long_base.socket)) < 108
    assert layout.socket.parent == layout.state


@pytest.mark.parametrize("delta_index", range(11))
def test_missing_default_line_fails_naming_the_delta(
    layout: ContainerdLayout, default_text: str, delta_index: int
) -> None:
    deltas = config_deltas(layout)
    assert len(deltas) == 11
    delta = deltas[delta_index]
    doctored, removed = _drop_key_in_table(default_text, delta.table, delta.key)
    assert removed == 1
    with pytest.raises(ConfigDeltaError, match=re.escape(delta.name)):
        apply_config_deltas(doctored, deltas)


def test_renamed_table_fails_naming_the_delta(layout: ContainerdLayout, default_text: str) -> None:
    doctored = default_text.replace(f'[plugins."{CRI}".cni]', f'[plugins."{CRI}".network]')
    assert doctored != default_text
    with pytest.raises(ConfigDeltaError, match=re.escape(f'[plugins."{CRI}".cni] bin_dir')):
        apply_config_deltas(doctored, config_deltas(layout))


def test_duplicated_key_fails(layout: ContainerdLayout, default_text: str) -> None:
    doctored = default_text.replace(
        "    restrict_oom_score_adj = false\n",
        "    restrict_oom_score_adj = false\n    restrict_oom_score_adj = false\n",
    )
    with pytest.raises(ConfigDeltaError, match="restrict_oom_score_adj matched 2 lines"):
        apply_config_deltas(doctored, config_deltas(layout))


def _drop_key_in_table(text: str, table: str, key: str) -> tuple[str, int]:
    """Remove `key = ...` from TOML table `table` ("" = top level); return the text and lines removed."""
    out, current, removed = [], "", 0
    for line in text.splitlines():
        header = re.match(r"^\s*\[(.+)\]\s*$", line)
        if header:
            current = header.group(1)
        elif current == table and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            removed += 1
            continue
        out.append(line)
    return "\n".join(out) + "\n", removed


def test_layout_names_fit_interface_limits_and_are_stable(tmp_path: Path) -> None:
    layout = ContainerdLayout.from_base(tmp_path, "abcdefgh")
    assert layout.bridge == "keabcdefgh" and len(layout.bridge) <= 15
    assert ContainerdLayout.from_base(tmp_path).tag == ContainerdLayout.from_base(tmp_path).tag
    assert ContainerdLayout.from_base(tmp_path).tag != ContainerdLayout.from_base(tmp_path / "x").tag
    with pytest.raises(ValueError, match="tag"):
        ContainerdLayout.from_base(tmp_path, "Bad-Tag")
    with pytest.raises(ValueError, match="tag"):
        ContainerdLayout.from_base(tmp_path, "a" * 14)


def test_subnet_is_a_slash24_in_10_200_to_10_255() -> None:
    nets = {ipaddress.IPv4Network(subnet_for_tag(f"t{i}")) for i in range(200)}
    assert all(n.prefixlen == 24 and 200 <= n.network_address.packed[1] <= 255 for n in nets)
    assert len(nets) > 190  # spread, so parallel sessions rarely collide


def test_layout_round_trips_through_layout_json(layout: ContainerdLayout) -> None:
    layout.base.mkdir(parents=True)
    layout.save()
    assert ContainerdLayout.load(layout.base) == layout
    assert ContainerdLayout.load(layout.base / "missing") is None


def test_cni_conflist_uses_the_layout_bridge_subnet_and_ipam_dir(layout: ContainerdLayout) -> None:
    conflist = json.loads(render_cni_conflist(layout))
    bridge, portmap = conflist["plugins"]
    assert conflist["name"] == layout.network_name
    assert bridge["type"] == "bridge" and bridge["bridge"] == layout.bridge
    assert bridge["isGateway"] is True and bridge["ipMasq"] is False
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": layout.subnet}]]
    assert bridge["ipam"]["dataDir"] == str(layout.ipam_dir)
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
