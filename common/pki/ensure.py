"""Keep-or-make for certificate files: load what is on disk and still valid, make what is missing.

Used by cloudcore at start (upstream creates its CA and server certificate when none exist) and by
`python -m common.pki` for set-up scripts, so both follow one rule: never replace a valid file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from common.pki.certs import (
    CertUsage,
    KeyPair,
    create_ca,
    issue_client_cert,
    issue_server_cert,
    load_key_pair,
    verify_chain,
)


def _keep_or_make(cert: Path, key: Path, ca: KeyPair | None, usage: CertUsage | None,
                  make: Callable[[], KeyPair]) -> tuple[KeyPair, bool]:
    """(pair, made): the pair on disk when both files exist and verify, else a new one written."""
    if cert.exists() and key.exists():
        pair = load_key_pair(cert, key)
        if ca is not None and usage is not None:
            verify_chain(pair.cert, ca.cert, usage)
        return pair, False
    pair = make()
    pair.write(cert, key)
    return pair, True


def ensure_ca(cert: Path, key: Path) -> tuple[KeyPair, bool]:
    return _keep_or_make(cert, key, None, None, create_ca)


def ensure_server_cert(ca: KeyPair, cert: Path, key: Path, ip_addresses: Iterable[str],
                       dns_names: Iterable[str]) -> tuple[KeyPair, bool]:
    ips, names = list(ip_addresses), list(dns_names)
    return _keep_or_make(cert, key, ca, "server",
                         lambda: issue_server_cert(ca, ip_addresses=ips, dns_names=names))


def ensure_edge_cert(ca: KeyPair, node_name: str, cert: Path, key: Path) -> tuple[KeyPair, bool]:
    return _keep_or_make(cert, key, ca, "client", lambda: issue_client_cert(ca, node_name))
