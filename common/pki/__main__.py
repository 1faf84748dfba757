"""`python -m common.pki`: make the CA and certificates a host needs, for set-up scripts.

Every command keeps files that already exist and are valid (idempotent): run it again and nothing
changes. Keys are written 0600.

    python -m common.pki ca --cert /etc/kubeedge/ca/rootCA.crt --key /etc/kubeedge/ca/rootCA.key
    python -m common.pki server-cert --ca-dir /etc/kubeedge/ca --cert ... --key ... --ip 127.0.0.1
    python -m common.pki edge-cert --ca-dir /etc/kubeedge/ca --node edge-1 --cert ... --key ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from common.pki.certs import (
    KeyPair,
    create_ca,
    issue_client_cert,
    issue_server_cert,
    load_key_pair,
    verify_chain,
)
from common.pki.errors import PKIError


def _existing(cert: Path, key: Path, ca: KeyPair | None, usage: str | None) -> KeyPair | None:
    if not (cert.exists() and key.exists()):
        return None
    pair = load_key_pair(cert, key)
    if ca is not None:
        verify_chain(pair.cert, ca.cert, "server" if usage == "server" else "client")
    return pair


def _ensure(cert: Path, key: Path, ca: KeyPair | None, usage: str | None, make: Callable[[], KeyPair]) -> str:
    if _existing(cert, key, ca, usage) is not None:
        return f"kept {cert}"
    make().write(cert, key)
    return f"wrote {cert} and {key} (0600)"


def _ca(ca_dir: Path) -> KeyPair:
    return load_key_pair(ca_dir / "rootCA.crt", ca_dir / "rootCA.key")


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
            print(_ensure(args.cert, args.key, None, None, create_ca))
        elif args.command == "server-cert":
            authority = _ca(args.ca_dir)
            print(_ensure(args.cert, args.key, authority, "server",
                          lambda: issue_server_cert(authority, ip_addresses=args.ip, dns_names=args.dns)))
        else:
            authority = _ca(args.ca_dir)
            print(_ensure(args.cert, args.key, authority, "client",
                          lambda: issue_client_cert(authority, args.node)))
    except FileNotFoundError as exc:
        print(f"error: {exc.filename} not found (make the CA first with the `ca` command)", file=sys.stderr)
        return 1
    except (PKIError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
