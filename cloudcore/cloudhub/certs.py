"""CloudHub's certificate material at start: the CA and cloudcore's server certificate.

Upstream creates both when none exist; so do we, from the files named in cloudcore.yaml (storing
them in the control plane's `kubeedge` Secrets comes with the certificate service). Never replaces
a valid file; a file that does not verify against the CA stops the start with the reason.
"""

from __future__ import annotations

from pathlib import Path

from common.config.cloudcore import CloudHub
from common.log import get_logger
from common.pki import KeyPair
from common.pki.ensure import ensure_ca, ensure_server_cert

log = get_logger("cloudhub")


def ensure_cloud_certs(hub: CloudHub) -> tuple[KeyPair, KeyPair]:
    """(CA, server certificate), loaded or made as the config names them."""
    ca, made_ca = ensure_ca(Path(hub.tls_ca_file), Path(hub.tls_ca_key_file))
    if made_ca:
        log.info("created CA", cert=hub.tls_ca_file)
    ips = [address for address in hub.advertise_address if address]
    names = [name for name in hub.dns_names if name]
    server, made_server = ensure_server_cert(ca, Path(hub.tls_cert_file), Path(hub.tls_private_key_file),
                                             ips, names)
    if made_server:
        log.info("created server certificate", cert=hub.tls_cert_file, ips=",".join(ips), dns=",".join(names))
    return ca, server
