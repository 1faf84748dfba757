"""A non-editable install (a wheel, as `pip install kubeedge-py` makes) carries what keadm reads at run time:
the CRDs it installs and the systemd unit templates, the same bytes as config/ in the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.controlplane import ROOT

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources, so the build leaves nothing in the work tree."""
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "_generated", "*.egg-info")
    for name in ("common", "cloudcore", "edgecore", "keadm", "config"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=skip)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, timeout=240, capture_output=True)
    (built,) = out.glob("kubeedge_py-*.whl")
    return built


def test_the_wheel_ships_every_crd_and_unit_template_as_in_config(wheel: Path) -> None:
    expected = {f"keadm/data/{path.relative_to(ROOT / 'config').as_posix()}": path.read_bytes()
                for sub in ("crds", "systemd") for path in (ROOT / "config" / sub).rglob("*") if path.is_file()}
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name: archive.read(name) for name in archive.namelist() if name.startswith("keadm/data/")}
    assert shipped == expected


def test_keadm_installed_from_the_wheel_finds_its_crds_and_units_outside_the_repository(
        wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=120, capture_output=True)
    probe = ("from keadm.kubeapi import CRD_DIR, crd_documents; from keadm.service import UNIT_DIR, template; "
             "print(CRD_DIR); print(len(crd_documents())); print(UNIT_DIR); print(len(template('edgecore.service')))")
    shown = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                           capture_output=True, text=True, timeout=60, check=True).stdout.split()
    crd_dir, crds, unit_dir, unit_size = shown
    assert Path(crd_dir).is_relative_to(target) and Path(unit_dir).is_relative_to(target)
    assert int(crds) == len(list((ROOT / "config" / "crds").rglob("*.yaml")))
    assert int(unit_size) == len((ROOT / "config" / "systemd" / "edgecore.service").read_text())
