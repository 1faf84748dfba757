"""Unknown keys in edgecore.yaml / cloudcore.yaml: loading goes on (upstream configs carry keys we do not
implement) and each one is a warning naming its full key path and line, in the daemon's log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import log
from common.config import load_cloudcore, load_edgecore

EDGECORE = """\
apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
modules:
  edged:
    hostnameOverride: edge-1
    foo: 1
    tailoredKubeletConfig:
      futureKnob: true
  edgeHub:
    heartbeat: 20
notAKey: x
"""

CLOUDCORE = """\
apiVersion: cloudcore.config.kubeedge.io/v1alpha2
modules:
  edgeController:
    nodeUpdateFrequency: 12
    bar: {baz: 1}
  iptablesManager:
    enable: false
"""


@pytest.fixture
def klog() -> Iterator[io.StringIO]:
    """The process's logging as the daemons set it up (klog lines), restored afterwards."""
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate)
             for logger in (logging.getLogger(), logging.getLogger(log.ROOT))]
    stream = io.StringIO()
    log.setup(2, stream)
    try:
        yield stream
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def test_edgecore_yaml_with_unknown_keys_loads_and_warns_each_path(tmp_path: Path, klog: io.StringIO) -> None:
    path = tmp_path / "edgecore.yaml"
    path.write_text(EDGECORE)
    config = load_edgecore(path, bootstrap_token_path=tmp_path / "no-token")
    assert config.modules.edged.hostname_override == "edge-1" and config.modules.edge_hub.heartbeat == 20
    lines = [line for line in klog.getvalue().splitlines() if "unknown key" in line]
    assert len(lines) == 3
    for number, key in ((6, "modules.edged.foo"), (8, "modules.edged.tailoredKubeletConfig.futureKnob"),
                        (11, "notAKey")):
        assert any(line.startswith("W") and f"{path}:{number}: unknown key {key} (ignored)" in line for line in lines)


def test_cloudcore_yaml_with_unknown_keys_loads_and_warns_each_path(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cloudcore.yaml"
    path.write_text(CLOUDCORE)
    with caplog.at_level(logging.WARNING, logger="config"):
        config = load_cloudcore(path)
    assert config.modules.edge_controller.node_update_frequency == 12
    warnings = [r.getMessage() for r in caplog.records if r.name == "config"]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "config")
    assert f"{path}:5: unknown key modules.edgeController.bar (ignored)" in warnings
    assert all("unknown key" in w for w in warnings)
