"""X.509 material for KubeEdge: the CA, CloudCore's server certificate, edge CSRs and their signing,
chain verification, node identity from certificates, PEM/DER encoding and certificate/key files.

New keys are ECDSA P-256 like upstream; ECDSA and RSA keys loaded from files or Secrets are accepted.
Private keys are written 0600 and certificates 0644, atomically (temporary file in the same directory,
then rename), so a crash never leaves a half-written or briefly world-readable key behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import reprlib
import secrets
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CertificateError, CSRError, KeyMaterialError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""Key types the PKI signs with and stores."""

CertUsage = Literal["server", "client"]
"""TLS role a certificate is checked for: ServerAuth or ClientAuth extended key usage."""

Source = str | os.PathLike[str] | bytes
"""A file path, or the file's content as bytes."""

NODE_CN_PREFIX = "system:node:"
NODES_ORGANIZATION = "system:nodes"
LEGACY_EDGE_CN = "kubeedge.io"
LEGACY_EDGE_ORGANIZATION = "KubeEdge"

_CLOCK_SKEW = timedelta(minutes=5)
_MIN_RSA_BITS = 2048
_GO_EXT_KEY_USAGES = {1: ExtendedKeyUsageOID.SERVER_AUTH, 2: ExtendedKeyUsageOID.CLIENT_AUTH}
_USAGE_OIDS = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "ServerAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "ClientAuth",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "Any",
}


@dataclass(frozen=True)
class KeyPair:
    """A certificate and the private key of its public key."""

    cert: x509.Certificate
    key: PrivateKey

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Write the key (0600) and then the certificate (0644) as PEM."""
        write_key(key_path, self.key)
        write_cert(cert_path, self.cert)


# --- issuing -------------------------------------------------------------------------------------


def create_ca(common_name: str = "KubeEdge", valid_days: int = 36500) -> KeyPair:
    """A self-signed ECDSA P-256 CA (upstream default: CN KubeEdge, 100 years)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(valid_days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(signing=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue_server_cert(
    ca: KeyPair,
    common_name: str = "KubeEdge",
    organization: str = "KubeEdge",
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    dns_names: Iterable[str] = (),
    valid_days: int = 36500,
) -> KeyPair:
    """CloudCore's TLS server certificate: ServerAuth, SANs from the advertise addresses and DNS names.

    Empty DNS names are skipped (upstream's default `dnsNames` is `[""]`); an invalid IP address raises
    ValueError naming it.
    """
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(ip) if isinstance(ip, str) else ip) for ip in ip_addresses
    ]
    sans += [x509.DNSName(name) for name in dns_names if name]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    key = ec.generate_private_key(ec.SECP256R1())
    usages = (ExtendedKeyUsageOID.SERVER_AUTH,)
    cert = _issue_leaf(ca, subject, key.public_key(), usages, valid_days, list(dict.fromkeys(sans)))
    return KeyPair(cert, key)


def issue_client_cert(ca: KeyPair, node_name: str, valid_days: int = 365) -> KeyPair:
    """An edge node's client certificate (CN `system:node:<node>`, O `system:nodes`, ClientAuth),
    as the CA would sign it after bootstrap; for tests and tools that skip the CSR round trip."""
    return issue_user_cert(ca, _node_cn(node_name), (NODES_ORGANIZATION,), valid_days)


def issue_user_cert(ca: KeyPair, common_name: str, organizations: Sequence[str] = (),
                    valid_days: int = 365) -> KeyPair:
    """A ClientAuth certificate for a Kubernetes-style user: CN is the user, each O a group."""
    if not common_name:
        raise ValueError("common name must not be empty")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations),
         x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )
    cert = _issue_leaf(ca, subject, key.public_key(), (ExtendedKeyUsageOID.CLIENT_AUTH,), valid_days, [])
    return KeyPair(cert, key)


def create_edge_csr(node_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    """A fresh ECDSA P-256 key and the CSR edgecore sends to `/edge.crt` (upstream's subject:
    C=CN, ST=Zhejiang, L=Hangzhou, O=system:nodes, CN=system:node:<node>)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Zhejiang"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Hangzhou"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, _node_cn(node_name)),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return key, csr


def ext_key_usages_from_go(values: Iterable[object]) -> tuple[x509.ObjectIdentifier, ...]:
    """Map the `ExtKeyUsages` header (a JSON array of Go `x509.ExtKeyUsage` ints) to OIDs.

    Only 1 (ServerAuth) and 2 (ClientAuth) are issued; anything else, and an empty list, is a CSRError.
    Duplicates are dropped, order is kept.
    """
    usages: list[x509.ObjectIdentifier] = []
    for value in values:
        oid = None if isinstance(value, bool) or not isinstance(value, int) else _GO_EXT_KEY_USAGES.get(value)
        if oid is None:
            raise CSRError(
                f"unsupported ExtKeyUsages value {reprlib.repr(value)}: this CA only issues 1 (ServerAuth) "
                "and 2 (ClientAuth); send e.g. [2], or omit the header to get ClientAuth"
            )
        if oid not in usages:
            usages.append(oid)
    if not usages:
        raise CSRError("ExtKeyUsages is an empty list: send e.g. [2], or omit the header to get ClientAuth")
    return tuple(usages)


def sign_csr(
    ca: KeyPair,
    csr_der: bytes,
    valid_days: int = 365,
    usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    expected_node: str | None = None,
) -> x509.Certificate:
    """Sign a DER PKCS#10 CSR the way CloudHub's `/edge.crt` does: the certificate takes the CSR's CN
    and O, everything else in the CSR (other subject fields, requested extensions) is ignored.

    With `expected_node`, the CN must be `system:node:<expected_node>`. Raises CSRError for undecodable
    CSRs, bad CSR signatures, unsupported keys, a missing CN or a node mismatch.
    """
    if not usages:
        raise ValueError("sign_csr needs at least one extended key usage")
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError as exc:
        raise CSRError(
            "the certificate signing request is not a DER-encoded PKCS#10 CSR: send the CSR as raw DER "
            "(not PEM) in the request body"
        ) from exc
    try:
        public_key = csr.public_key()
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CSRError(
            "the CSR uses an unsupported key or signature algorithm: generate it with an ECDSA P-256 key"
        ) from exc
    if not signature_ok:
        raise CSRError(
            "the CSR's signature does not verify: it was corrupted or altered in transit; generate a new "
            "CSR signed with the node's private key"
        )
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) or (
        isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < _MIN_RSA_BITS
    ):
        raise CSRError(
            f"the CSR's {type(public_key).__name__} key is not accepted: use an ECDSA P-256 key "
            f"(what edgecore generates) or RSA of at least {_MIN_RSA_BITS} bits"
        )
    common_name = _single_common_name(csr.subject)
    if common_name is None:
        raise CSRError(
            "the CSR's subject must carry exactly one CommonName: request CN=system:node:<nodeName>, "
            "O=system:nodes"
        )
    if expected_node is not None and common_name != _node_cn(expected_node):
        raise CSRError(
            f"the CSR's CommonName {reprlib.repr(common_name)} does not match node "
            f"{reprlib.repr(expected_node)} (expected {_node_cn(expected_node)!r}): the NodeName header "
            "and the CSR must name the same node; re-run the bootstrap with the node's own name"
        )
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in _organizations(csr.subject)]
        + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )
    return _issue_leaf(ca, subject, public_key, tuple(dict.fromkeys(usages)), valid_days, [])


# --- verifying and identity ------------------------------------------------------------------------


def verify_chain(
    cert: x509.Certificate, ca_cert: x509.Certificate, usage: CertUsage | None, now: datetime | None = None
) -> None:
    """Check that `cert` was issued directly by `ca_cert`, both are valid at `now` (default: the current
    time; naive datetimes are UTC) and, when `usage` is given, that `cert` may be used for that TLS role.

    Like Go and OpenSSL, a certificate without an ExtendedKeyUsage extension is valid for any usage.
    After the checks that give specific messages, the chain is verified once more with cryptography's
    RFC 5280 verifier. Its extension rules are relaxed to what Go and OpenSSL enforce, so CAs made by
    upstream cloudcore or `openssl req -x509` work: the CA needs BasicConstraints CA:TRUE (critical or
    not) and, if it has a KeyUsage, keyCertSign; the leaf's extensions are not constrained.
    Raises CertificateError naming the cause and the fix.
    """
    at = as_utc(now)
    subject, ca_subject = _describe_cert(cert), _describe_cert(ca_cert)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(
            f"certificate {subject} was not issued by CA {ca_subject} (sha256 {ca_hash(ca_cert)[:12]}): "
            "it comes from another KubeEdge CA; use a certificate issued by this CA, or point the CA "
            "setting at the CA that issued it"
        ) from exc
    _check_window(
        ca_cert, at, f"CA certificate {ca_subject}", "create a new CA and re-issue every certificate from it"
    )
    _check_window(
        cert,
        at,
        f"certificate {subject}",
        "issue a new one (an edge node bootstraps again with a fresh token from `keadm gettoken`)",
    )
    if usage is not None:
        _check_usage(cert, subject, usage)
    policy = (
        verification.PolicyBuilder()
        .store(verification.Store([ca_cert]))
        .time(at)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=verification.ExtensionPolicy.permit_all())
    )
    try:
        policy.build_client_verifier().verify(cert, [])
    except verification.VerificationError as exc:
        raise CertificateError(
            f"certificate {subject} does not verify against CA {ca_subject} ({exc}): the CA certificate "
            "needs BasicConstraints CA:TRUE and, if it has a KeyUsage, keyCertSign; use a CA made by "
            "cloudcore or keadm"
        ) from exc


def node_name_from_cert(cert: x509.Certificate) -> str | None:
    """The node a certificate identifies (`CN=system:node:<name>` with `O=system:nodes`), else None.

    The legacy edge subject (O=KubeEdge, CN=kubeedge.io) names no node and also gives None.
    """
    common_name = _single_common_name(cert.subject)
    if common_name is None or NODES_ORGANIZATION not in _organizations(cert.subject):
        return None
    if not common_name.startswith(NODE_CN_PREFIX):
        return None
    return common_name.removeprefix(NODE_CN_PREFIX) or None


def is_edge_client_subject(cert: x509.Certificate) -> bool:
    """Whether the subject is one an edge node may rotate with: a node identity, or the legacy
    O=KubeEdge, CN=kubeedge.io (the organization compared case-insensitively: v1.15 edges wrote
    `kubeEdge`)."""
    if node_name_from_cert(cert) is not None:
        return True
    legacy_org = LEGACY_EDGE_ORGANIZATION.casefold()
    return _single_common_name(cert.subject) == LEGACY_EDGE_CN and any(
        org.casefold() == legacy_org for org in _organizations(cert.subject)
    )


def ca_hash(ca: x509.Certificate | bytes) -> str:
    """Lowercase hex sha256 of the CA certificate's DER (the first part of a join token)."""
    der = ca if isinstance(ca, bytes) else cert_to_der(ca)
    return hashlib.sha256(der).hexdigest()


# --- encoding and files ----------------------------------------------------------------------------


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_to_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def key_to_pem(key: PrivateKey) -> bytes:
    """Unencrypted traditional PEM: `EC PRIVATE KEY` (SEC1) for ECDSA, `RSA PRIVATE KEY` for RSA."""
    return _traditional(key, serialization.Encoding.PEM)


def key_to_der(key: PrivateKey) -> bytes:
    """Unencrypted traditional DER (SEC1 for ECDSA): the form stored in Secrets and used as token HMAC key."""
    return _traditional(key, serialization.Encoding.DER)


def load_cert(source: Source) -> x509.Certificate:
    """The first certificate in a PEM or DER file (path) or in PEM/DER bytes."""
    data = _read(source)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(
            f"{_describe_source(source)} is not a PEM or DER X.509 certificate: point the setting at a "
            "certificate file (PEM `CERTIFICATE` block or raw DER)"
        ) from exc


def load_private_key(source: Source) -> PrivateKey:
    """An unencrypted ECDSA or RSA private key from a PEM or DER (SEC1, PKCS#1 or PKCS#8) file or bytes."""
    data = _read(source)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(
            f"{_describe_source(source)} is not an unencrypted PEM or DER private key: point the setting "
            "at the key file (encrypted keys are not supported)"
        ) from exc
    if not isinstance(key, PrivateKey):
        raise KeyMaterialError(
            f"{_describe_source(source)} holds a {type(key).__name__}: only ECDSA and RSA keys are "
            "supported; generate an ECDSA P-256 key"
        )
    return key


def load_key_pair(cert_source: Source, key_source: Source) -> KeyPair:
    """Load a certificate and its key, checking that the key belongs to the certificate."""
    cert, key = load_cert(cert_source), load_private_key(key_source)
    if cert.public_key() != key.public_key():
        raise KeyMaterialError(
            f"the private key in {_describe_source(key_source)} does not belong to the certificate in "
            f"{_describe_source(cert_source)}: configure the key that was generated with that certificate"
        )
    return KeyPair(cert, key)


def write_key(path: str | os.PathLike[str], key: PrivateKey) -> None:
    """Atomically write `key` as PEM with mode 0600 (narrower if the file it replaces was narrower)."""
    target = Path(path)
    mode = 0o600
    with contextlib.suppress(FileNotFoundError):
        mode &= stat.S_IMODE(target.stat().st_mode)
    write_atomic(target, key_to_pem(key), mode)


def write_cert(path: str | os.PathLike[str], cert: x509.Certificate) -> None:
    """Atomically write `cert` as PEM with mode 0644."""
    write_atomic(path, cert_to_pem(cert), 0o644)


def as_utc(now: datetime | None) -> datetime:
    """`now` as an aware UTC datetime (None: the current time; naive: taken as UTC)."""
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC to the second, e.g. `2026-11-25T10:00:00Z`."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- internals -------------------------------------------------------------------------------------


def _validity(valid_days: int) -> tuple[datetime, datetime]:
    if valid_days <= 0:
        raise ValueError(f"valid_days must be positive, got {valid_days}")
    now = datetime.now(UTC)
    # Back-dated a little so that a peer whose clock runs slightly behind accepts a fresh certificate.
    return now - _CLOCK_SKEW, now + timedelta(days=valid_days)


def _key_usage(*, signing: bool, ca: bool = False, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _issue_leaf(
    ca: KeyPair,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    usages: Sequence[x509.ObjectIdentifier],
    valid_days: int,
    sans: list[x509.GeneralName],
) -> x509.Certificate:
    not_before, not_after = _validity(valid_days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # RSA key exchange in TLS 1.2 needs keyEncipherment; ECDSA keys only sign.
            _key_usage(signing=True, key_encipherment=isinstance(public_key, rsa.RSAPublicKey)),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(ca), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def _authority_key_id(ca: KeyPair) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _traditional(key: PrivateKey, encoding: serialization.Encoding) -> bytes:
    return key.private_bytes(
        encoding, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _node_cn(node_name: str) -> str:
    if not node_name:
        raise ValueError("node name must not be empty")
    return NODE_CN_PREFIX + node_name


def _attribute_text(attribute: x509.NameAttribute[str | bytes]) -> str:
    value = attribute.value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _single_common_name(name: x509.Name) -> str | None:
    common_names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return _attribute_text(common_names[0]) if len(common_names) == 1 else None


def _organizations(name: x509.Name) -> list[str]:
    return [_attribute_text(attr) for attr in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def _describe_cert(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string()}'"


def _require_cert_sign(
    _policy: verification.Policy, _cert: x509.Certificate, ext: x509.KeyUsage | None
) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise ValueError("KeyUsage lacks keyCertSign")


_CA_POLICY = (
    verification.ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, verification.Criticality.AGNOSTIC, None)  # cA is checked built in
    .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _require_cert_sign)
)


def _check_window(cert: x509.Certificate, at: datetime, what: str, renew_fix: str) -> None:
    if at < cert.not_valid_before_utc:
        raise CertificateError(
            f"{what} is not valid before {format_time(cert.not_valid_before_utc)} (this host's clock says "
            f"{format_time(at)}): fix the clock (enable NTP) or wait until the certificate becomes valid"
        )
    if at > cert.not_valid_after_utc:
        raise CertificateError(f"{what} expired at {format_time(cert.not_valid_after_utc)}: {renew_fix}")


def _check_usage(cert: x509.Certificate, subject: str, usage: CertUsage) -> None:
    wanted = _USAGE_OIDS[usage]
    try:
        granted = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return
    except ValueError as exc:
        raise CertificateError(
            f"certificate {subject} has malformed extensions: re-issue it from the CA"
        ) from exc
    if wanted in granted or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in granted:
        return
    names = ", ".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in granted) or "none"
    raise CertificateError(
        f"certificate {subject} is not valid for TLS {usage} authentication (its extended key usages: "
        f"{names}): use a certificate issued with the {_EKU_NAMES[wanted]} extended key usage"
    )


def _read(source: Source) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def _describe_source(source: Source) -> str:
    return f"{len(source)} bytes of input" if isinstance(source, bytes) else f"file {os.fspath(source)}"


def _make_dirs(directory: Path) -> None:
    if directory.is_dir():
        return
    _make_dirs(directory.parent)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o755)


def write_atomic(target: str | os.PathLike[str], data: bytes, mode: int) -> None:
    """Replace `target` with `data` atomically (temp file in the same directory, fsync, rename) with exactly
    `mode`; the content is never readable with a wider mode, even briefly. Parent directories are made 0755."""
    target = Path(target)
    _make_dirs(target.parent)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # exact mode whatever the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
