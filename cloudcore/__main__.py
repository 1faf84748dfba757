"""`cloudcore`: the cloud side of KubeEdge (see `cloudcore --help`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cloudcore import app
from common import cli
from common.config import DEFAULT_CLOUDCORE_CONFIG_PATH, load_cloudcore

DESCRIPTION = ("CloudCore: serves edge nodes over CloudHub (WebSocket :10000, QUIC :10001, certificates on "
               ":10002) and keeps them in sync with the Kubernetes API. Configured by upstream's "
               "cloudcore.yaml; print one with --defaultconfig. `cloudcore controlplane --help`: the embedded "
               "Kubernetes API server for hosts without a cluster.")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["controlplane"]:
        from cloudcore.controlplane import server

        return server.main(args[1:])
    return cli.main("cloudcore", DEFAULT_CLOUDCORE_CONFIG_PATH, DESCRIPTION, load_cloudcore, app.run, args)


if __name__ == "__main__":
    sys.exit(main())
