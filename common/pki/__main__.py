"""`python -m common.pki`: make the CA and certificates a host needs, for set-up scripts.

Every command keeps files that already exist and verify (idempotent): run it again and nothing
changes. Keys are written 0600.

    python -m common.pki ca --cert /etc/kubeedge/ca/rootCA.crt --key /etc/kubeedge/ca/rootCA.key
    python -m common.pki server-cert --ca-dir /etc/kubeedge/ca --cert ... --key ... --ip 127.0.0.1
    python -m common.pki edge-cert --ca-dir /etc/kubeedge/ca --node edge-1 --cert ... --key ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.pki.certs import load_key_pair
from common.pki.ensure import ensure_ca, ensure_edge_cert, ensure_server_cert
from common.pki.errors import PKIError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.pki", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ca = commands.add_parser("ca", help="a self-signed CA (ECDSA P-256, CN KubeEdge)")
    ca.add_argument("--cert", type=Path, required=True)
    ca.add_argument("--key", type=Path, required=True)
    server = commands.add_parser("server-cert", help="cloudcore's server certificate signed by the CA")
    client = commands.add_parser("edge-cert", help="an edge node's client certificate signed by the CA")
    for sub in (server, client):
        sub.add_argument("--ca-dir", type=Path, required=True, help="holds rootCA.crt, rootCA.key")
        sub.add_argument("--cert", type=Path, required=True)
        sub.add_argument("--key", type=Path, required=True)
    server.add_argument("--ip", action="append", default=[], help="IP SAN (repeatable)")
    server.add_argument("--dns", action="append", default=[], help="DNS SAN (repeatable)")
    client.add_argument("--node", required=True, help="node name (CN system:node:<node>)")
    args = parser.parse_args(argv)
    try:
        if args.command == "ca":
            _, made = ensure_ca(args.cert, args.key)
        else:
            authority = load_key_pair(args.ca_dir / "rootCA.crt", args.ca_dir / "rootCA.key")
            if args.command == "server-cert":
                _, made = ensure_server_cert(authority, args.cert, args.key, args.ip, args.dns)
            else:
                _, made = ensure_edge_cert(authority, args.node, args.cert, args.key)
    except FileNotFoundError as exc:
        print(f"error: {exc.filename} not found (make the CA first with the `ca` command)", file=sys.stderr)
        return 1
    except (PKIError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.cert} and {args.key} (0600)" if made else f"kept {args.cert}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
