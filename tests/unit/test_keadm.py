"""keadm without daemons: flags, `--set`/`--labels` parsing, config rendering, progress output, the
manifest, and the systemd unit files (checked with `systemd-analyze verify`)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from common.config import CloudCoreConfig, EdgeCoreConfig
from common.pki import TokenMalformedError, create_ca, create_token, parse_token
from keadm.__main__ import build_parser
from keadm.edge import options_from, split_ipport
from keadm.manifest import Manifest
from keadm.paths import DEFAULT_ETC, Paths, service_mode
from keadm.progress import Progress, StepError, StepFailed
from keadm.render import (
    CloudOptions,
    EdgeOptions,
    RenderError,
    parse_labels,
    parse_set,
    prune_defaults,
    render_cloudcore,
    render_edgecore,
)
from keadm.service import UNIT_DIR, Service, Supervisor, program, remove_unit, render_unit

SCRATCH = Paths(Path("/tmp/ke/etc"), Path("/tmp/ke/var"), Path("/tmp/ke/log"), Path("/tmp/ke/run"))


def test_join_flags_have_upstream_names_and_defaults() -> None:
    args = build_parser().parse_args(["join", "-e", "10.0.0.1:10000", "-t", "x"])
    assert args.cloudcore_ipport == "10.0.0.1:10000"
    assert args.remote_runtime_endpoint == "unix:///run/containerd/containerd.sock"
    assert args.cgroupdriver == "cgroupfs"
    assert args.certport == "" and args.hub_protocol == "websocket" and args.labels == ""
    long = build_parser().parse_args(["join", "--cloudcore-ipport=h:1", "--edgenode-name=n", "--token=t",
                                      "--certport=2", "--remote-runtime-endpoint=unix:///x.sock",
                                      "--cgroupdriver=systemd", "--labels=a=b", "--certPath=/c"])
    assert (long.edgenode_name, long.certport, long.cgroupdriver, long.cert_path) == ("n", "2", "systemd", Path("/c"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["join", "-e", "h:1", "--cgroupdriver", "other"])


def test_join_requires_cloudcore_ipport() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["join", "--token", "t"])


def test_reset_force_survives_the_role_subcommand() -> None:
    assert build_parser().parse_args(["reset", "--force", "cloud"]).force is True
    assert build_parser().parse_args(["reset", "edge", "--force"]).force is True
    plain = build_parser().parse_args(["reset"])
    assert plain.force is False and plain.role is None


def test_init_flags() -> None:
    args = build_parser().parse_args(["init", "--advertise-address=10.0.0.1,10.0.0.2", "--set", "a.b=1"])
    assert args.advertise_address == "10.0.0.1,10.0.0.2" and args.set == ["a.b=1"] and args.kube_config is None


def test_set_parses_nested_keys_scalars_and_flow_lists() -> None:
    tree = parse_set(["modules.edged.reportEvent=true,modules.cloudHub.dnsNames=[a,b]", "x.port=10"])
    assert tree == {"modules": {"edged": {"reportEvent": True}, "cloudHub": {"dnsNames": ["a", "b"]}},
                    "x": {"port": 10}}
    with pytest.raises(RenderError, match="KEY=VALUE"):
        parse_set(["novalue"])
    with pytest.raises(RenderError, match="already given"):
        parse_set(["a=1,a.b=2"])


def test_labels() -> None:
    assert parse_labels("zone=a,example.com/tier=edge") == {"zone": "a", "example.com/tier": "edge"}
    for bad in ("zone", "=a", "zone=-bad", "zone=" + "x" * 64):
        with pytest.raises(RenderError):
            parse_labels(bad)


def test_ipport() -> None:
    assert split_ipport("10.0.0.1:10000") == ("10.0.0.1", 10000)
    assert split_ipport("[fd00::1]:10000") == ("fd00::1", 10000)
    for bad in ("10.0.0.1", "10.0.0.1:x", ":10", "h:70000"):
        with pytest.raises(RenderError):
            split_ipport(bad)


def test_prune_defaults_keeps_only_differences() -> None:
    assert prune_defaults({"a": 1, "b": {"c": 2, "d": 3}, "e": {"f": 1}}, {"a": 1, "b": {"c": 2}, "e": {"f": 1}}) \
        == {"b": {"d": 3}}


def test_edgecore_yaml_has_only_non_default_keys_and_no_token() -> None:
    args = build_parser().parse_args(["join", "-e", "10.0.0.1:10000", "-i", "edge-1", "-t", "tok", "-l", "zone=a",
                                      "--set", "modules.edged.reportEvent=true"])
    rendered = render_edgecore(options_from(args), Paths())
    tree = yaml.safe_load(rendered.text)
    assert "token" not in rendered.text and "tok" not in rendered.text
    hub = tree["modules"]["edgeHub"]
    assert hub["httpServer"] == "https://10.0.0.1:10002"
    assert hub["websocket"] == {"server": "10.0.0.1:10000"}
    assert hub["quic"] == {"server": "10.0.0.1:10001"}
    assert "tlsCaFile" not in hub  # the default path
    edged = tree["modules"]["edged"]
    assert edged["hostnameOverride"] == "edge-1" and edged["nodeLabels"] == {"zone": "a"}
    assert edged["reportEvent"] is True
    assert "tailoredKubeletConfig" not in edged  # endpoint and driver are the defaults
    assert tree["modules"]["edgeStream"] == {"enable": True, "server": "10.0.0.1:10004"}
    assert "database" not in tree
    config = rendered.config
    assert isinstance(config, EdgeCoreConfig)
    assert config.modules.edged.tailored_kubelet_config.cgroup_driver == "cgroupfs"


def test_edgecore_yaml_moves_paths_and_quic() -> None:
    options = EdgeOptions("10.0.0.1", 10001, "n", cert_port=20002, runtime_endpoint="unix:///x.sock",
                          cgroup_driver="systemd", hub_protocol="quic")
    tree = yaml.safe_load(render_edgecore(options, SCRATCH).text)
    assert tree["database"]["dataSource"] == "/tmp/ke/var/edgecore.db"
    hub = tree["modules"]["edgeHub"]
    assert hub["quic"] == {"enable": True, "server": "10.0.0.1:10001"}
    assert hub["websocket"] == {"enable": False, "server": "10.0.0.1:10000"}
    assert hub["httpServer"] == "https://10.0.0.1:20002" and hub["tlsCaFile"] == "/tmp/ke/etc/ca/rootCA.crt"
    kubelet = tree["modules"]["edged"]["tailoredKubeletConfig"]
    assert kubelet["containerRuntimeEndpoint"] == kubelet["imageServiceEndpoint"] == "unix:///x.sock"
    assert kubelet["cgroupDriver"] == "systemd"
    assert tree["modules"]["deviceTwin"]["dmiSockPath"] == "/tmp/ke/etc/dmi.sock"


def test_a_set_typo_is_refused_with_the_key() -> None:
    options = EdgeOptions("10.0.0.1", 10000, "n", sets=parse_set(["modules.edged.reportEvnt=true"]))
    with pytest.raises(RenderError, match="reportEvnt"):
        render_edgecore(options, Paths())


def test_cloudcore_yaml() -> None:
    options = CloudOptions(["10.0.0.1"], Path("/tmp/ke/etc/admin.kubeconfig"),
                           stream_ca=Path("/tmp/ke/var/controlplane/pki/ca.crt"),
                           sets=parse_set(["modules.cloudHub.websocket.port=20000"]))
    rendered = render_cloudcore(options, SCRATCH)
    tree = yaml.safe_load(rendered.text)
    hub = tree["modules"]["cloudHub"]
    assert hub["advertiseAddress"] == ["10.0.0.1"] and hub["websocket"] == {"port": 20000}
    assert hub["unixsocket"] == {"address": "unix:///tmp/ke/var/kubeedge.sock"}
    assert tree["modules"]["cloudStream"]["enable"] is True
    assert tree["modules"]["cloudStream"]["tlsStreamCAFile"] == "/tmp/ke/var/controlplane/pki/ca.crt"
    assert isinstance(rendered.config, CloudCoreConfig)
    default_paths = yaml.safe_load(render_cloudcore(CloudOptions(["10.0.0.1"], Path("/root/.kube/config")),
                                                    Paths()).text)
    assert "tlsCAFile" not in default_paths["modules"]["cloudHub"]
    assert "cloudStream" not in default_paths["modules"]  # a real cluster: off unless --set


def test_token_parsing_used_by_join_preflight() -> None:
    token = create_token(create_ca())
    assert parse_token(f"  {token}\n").ca_hash == token.split(".")[0]
    for bad in ("", "abc", token.split(".", 1)[1], "zz" + token[2:]):
        with pytest.raises(TokenMalformedError):
            parse_token(bad)


def test_progress_prints_steps_with_elapsed_time_and_failures_name_the_step() -> None:
    out = io.StringIO()
    progress = Progress(2, out)
    with progress.step("first") as step:
        step.note("detail")
    with pytest.raises(StepFailed) as failed, progress.step("fetch CA from 10.0.0.1:10002"):
        raise StepError("wrong CA hash", "get a fresh token")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/2] first ... ok (") and lines[0].endswith(" s)")
    assert lines[1] == "      detail"
    assert lines[2].startswith("[2/2] fetch CA from 10.0.0.1:10002 ... FAILED (")
    assert failed.value.render() == ("error: [2/2] fetch CA from 10.0.0.1:10002 failed: wrong CA hash\n"
                                     "  fix: get a fresh token")


def test_manifest_records_only_what_it_creates(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    manifest = Manifest(tmp_path / "etc" / "keadm" / "edge.json")
    manifest.make_dirs(tmp_path / "etc" / "config")
    manifest.add_new("file", existing)
    manifest.add_new("file", tmp_path / "etc" / "config" / "edgecore.yaml")
    manifest.add("daemon", tmp_path / "run" / "edgecore.pid", "edgecore")
    loaded = Manifest.load(manifest.path)
    assert loaded is not None
    assert [(e.kind, Path(e.path).relative_to(tmp_path).as_posix()) for e in loaded.entries] == [
        ("dir", "etc"), ("dir", "etc/config"), ("dir", "etc/keadm"), ("file", "etc/config/edgecore.yaml"),
        ("daemon", "run/edgecore.pid")]
    assert loaded.of_kind("daemon")[0].name == "edgecore"


def test_paths_follow_the_environment() -> None:
    paths = Paths.from_env({"KE_ETC": "/x/etc", "KE_RUN": "/x/run"})
    assert paths.edgecore_config == Path("/x/etc/config/edgecore.yaml")
    assert paths.pidfile("cloudcore") == Path("/x/run/cloudcore.pid")
    assert Paths.from_env({}).etc == DEFAULT_ETC
    assert service_mode({"KE_SERVICE_MODE": "daemon"}) == "daemon"
    assert service_mode({"KE_SERVICE_MODE": "systemd"}) == "systemd"


UNITS = {
    "edgecore": ("edgecore.service", ["--config", "/etc/kubeedge/config/edgecore.yaml"], "process"),
    "cloudcore": ("cloudcore.service", ["--config", "/etc/kubeedge/config/cloudcore.yaml"], None),
    "controlplane": ("kubeedge-controlplane.service", ["controlplane", "--data-dir", "/var/lib/kubeedge/cp"], None),
}


def _unit_keys(text: str) -> dict[str, str]:
    keys = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys[key.strip()] = value.strip()
    return keys


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_files_have_the_required_keys(name: str) -> None:
    unit, extra, kill_mode = UNITS[name]
    binary = program("cloudcore" if name != "edgecore" else "edgecore")
    text = render_unit(Service(name, (binary, *extra)))
    keys = _unit_keys(text)
    assert keys["Type"] == "notify" and keys["Restart"] == "always" and keys["RestartSec"] == "10"
    assert keys["WantedBy"] == "multi-user.target"
    assert keys["ExecStart"].startswith(binary + " ") and keys["ExecStart"].split()[1:] == extra
    assert keys.get("KillMode") == kill_mode
    assert keys["Description"] == unit
    assert (UNIT_DIR / unit).is_file()
    assert "ExecStart=/usr/local/bin/" in (UNIT_DIR / unit).read_text()


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_files_pass_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: apt-get install systemd (the unit check needs it)", pytrace=False)
    unit, extra, _ = UNITS[name]
    binary = program("cloudcore" if name != "edgecore" else "edgecore")
    path = tmp_path / unit
    path.write_text(render_unit(Service(name, (binary, *extra))))
    done = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), f"systemd-analyze verify {unit}:\n{done.stderr}"


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: apt-get install systemd (the unit check needs it)", pytrace=False)
    path = tmp_path / "edgecore.service"
    path.write_text(render_unit(Service("edgecore", (program("edgecore"),))).replace("Type=notify", "Type=notfy"))
    done = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60)
    assert "notfy" in done.stderr


def test_systemd_mode_installs_enables_and_removes_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd is not PID 1 here: a stand-in `systemctl` records the calls keadm makes."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = show ] && echo 4242\nexit 0\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "log", tmp_path / "run", tmp_path / "units")
    paths.systemd_dir.mkdir()
    manifest = Manifest(paths.manifest("edge"))
    service = Service("edgecore", (program("edgecore"), "--config", str(paths.edgecore_config)))
    assert Supervisor("systemd", paths).start(service, manifest, timeout=5) == 4242
    unit = paths.systemd_dir / "edgecore.service"
    assert f"ExecStart={program('edgecore')} --config {paths.edgecore_config}" in unit.read_text()
    assert calls.read_text().splitlines() == ["daemon-reload", "enable --now edgecore.service",
                                              "show -p MainPID --value edgecore.service"]
    assert [(e.kind, e.name) for e in manifest.entries if e.kind == "unit"] == [("unit", "edgecore")]
    assert remove_unit(unit) == "edgecore.service: stopped, disabled and removed"
    assert not unit.exists()
    assert calls.read_text().splitlines()[-2:] == ["disable --now edgecore.service", "daemon-reload"]
