"""`python -m common.pki`: the set-up scripts' certificate maker is idempotent and makes valid chains."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from common.pki import load_cert, load_key_pair, node_name_from_cert, verify_chain

ROOT = Path(__file__).resolve().parents[2]


def pki(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "common.pki", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def test_ca_server_and_edge_certs_chain_and_are_kept_on_rerun(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    made = pki("ca", "--cert", str(ca_dir / "rootCA.crt"), "--key", str(ca_dir / "rootCA.key"))
    assert made.returncode == 0, made.stderr
    server = ["server-cert", "--ca-dir", str(ca_dir), "--cert", str(tmp_path / "s.crt"),
              "--key", str(tmp_path / "s.key"), "--ip", "127.0.0.1", "--dns", "localhost"]
    edge = ["edge-cert", "--ca-dir", str(ca_dir), "--node", "edge-1", "--cert", str(tmp_path / "e.crt"),
            "--key", str(tmp_path / "e.key")]
    assert "wrote" in pki(*server).stdout
    assert "wrote" in pki(*edge).stdout
    ca = load_cert(ca_dir / "rootCA.crt")
    verify_chain(load_cert(tmp_path / "s.crt"), ca, "server")
    verify_chain(load_cert(tmp_path / "e.crt"), ca, "client")
    assert node_name_from_cert(load_cert(tmp_path / "e.crt")) == "edge-1"
    assert stat.S_IMODE((tmp_path / "e.key").stat().st_mode) == 0o600
    before = (tmp_path / "e.crt").read_bytes()
    assert "kept" in pki(*edge).stdout
    assert (tmp_path / "e.crt").read_bytes() == before
    load_key_pair(tmp_path / "s.crt", tmp_path / "s.key")


def test_missing_ca_is_a_one_line_error(tmp_path: Path) -> None:
    result = pki("edge-cert", "--ca-dir", str(tmp_path), "--node", "n", "--cert", str(tmp_path / "c"),
                 "--key", str(tmp_path / "k"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "make the CA first" in result.stderr
    assert "Traceback" not in result.stderr
