"""common.pki.certs: CA and certificate issuing, CSR signing, chain checks, identity, encoding and files."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.pki import (
    CertificateError,
    CSRError,
    KeyMaterialError,
    KeyPair,
    PKIError,
    ca_hash,
    cert_to_der,
    cert_to_pem,
    create_ca,
    create_edge_csr,
    ext_key_usages_from_go,
    is_edge_client_subject,
    issue_client_cert,
    issue_server_cert,
    key_to_der,
    key_to_pem,
    load_cert,
    load_key_pair,
    load_private_key,
    node_name_from_cert,
    sign_csr,
    verify_chain,
    write_cert,
    write_key,
)

NODE = "edge-1"
T = TypeVar("T", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def server(ca: KeyPair) -> KeyPair:
    return issue_server_cert(ca, ip_addresses=["127.0.0.1", "10.0.0.5"], dns_names=["", "cloud.example"])


@pytest.fixture(scope="module")
def client(ca: KeyPair) -> KeyPair:
    return issue_client_cert(ca, NODE)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _ext(cert: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return cert.extensions.get_extension_for_class(kind)


def _csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def _custom_csr(subject: list[tuple[x509.ObjectIdentifier, str]]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in subject])
    return _csr_der(x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256()))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- CA --------------------------------------------------------------------------------------------


def test_ca_is_self_signed_ecdsa_p256_ca(ca: KeyPair) -> None:
    cert = ca.cert
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "KubeEdge"
    cert.verify_directly_issued_by(cert)
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert isinstance(ca.key.curve, ec.SECP256R1)
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert _ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        ca.key.public_key()
    )
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > timedelta(days=36499)
    verify_chain(cert, cert, None)


def test_ca_common_name_and_validity_are_configurable() -> None:
    ca = create_ca("my-ca", valid_days=10)
    assert ca.cert.subject.rfc4514_string() == "CN=my-ca"
    assert ca.cert.not_valid_after_utc - datetime.now(UTC) < timedelta(days=11)


def test_ca_hash_is_sha256_of_der(ca: KeyPair) -> None:
    expected = hashlib.sha256(cert_to_der(ca.cert)).hexdigest()
    assert ca_hash(ca.cert) == expected == ca_hash(cert_to_der(ca.cert))
    assert len(expected) == 64 and expected == expected.lower()


# --- server and client certificates -------------------------------------------------------------------


def test_server_cert_has_sans_eku_and_verifies(ca: KeyPair, server: KeyPair) -> None:
    cert = server.cert
    assert cert.subject.rfc4514_string() == "CN=KubeEdge,O=KubeEdge"
    sans = _ext(cert, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
    ]
    assert sans.get_values_for_type(x509.DNSName) == ["cloud.example"]  # the empty name is skipped
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not _ext(cert, x509.BasicConstraints).value.ca
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
        _ext(ca.cert, x509.SubjectKeyIdentifier).value.digest
    )
    verify_chain(cert, ca.cert, "server")
    verify_chain(cert, ca.cert, None)


def test_server_cert_is_not_a_client_cert(ca: KeyPair, server: KeyPair) -> None:
    with pytest.raises(CertificateError, match=r"not valid for TLS client authentication.*ClientAuth"):
        verify_chain(server.cert, ca.cert, "client")


def test_server_cert_fails_against_another_ca(other_ca: KeyPair, server: KeyPair) -> None:
    with pytest.raises(CertificateError, match="was not issued by CA") as info:
        verify_chain(server.cert, other_ca.cert, "server")
    assert ca_hash(other_ca.cert)[:12] in str(info.value)


def test_server_cert_without_sans_and_with_ipv6(ca: KeyPair) -> None:
    bare = issue_server_cert(ca, dns_names=[""])
    with pytest.raises(x509.ExtensionNotFound):
        _ext(bare.cert, x509.SubjectAlternativeName)
    v6 = issue_server_cert(ca, ip_addresses=[ipaddress.ip_address("::1"), "::1"])
    assert _ext(v6.cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("::1")
    ]


def test_server_cert_rejects_an_invalid_ip(ca: KeyPair) -> None:
    with pytest.raises(ValueError, match=r"cloud\.example"):
        issue_server_cert(ca, ip_addresses=["cloud.example"])


def test_client_cert(ca: KeyPair, client: KeyPair) -> None:
    cert = client.cert
    assert cert.subject.rfc4514_string() == f"CN=system:node:{NODE},O=system:nodes"
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=366)
    verify_chain(cert, ca.cert, "client")
    with pytest.raises(CertificateError, match="server authentication"):
        verify_chain(cert, ca.cert, "server")
    with pytest.raises(ValueError, match="node name"):
        issue_client_cert(ca, "")


# --- CSR -------------------------------------------------------------------------------------------


def test_edge_csr_subject_matches_upstream() -> None:
    key, csr = create_edge_csr(NODE)
    assert isinstance(key.curve, ec.SECP256R1)
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == (
        f"CN=system:node:{NODE},O=system:nodes,L=Hangzhou,ST=Zhejiang,C=CN"
    )


def test_csr_sign_round_trip(ca: KeyPair) -> None:
    key, csr = create_edge_csr(NODE)
    cert = sign_csr(ca, _csr_der(csr), expected_node=NODE)
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == f"CN=system:node:{NODE},O=system:nodes"  # only CN and O copied
    assert cert.issuer == ca.cert.subject
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not _ext(cert, x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=366)
    verify_chain(cert, ca.cert, "client")
    assert node_name_from_cert(cert) == NODE


def test_csr_sign_with_go_usages(ca: KeyPair) -> None:
    _, csr = create_edge_csr(NODE)
    cert = sign_csr(ca, _csr_der(csr), valid_days=30, usages=ext_key_usages_from_go([1, 2]))
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    verify_chain(cert, ca.cert, "server")
    verify_chain(cert, ca.cert, "client")


def test_csr_with_tampered_subject_is_rejected(ca: KeyPair) -> None:
    _, csr = create_edge_csr("edge-1")
    forged = _csr_der(csr).replace(b"system:node:edge-1", b"system:node:edge-2")
    with pytest.raises(CSRError, match="signature does not verify"):
        sign_csr(ca, forged)


def test_csr_with_corrupted_signature_is_rejected(ca: KeyPair) -> None:
    _, csr = create_edge_csr(NODE)
    der = bytearray(_csr_der(csr))
    der[-1] ^= 0x01
    with pytest.raises(CSRError, match="signature does not verify"):
        sign_csr(ca, bytes(der))


@pytest.mark.parametrize("body", [b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\n"])
def test_undecodable_csr_is_rejected(ca: KeyPair, body: bytes) -> None:
    with pytest.raises(CSRError, match="not a DER-encoded PKCS#10 CSR"):
        sign_csr(ca, body)


def test_csr_node_mismatch_is_rejected(ca: KeyPair) -> None:
    _, csr = create_edge_csr("edge-1")
    with pytest.raises(CSRError, match="does not match node 'edge-2'"):
        sign_csr(ca, _csr_der(csr), expected_node="edge-2")


def test_csr_without_common_name_is_rejected(ca: KeyPair) -> None:
    der = _custom_csr([(NameOID.ORGANIZATION_NAME, "system:nodes")])
    with pytest.raises(CSRError, match="exactly one CommonName"):
        sign_csr(ca, der)


def test_csr_with_weak_rsa_key_is_rejected(ca: KeyPair) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{NODE}")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    with pytest.raises(CSRError, match="RSA of at least 2048 bits"):
        sign_csr(ca, _csr_der(csr))


def test_csr_ignores_requested_extensions(ca: KeyPair) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{NODE}")])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    assert not _ext(sign_csr(ca, _csr_der(csr)), x509.BasicConstraints).value.ca


def test_ext_key_usages_from_go() -> None:
    assert ext_key_usages_from_go([2]) == (ExtendedKeyUsageOID.CLIENT_AUTH,)
    assert ext_key_usages_from_go([2, 1, 2]) == (
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
    )


@pytest.mark.parametrize("values", [[], [0], [3], [True], ["2"], [2.0], [None]])
def test_ext_key_usages_from_go_rejects(values: list[object]) -> None:
    with pytest.raises(CSRError, match="ExtKeyUsages"):
        ext_key_usages_from_go(values)


def test_sign_csr_needs_a_usage(ca: KeyPair) -> None:
    _, csr = create_edge_csr(NODE)
    with pytest.raises(ValueError, match="at least one"):
        sign_csr(ca, _csr_der(csr), usages=())


# --- verify_chain --------------------------------------------------------------------------------------


def test_verify_chain_rejects_expired_and_not_yet_valid(ca: KeyPair) -> None:
    short = issue_client_cert(ca, NODE, valid_days=1)
    now = datetime.now(UTC)
    verify_chain(short.cert, ca.cert, "client", now=now + timedelta(hours=23))
    with pytest.raises(
        CertificateError, match=r"expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: issue a new one"
    ):
        verify_chain(short.cert, ca.cert, "client", now=now + timedelta(days=2))
    with pytest.raises(CertificateError, match=r"not valid before .*fix the clock"):
        verify_chain(short.cert, ca.cert, "client", now=now - timedelta(days=1))


def test_verify_chain_accepts_naive_now_as_utc(ca: KeyPair) -> None:
    short = issue_client_cert(ca, NODE, valid_days=1)
    naive_future = (datetime.now(UTC) + timedelta(days=2)).replace(tzinfo=None)
    with pytest.raises(CertificateError, match="expired"):
        verify_chain(short.cert, ca.cert, "client", now=naive_future)


def test_verify_chain_rejects_an_expired_ca() -> None:
    short_ca = create_ca(valid_days=1)
    leaf = issue_client_cert(short_ca, NODE)
    with pytest.raises(CertificateError, match="CA certificate 'CN=KubeEdge' expired"):
        verify_chain(leaf.cert, short_ca.cert, "client", now=datetime.now(UTC) + timedelta(days=2))


def test_verify_chain_rejects_a_leaf_used_as_ca(client: KeyPair) -> None:
    _, csr = create_edge_csr("edge-2")
    forged = sign_csr(client, _csr_der(csr))  # signed by a leaf certificate's key
    with pytest.raises(CertificateError, match=r"does not verify against CA.*basicConstraints"):
        verify_chain(forged, client.cert, "client")


def _foreign_ca(basic_constraints_critical: bool, key_usage: x509.KeyUsage | None) -> KeyPair:
    """A CA as other tools make it (Go: KeyUsage with keyEncipherment; `openssl req -x509`: none)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "foreign")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1024)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=basic_constraints_critical)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return KeyPair(builder.sign(key, hashes.SHA256()), key)


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(True, False, True, False, False, cert_sign, False, False, False)


@pytest.mark.parametrize(
    ("critical", "key_usage"),
    [(True, _key_usage(cert_sign=True)), (True, None), (False, _key_usage(cert_sign=True))],
    ids=["go-style", "no-key-usage", "non-critical-basic-constraints"],
)
def test_verify_chain_accepts_cas_made_by_other_tools(
    critical: bool, key_usage: x509.KeyUsage | None
) -> None:
    foreign = _foreign_ca(critical, key_usage)
    verify_chain(issue_client_cert(foreign, NODE).cert, foreign.cert, "client")


def test_verify_chain_rejects_a_ca_without_cert_sign() -> None:
    foreign = _foreign_ca(True, _key_usage(cert_sign=False))
    with pytest.raises(CertificateError, match="KeyUsage lacks keyCertSign"):
        verify_chain(issue_client_cert(foreign, NODE).cert, foreign.cert, "client")


def test_verify_chain_accepts_certs_without_eku_for_any_usage(ca: KeyPair) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no-eku")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    verify_chain(cert, ca.cert, "server")
    verify_chain(cert, ca.cert, "client")


# --- identity ----------------------------------------------------------------------------------------


def test_node_name_from_cert(ca: KeyPair, client: KeyPair, server: KeyPair) -> None:
    assert node_name_from_cert(client.cert) == NODE
    assert is_edge_client_subject(client.cert)
    assert node_name_from_cert(server.cert) is None
    assert not is_edge_client_subject(server.cert)


@pytest.mark.parametrize("org", ["KubeEdge", "kubeEdge"])
def test_legacy_edge_subject(ca: KeyPair, org: str) -> None:
    der = _custom_csr([(NameOID.ORGANIZATION_NAME, org), (NameOID.COMMON_NAME, "kubeedge.io")])
    cert = sign_csr(ca, der)
    assert node_name_from_cert(cert) is None
    assert is_edge_client_subject(cert)


@pytest.mark.parametrize(
    "subject",
    [
        [(NameOID.ORGANIZATION_NAME, "someone"), (NameOID.COMMON_NAME, "system:node:edge-1")],
        [(NameOID.ORGANIZATION_NAME, "system:nodes"), (NameOID.COMMON_NAME, "system:node:")],
        [(NameOID.ORGANIZATION_NAME, "system:nodes"), (NameOID.COMMON_NAME, "edge-1")],
        [(NameOID.ORGANIZATION_NAME, "someone"), (NameOID.COMMON_NAME, "kubeedge.io")],
    ],
)
def test_not_an_edge_subject(ca: KeyPair, subject: list[tuple[x509.ObjectIdentifier, str]]) -> None:
    cert = sign_csr(ca, _custom_csr(subject))
    assert node_name_from_cert(cert) is None
    assert not is_edge_client_subject(cert)


# --- encoding --------------------------------------------------------------------------------------


def test_load_cert_from_pem_and_der(tmp_path: Path, client: KeyPair) -> None:
    pem, der = cert_to_pem(client.cert), cert_to_der(client.cert)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    (tmp_path / "c.pem").write_bytes(pem)
    (tmp_path / "c.der").write_bytes(der)
    for source in (pem, der, tmp_path / "c.pem", str(tmp_path / "c.der")):
        assert load_cert(source) == client.cert


def test_load_cert_rejects_garbage(tmp_path: Path, client: KeyPair) -> None:
    (tmp_path / "bad.crt").write_bytes(key_to_pem(client.key))
    with pytest.raises(CertificateError, match=r"file .*bad\.crt is not a PEM or DER X\.509 certificate"):
        load_cert(tmp_path / "bad.crt")
    with pytest.raises(CertificateError, match="7 bytes of input"):
        load_cert(b"garbage")


def test_key_encodings(client: KeyPair) -> None:
    pem = key_to_pem(client.key)
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    der = key_to_der(client.key)
    sec1 = client.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert der == sec1
    pkcs8 = client.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for source in (pem, der, pkcs8):
        assert load_private_key(source).private_numbers() == client.key.private_numbers()


def test_load_private_key_rejects_garbage_and_unsupported_types() -> None:
    with pytest.raises(KeyMaterialError, match="not an unencrypted PEM or DER private key"):
        load_private_key(b"garbage")
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyMaterialError, match="encrypted keys are not supported"):
        load_private_key(encrypted)
    ed_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyMaterialError, match="only ECDSA and RSA keys"):
        load_private_key(ed_key)


def test_rsa_ca_is_usable() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_ca = create_ca()
    rsa_ca = KeyPair(
        x509.CertificateBuilder()
        .subject_name(ec_ca.cert.subject)
        .issuer_name(ec_ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(1024)
        .not_valid_before(ec_ca.cert.not_valid_before_utc)
        .not_valid_after(ec_ca.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ext(ec_ca.cert, x509.KeyUsage).value, critical=True)
        .sign(key, hashes.SHA256()),
        key,
    )
    assert key_to_pem(key).startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    leaf = issue_client_cert(rsa_ca, NODE)  # CA without SubjectKeyIdentifier: AKI from its public key
    verify_chain(leaf.cert, rsa_ca.cert, "client")


# --- files -----------------------------------------------------------------------------------------


def test_write_creates_files_with_modes(tmp_path: Path, client: KeyPair, umask_022: None) -> None:
    cert_path, key_path = tmp_path / "etc" / "certs" / "server.crt", tmp_path / "etc" / "keys" / "server.key"
    client.write(cert_path, key_path)
    assert _mode(key_path) == 0o600
    assert _mode(cert_path) == 0o644
    assert _mode(tmp_path / "etc") == _mode(tmp_path / "etc" / "certs") == 0o755
    loaded = load_key_pair(cert_path, key_path)
    assert loaded.cert == client.cert
    assert loaded.key.private_numbers() == client.key.private_numbers()
    assert sorted(p.name for p in cert_path.parent.iterdir()) == ["server.crt"]  # no temporary files left


def test_cert_mode_ignores_a_strict_umask(tmp_path: Path, client: KeyPair) -> None:
    previous = os.umask(0o077)
    try:
        write_cert(tmp_path / "ca.crt", client.cert)
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "ca.crt") == 0o644


def test_write_key_narrows_an_existing_world_readable_file(tmp_path: Path, client: KeyPair) -> None:
    key_path = tmp_path / "server.key"
    key_path.write_bytes(b"old")
    key_path.chmod(0o644)
    write_key(key_path, client.key)
    assert _mode(key_path) == 0o600
    assert key_path.read_bytes() == key_to_pem(client.key)


def test_write_key_never_widens_an_existing_file(tmp_path: Path, client: KeyPair) -> None:
    key_path = tmp_path / "server.key"
    key_path.write_bytes(b"old")
    key_path.chmod(0o400)
    write_key(key_path, client.key)
    assert _mode(key_path) == 0o400
    assert load_private_key(key_path).private_numbers() == client.key.private_numbers()


def test_load_key_pair_detects_a_foreign_key(tmp_path: Path, ca: KeyPair, client: KeyPair) -> None:
    write_cert(tmp_path / "c.crt", client.cert)
    write_key(tmp_path / "c.key", ca.key)
    with pytest.raises(KeyMaterialError, match="does not belong to the certificate"):
        load_key_pair(tmp_path / "c.crt", tmp_path / "c.key")


def test_errors_share_one_base() -> None:
    for error in (CertificateError, CSRError, KeyMaterialError):
        assert issubclass(error, PKIError)
