"""`edgecore`: the edge side of KubeEdge (see `edgecore --help`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common import cli
from common.config import DEFAULT_EDGECORE_CONFIG_PATH, load_edgecore
from edgecore import app

DESCRIPTION = ("EdgeCore: runs an edge node's pods and devices, keeps its objects in a local SQLite "
               "database, and syncs with CloudCore. Configured by upstream's edgecore.yaml; print one "
               "with --defaultconfig.")


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("edgecore", DEFAULT_EDGECORE_CONFIG_PATH, DESCRIPTION, load_edgecore, app.run, argv)


if __name__ == "__main__":
    sys.exit(main())
