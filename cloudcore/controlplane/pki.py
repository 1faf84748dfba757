"""The control plane's own certificates and the admin kubeconfig, kept in its data directory.

`DIR/pki/`: `ca.{crt,key}` (the cluster CA), `apiserver.{crt,key}` (serving, SANs for loopback, the
bind address, the host name and the in-cluster `kubernetes` service names), `admin.{crt,key}`
(CN `kubernetes-admin`, O `system:masters`), `apiserver-kubelet-client.{crt,key}` (the API server as a
client of kubelets for `pods/log`: CN `kube-apiserver-kubelet-client`, O `system:masters`, as kubeadm
makes it). Existing valid files are kept. `DIR/admin.kubeconfig` embeds the CA and the admin
credentials, mode 0600.
"""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.pki import KeyPair, cert_to_pem, issue_user_cert, key_to_pem, load_key_pair
from common.pki.ensure import ensure_ca, ensure_server_cert

ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "system:masters"
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")


@dataclass(frozen=True, slots=True)
class ControlPlanePKI:
    ca: KeyPair
    serving: KeyPair
    admin: KeyPair
    directory: Path
    kubelet_client: KeyPair

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def serving_files(self) -> tuple[Path, Path]:
        return self.directory / "apiserver.crt", self.directory / "apiserver.key"

    @property
    def kubelet_client_files(self) -> tuple[Path, Path]:
        return self.directory / "apiserver-kubelet-client.crt", self.directory / "apiserver-kubelet-client.key"


def ensure_pki(data_dir: Path, bind_address: str, extra_sans: list[str]) -> ControlPlanePKI:
    directory = data_dir / "pki"
    ca, _ = ensure_ca(directory / "ca.crt", directory / "ca.key")
    ips = ["127.0.0.1", "10.96.0.1", *([bind_address] if bind_address not in ("0.0.0.0", "::") else []),
           *(s for s in extra_sans if _is_ip(s))]
    names = ["localhost", socket.gethostname(), *SERVICE_NAMES, *(s for s in extra_sans if not _is_ip(s))]
    serving, _ = ensure_server_cert(ca, directory / "apiserver.crt", directory / "apiserver.key",
                                    dict.fromkeys(ips), dict.fromkeys(names))
    admin = _ensure_user_cert(ca, directory / "admin", ADMIN_USER)
    kubelet_client = _ensure_user_cert(ca, directory / "apiserver-kubelet-client", KUBELET_CLIENT_USER)
    return ControlPlanePKI(ca, serving, admin, directory, kubelet_client)


def _ensure_user_cert(ca: KeyPair, stem: Path, user: str) -> KeyPair:
    """`<stem>.crt`/`<stem>.key` for a `system:masters` client certificate: kept when both exist, else made."""
    cert, key = stem.with_suffix(".crt"), stem.with_suffix(".key")
    if cert.exists() and key.exists():
        return load_key_pair(cert, key)
    pair = issue_user_cert(ca, user, (ADMIN_GROUP,), valid_days=3650)
    pair.write(cert, key)
    return pair


def _is_ip(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except OSError:
        return False
    return True


def kubeconfig(server: str, pki: ControlPlanePKI, user: KeyPair | None = None, user_name: str = "admin") -> str:
    credentials = user or pki.admin

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "kubeedge", "cluster": {"server": server,
                                                      "certificate-authority-data": b64(cert_to_pem(pki.ca.cert))}}],
        "users": [{"name": user_name, "user": {"client-certificate-data": b64(cert_to_pem(credentials.cert)),
                                               "client-key-data": b64(key_to_pem(credentials.key))}}],
        "contexts": [{"name": "kubeedge", "context": {"cluster": "kubeedge", "user": user_name}}],
        "current-context": "kubeedge",
    }, sort_keys=False)
