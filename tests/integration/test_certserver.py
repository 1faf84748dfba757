"""CloudHub's certificate service against a real control plane, and the edge side that bootstraps with it.

The control plane runs as its own process (the `controlplane` fixture); cloudcore's secrets code talks to
it through kubernetes_asyncio with the admin kubeconfig; the HTTPS server runs in-process on a free
loopback port, and the edge side writes its files into tmp_path. Unit checks of the rotation schedule and
the token cleanup of edgecore.yaml are at the end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import random
import ssl
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from cloudcore.cloudhub.certserver import CertServer
from cloudcore.cloudhub.secrets import (
    CA_DATA,
    CA_SECRET,
    NAMESPACE,
    TOKEN_DATA,
    TOKEN_SECRET,
    CloudPKI,
    TokenRefresher,
    prepare_cloud_pki,
    read_token,
)
from common.config.cloudcore import CloudHub
from common.config.edgecore import EdgeHub
from common.pki import (
    KeyPair,
    TokenCAMismatchError,
    cert_to_der,
    cert_to_pem,
    create_ca,
    create_edge_csr,
    create_token,
    issue_client_cert,
    issue_user_cert,
    load_cert,
    node_name_from_cert,
    parse_token,
    verify_chain,
    verify_token,
)
from edgecore.edgehub.certificate import (
    NO_TOKEN,
    EdgeCertificateError,
    backoff_delays,
    clear_config_token,
    ensure_edge_certificate,
    rotate,
    rotation_deadline,
    run_rotation,
)
from tests.fixtures.controlplane import ControlPlaneProcess
from tests.fixtures.mosquitto import free_port

TIMEOUT = 10.0
LOGGER = "kubeedge.cloudhub"


@dataclass
class Cloud:
    pki: CloudPKI
    server: CertServer
    api: kclient.ApiClient
    token: str

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def edge_hub(self, directory: Path, token: str | None = None) -> EdgeHub:
        return EdgeHub(
            http_server=self.url,
            token=self.token if token is None else token,
            tls_ca_file=str(directory / "ca" / "rootCA.crt"),
            tls_cert_file=str(directory / "certs" / "server.crt"),
            tls_private_key_file=str(directory / "certs" / "server.key"),
        )


def _hub(directory: Path) -> CloudHub:
    # No certificate files: the CA and server certificate come from (or go to) the kubeedge secrets.
    return CloudHub(
        advertise_address=["127.0.0.1"],
        dns_names=["localhost"],
        tls_ca_file=str(directory / "rootCA.crt"),
        tls_ca_key_file=str(directory / "rootCA.key"),
        tls_cert_file=str(directory / "server.crt"),
        tls_private_key_file=str(directory / "server.key"),
    )


@pytest.fixture
async def api(controlplane: ControlPlaneProcess) -> AsyncIterator[kclient.ApiClient]:
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(str(controlplane.kubeconfig), client_configuration=configuration)
    async with kclient.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
async def cloud(api: kclient.ApiClient, tmp_path: Path) -> AsyncIterator[Cloud]:
    pki = await asyncio.wait_for(prepare_cloud_pki(api, _hub(tmp_path / "cloud")), TIMEOUT)
    refresher = TokenRefresher(api, pki.ca, 12)
    await asyncio.wait_for(refresher.start(), TIMEOUT)
    server = CertServer(pki.ca, pki.server, api, host="127.0.0.1", port=free_port(), edge_cert_days=30)
    await asyncio.wait_for(server.start(), TIMEOUT)
    try:
        token = await asyncio.wait_for(read_token(api), TIMEOUT)
        assert token is not None
        yield Cloud(pki, server, api, token)
    finally:
        await asyncio.wait_for(server.stop(), TIMEOUT)
        await asyncio.wait_for(refresher.stop(), TIMEOUT)


def _secret_bytes(controlplane: ControlPlaneProcess, secret: str, key: str) -> bytes:
    encoded = controlplane.kubectl("get", "secret", secret, "-n", NAMESPACE, "-o", f"jsonpath={{.data.{key}}}").stdout
    return base64.b64decode(encoded)


async def _edge_crt(cloud: Cloud, node: str, csr_der: bytes | io.BytesIO, *, bearer: str | None = None,
                    client: KeyPair | None = None, tmp_path: Path | None = None) -> tuple[int, bytes]:
    """A raw `GET /edge.crt` as edgecore sends it; (status, body)."""
    context = ssl.create_default_context(cadata=cert_to_pem(cloud.pki.ca.cert).decode())
    if client is not None:
        assert tmp_path is not None
        cert_file, key_file = tmp_path / "client.crt", tmp_path / "client.key"
        client.write(cert_file, key_file)
        context.load_cert_chain(cert_file, key_file)
    headers = {"NodeName": node}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session, \
            session.get(f"{cloud.url}/edge.crt", data=csr_der, headers=headers, ssl=context) as response:
        return response.status, await response.read()


def _mode(path: str) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _exists(*paths: str) -> bool:
    return any(Path(path).exists() for path in paths)


def _remove(*paths: str) -> None:
    for path in paths:
        Path(path).unlink()


def _csr(node: str) -> bytes:
    return create_edge_csr(node)[1].public_bytes(Encoding.DER)


def _jwt(token: str) -> str:
    return parse_token(token).jwt


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.getMessage() == "refused certificate request"]


# --- secrets -----------------------------------------------------------------------------------------


async def test_secrets_are_created_in_kubeedge_and_the_token_verifies(
    cloud: Cloud, controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    names = controlplane.kubectl("get", "secret", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert {"secret/casecret", "secret/cloudcoresecret", "secret/tokensecret"} <= set(names)
    assert _secret_bytes(controlplane, CA_SECRET, CA_DATA) == cert_to_der(cloud.pki.ca.cert)
    token = _secret_bytes(controlplane, TOKEN_SECRET, TOKEN_DATA).decode()
    expires = verify_token(token, cloud.pki.ca)
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    # A second start loads the same CA and server certificate from the secrets.
    again = await asyncio.wait_for(prepare_cloud_pki(cloud.api, _hub(tmp_path / "other")), TIMEOUT)
    assert cert_to_der(again.ca.cert) == cert_to_der(cloud.pki.ca.cert)
    assert cert_to_der(again.server.cert) == cert_to_der(cloud.pki.server.cert)


async def test_ca_files_win_and_are_saved_to_casecret(
    api: kclient.ApiClient, controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    hub = _hub(tmp_path)
    stored = await asyncio.wait_for(prepare_cloud_pki(api, hub), TIMEOUT)
    own = create_ca()
    own.write(hub.tls_ca_file, hub.tls_ca_key_file)
    try:
        pki = await asyncio.wait_for(prepare_cloud_pki(api, hub), TIMEOUT)
        assert cert_to_der(pki.ca.cert) == cert_to_der(own.cert)
        assert _secret_bytes(controlplane, CA_SECRET, CA_DATA) == cert_to_der(own.cert)
        verify_chain(pki.server.cert, own.cert, "server")  # re-issued for the new CA
    finally:
        _remove(hub.tls_ca_file, hub.tls_ca_key_file)
        restored = await asyncio.wait_for(_restore_ca(api, hub, stored.ca), TIMEOUT)
    assert cert_to_der(restored.ca.cert) == cert_to_der(stored.ca.cert)


async def _restore_ca(api: kclient.ApiClient, hub: CloudHub, ca: KeyPair) -> CloudPKI:
    ca.write(hub.tls_ca_file, hub.tls_ca_key_file)
    try:
        return await prepare_cloud_pki(api, hub)
    finally:
        _remove(hub.tls_ca_file, hub.tls_ca_key_file)


async def test_token_is_refreshed_by_an_owned_task(cloud: Cloud) -> None:
    core = kclient.CoreV1Api(cloud.api)

    async def version() -> str:
        secret = await core.read_namespaced_secret(TOKEN_SECRET, NAMESPACE)
        return str(secret.metadata.resource_version)

    async def changed_from(previous: str) -> str:
        while True:  # the secret has no event to wait on here: poll, bounded by the caller
            current = await version()
            if current != previous:
                return current
            await asyncio.sleep(0.05)

    before = await asyncio.wait_for(version(), TIMEOUT)
    refresher = TokenRefresher(cloud.api, cloud.pki.ca, 12, interval=0.2)
    await asyncio.wait_for(refresher.start(), TIMEOUT)
    try:
        started = await asyncio.wait_for(changed_from(before), TIMEOUT)  # start() stores one
        await asyncio.wait_for(changed_from(started), TIMEOUT)  # and the task refreshes it
    finally:
        await asyncio.wait_for(refresher.stop(), TIMEOUT)
    token = await asyncio.wait_for(read_token(cloud.api), TIMEOUT)
    assert token is not None
    verify_token(token, cloud.pki.ca)
    running = [t for t in asyncio.all_tasks() if t.get_name() == "cloudhub-token-refresh" and not t.done()]
    assert len(running) == 1  # the fixture's refresher; the stopped one is gone


# --- /ca.crt and bootstrap ---------------------------------------------------------------------------


async def test_ca_crt_is_the_der_in_casecret(cloud: Cloud, controlplane: ControlPlaneProcess) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session, \
            session.get(f"{cloud.url}/ca.crt", ssl=False) as response:
        assert response.status == 200
        body = await response.read()
    assert body == _secret_bytes(controlplane, CA_SECRET, CA_DATA)


async def test_edge_bootstraps_end_to_end(cloud: Cloud, tmp_path: Path) -> None:
    edge_hub = cloud.edge_hub(tmp_path)
    pair = await asyncio.wait_for(ensure_edge_certificate(edge_hub, "edge-boot"), TIMEOUT)
    assert _mode(edge_hub.tls_private_key_file) == 0o600
    assert _read(edge_hub.tls_private_key_file).startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert _read(edge_hub.tls_ca_file) == cert_to_pem(cloud.pki.ca.cert)
    cert = load_cert(edge_hub.tls_cert_file)
    assert cert == pair.cert
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "system:node:edge-boot"
    assert node_name_from_cert(cert) == "edge-boot"
    verify_chain(cert, cloud.pki.ca.cert, "client")
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30, minutes=5)
    # Next start: the files verify, no token needed, nothing is fetched again.
    kept = await asyncio.wait_for(ensure_edge_certificate(cloud.edge_hub(tmp_path, token=""), "edge-boot"),
                                  TIMEOUT)
    assert kept.cert == cert


async def test_server_auth_usage_on_request(cloud: Cloud) -> None:
    csr = _csr("edge-usage")
    context = ssl.create_default_context(cadata=cert_to_pem(cloud.pki.ca.cert).decode())
    headers = {"NodeName": "edge-usage", "Authorization": f"Bearer {_jwt(cloud.token)}", "ExtKeyUsages": "[1, 2]"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.get(f"{cloud.url}/edge.crt", data=csr, headers=headers, ssl=context) as response:
            assert response.status == 200
            cert = x509.load_der_x509_certificate(await response.read())
        async with session.get(f"{cloud.url}/edge.crt", data=csr, ssl=context,
                               headers={**headers, "ExtKeyUsages": "[9]"}) as response:
            assert response.status == 400
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


# --- refusals ----------------------------------------------------------------------------------------


async def test_tampered_token_is_refused(cloud: Cloud, caplog: pytest.LogCaptureFixture) -> None:
    jwt = _jwt(cloud.token)
    tampered = jwt[:-2] + ("AA" if jwt[-2:] != "AA" else "BA")
    caplog.set_level(logging.INFO, LOGGER)
    status, body = await _edge_crt(cloud, "edge-t", _csr("edge-t"), bearer=tampered)
    assert status == 401
    assert b"signature" in body and jwt.encode() not in body and tampered.encode() not in body
    refusals = _refusals(caplog)
    assert len(refusals) == 1
    fields = getattr(refusals[0], "kfields", {})
    assert fields["node"] == "edge-t" and "signature" in fields["reason"]
    assert not any(jwt[:40] in str(r.__dict__) for r in caplog.records)


async def test_expired_token_is_refused(cloud: Cloud) -> None:
    expired = create_token(cloud.pki.ca, ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2))
    status, body = await _edge_crt(cloud, "edge-x", _csr("edge-x"), bearer=_jwt(expired))
    assert status == 401
    assert b"expired" in body


async def test_malformed_and_missing_token_are_refused(cloud: Cloud) -> None:
    status, body = await _edge_crt(cloud, "edge-m", _csr("edge-m"), bearer="not-a-jwt")
    assert status == 401 and b"parts" in body
    status, body = await _edge_crt(cloud, "edge-m", _csr("edge-m"))
    assert status == 401 and b"Authorization" in body


async def test_token_of_another_ca_is_refused_by_server_and_edge(cloud: Cloud, tmp_path: Path) -> None:
    foreign = create_token(create_ca())
    status, body = await _edge_crt(cloud, "edge-f", _csr("edge-f"), bearer=_jwt(foreign))
    assert status == 401 and b"signature" in body
    edge_hub = cloud.edge_hub(tmp_path, token=foreign)
    with pytest.raises(TokenCAMismatchError) as refused:
        await asyncio.wait_for(ensure_edge_certificate(edge_hub, "edge-f"), TIMEOUT)
    message = str(refused.value)
    assert parse_token(foreign).ca_hash[:12] in message
    assert parse_token(cloud.token).ca_hash[:12] in message
    # Refused before the CSR: nothing was written.
    assert not _exists(edge_hub.tls_ca_file, edge_hub.tls_cert_file, edge_hub.tls_private_key_file)


async def test_csr_for_another_node_is_refused(cloud: Cloud) -> None:
    status, body = await _edge_crt(cloud, "edge-a", _csr("edge-b"), bearer=_jwt(cloud.token))
    assert status == 400 and b"does not match node" in body
    status, body = await _edge_crt(cloud, "edge-a", b"not a csr", bearer=_jwt(cloud.token))
    assert status == 400 and b"DER" in body
    status, _ = await _edge_crt(cloud, "", _csr("edge-a"), bearer=_jwt(cloud.token))
    assert status == 400


async def test_oversize_csr_is_refused(cloud: Cloud) -> None:
    status, _ = await _edge_crt(cloud, "edge-big", io.BytesIO(b"\0" * ((1 << 20) + 1)), bearer=_jwt(cloud.token))
    assert status == 413


async def test_edge_without_token_or_certificate_gets_a_clear_error(cloud: Cloud, tmp_path: Path) -> None:
    with pytest.raises(EdgeCertificateError) as refused:
        await ensure_edge_certificate(cloud.edge_hub(tmp_path, token=""), "edge-none")
    assert str(refused.value) == NO_TOKEN


async def test_bad_token_surfaces_the_servers_reason_at_the_edge(cloud: Cloud, tmp_path: Path) -> None:
    expired = create_token(cloud.pki.ca, ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(EdgeCertificateError) as refused:
        await asyncio.wait_for(ensure_edge_certificate(cloud.edge_hub(tmp_path, token=expired), "edge-e"),
                               TIMEOUT)
    assert "HTTP 401" in str(refused.value) and "expired" in str(refused.value)
    assert _jwt(expired) not in str(refused.value)
    assert not _exists(cloud.edge_hub(tmp_path).tls_cert_file)


# --- rotation ----------------------------------------------------------------------------------------


async def test_rotation_with_the_current_certificate(cloud: Cloud, tmp_path: Path) -> None:
    edge_hub = cloud.edge_hub(tmp_path)
    first = await asyncio.wait_for(ensure_edge_certificate(edge_hub, "edge-r"), TIMEOUT)
    no_token = cloud.edge_hub(tmp_path, token="")
    second = await asyncio.wait_for(rotate(no_token, "edge-r"), TIMEOUT)
    assert second.cert.serial_number != first.cert.serial_number
    assert second.key.public_key() != first.key.public_key()
    assert load_cert(edge_hub.tls_cert_file) == second.cert
    assert _mode(edge_hub.tls_private_key_file) == 0o600
    assert node_name_from_cert(second.cert) == "edge-r"


async def test_certificate_of_another_node_cannot_rotate(cloud: Cloud, tmp_path: Path) -> None:
    node_a = issue_client_cert(cloud.pki.ca, "edge-a")
    status, body = await _edge_crt(cloud, "edge-b", _csr("edge-b"), client=node_a, tmp_path=tmp_path)
    assert status == 401 and b"belongs to node 'edge-a'" in body
    # A valid token does not help: a presented certificate decides (upstream's rotation path).
    status, _ = await _edge_crt(cloud, "edge-b", _csr("edge-b"), client=node_a, tmp_path=tmp_path,
                                bearer=_jwt(cloud.token))
    assert status == 401
    status, body = await _edge_crt(cloud, "edge-a", _csr("edge-b"), client=node_a, tmp_path=tmp_path)
    assert status == 400 and b"does not match node" in body
    user = issue_user_cert(cloud.pki.ca, "admin", ["system:masters"])
    status, body = await _edge_crt(cloud, "edge-a", _csr("edge-a"), client=user, tmp_path=tmp_path)
    assert status == 401 and b"not an edge node certificate" in body
    legacy = issue_user_cert(cloud.pki.ca, "kubeedge.io", ["KubeEdge"])
    status, _ = await _edge_crt(cloud, "edge-a", _csr("edge-a"), client=legacy, tmp_path=tmp_path)
    assert status == 200


async def test_certificate_of_another_ca_fails_the_handshake(cloud: Cloud, tmp_path: Path) -> None:
    stranger = issue_client_cert(create_ca(), "edge-s")
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await _edge_crt(cloud, "edge-s", _csr("edge-s"), client=stranger, tmp_path=tmp_path)


async def test_run_rotation_sleeps_until_the_deadline_then_rotates(cloud: Cloud, tmp_path: Path) -> None:
    edge_hub = cloud.edge_hub(tmp_path)
    first = await asyncio.wait_for(ensure_edge_certificate(edge_hub, "edge-loop"), TIMEOUT)
    sleeps: list[float] = []
    rotated: asyncio.Queue[KeyPair] = asyncio.Queue()
    rescheduled = asyncio.Event()
    now = first.cert.not_valid_before_utc + timedelta(days=1)

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 1:
            rescheduled.set()
            await asyncio.Event().wait()  # park the task on the second schedule

    async def on_rotated(pair: KeyPair) -> None:
        rotated.put_nowait(pair)

    rotator = asyncio.create_task(run_rotation(cloud.edge_hub(tmp_path, token=""), "edge-loop", on_rotated=on_rotated,
                                               sleep=fake_sleep, clock=lambda: now, rand=lambda: 0.5))
    try:
        pair = await asyncio.wait_for(rotated.get(), TIMEOUT)
        await asyncio.wait_for(rescheduled.wait(), TIMEOUT)
    finally:
        rotator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(rotator, TIMEOUT)
    lifetime = first.cert.not_valid_after_utc - first.cert.not_valid_before_utc
    assert sleeps[0] == pytest.approx((lifetime * 0.8 - timedelta(days=1)).total_seconds())
    assert pair.cert.serial_number != first.cert.serial_number
    assert load_cert(edge_hub.tls_cert_file) == pair.cert


async def test_run_rotation_backs_off_when_the_cloud_is_down(cloud: Cloud, tmp_path: Path) -> None:
    await asyncio.wait_for(ensure_edge_certificate(cloud.edge_hub(tmp_path), "edge-down"), TIMEOUT)
    down = cloud.edge_hub(tmp_path, token="")
    down.http_server = f"https://127.0.0.1:{free_port()}"
    sleeps: list[float] = []
    enough = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= 8:
            enough.set()
            await asyncio.Event().wait()

    rotator = asyncio.create_task(run_rotation(down, "edge-down", sleep=fake_sleep, rand=lambda: 0.0,
                                               clock=lambda: datetime.now(UTC) + timedelta(days=365)))
    try:
        await asyncio.wait_for(enough.wait(), TIMEOUT)
    finally:
        rotator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(rotator, TIMEOUT)
    assert sleeps == [2, 4, 8, 16, 32, 32, 32, 32]


# --- /node/{nodename} --------------------------------------------------------------------------------


async def test_node_route_follows_the_kubernetes_api(cloud: Cloud, controlplane: ControlPlaneProcess) -> None:
    name = f"edge-check-{random.randrange(1 << 30):x}"

    async def status() -> int:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session, \
                session.get(f"{cloud.url}/node/{name}", ssl=False) as response:
            return response.status

    assert await status() == 404
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    await asyncio.to_thread(controlplane.kubectl, "create", "-f", "-", input_text=json.dumps(node))
    try:
        assert await status() == 200
    finally:
        await asyncio.to_thread(controlplane.kubectl, "delete", "node", name, "--wait=false")


# --- server lifecycle --------------------------------------------------------------------------------


async def test_server_from_config_serves_and_stops_bounded(cloud: Cloud, tmp_path: Path) -> None:
    hub = _hub(tmp_path)
    hub.https.address, hub.https.port = "127.0.0.1", free_port()
    server = CertServer.from_config(hub, cloud.pki.ca, cloud.pki.server, cloud.api)
    await asyncio.wait_for(server.start(), TIMEOUT)
    port = server.port
    try:
        assert port == hub.https.port
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session, \
                session.get(f"https://127.0.0.1:{port}/ca.crt", ssl=False) as response:
            assert await response.read() == cert_to_der(cloud.pki.ca.cert)
    finally:
        await asyncio.wait_for(server.stop(), 3.0)
    with pytest.raises((aiohttp.ClientError, OSError)):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session, \
                session.get(f"https://127.0.0.1:{port}/ca.crt", ssl=False):
            pass


# --- the token cleanup of edgecore.yaml --------------------------------------------------------------

CONFIG = """\
# edgecore.yaml written by keadm join
apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
modules:
  edged:
    tailoredKubeletConfig: {maxPods: 110}   # kept as written
  edgeHub:
    enable: true
    heartbeat: 15
    httpServer: https://192.168.1.10:10002
    token: {token}
    tlsCaFile: /etc/kubeedge/ca/rootCA.crt
  metaManager:
    token: not-the-edgehub-token
"""


@pytest.mark.parametrize(
    ("written", "newline"),
    [("{t}", "\n"), ("'{t}'", "\n"), ('"{t}"', "\r\n"), ("|\n      {t}", "\n")],
    ids=["plain", "single-quoted", "double-quoted-crlf", "block"],
)
def test_clear_config_token_changes_only_the_token(tmp_path: Path, written: str, newline: str) -> None:
    token = create_token(create_ca())
    original = CONFIG.replace("{token}", written.replace("{t}", token)).replace("\n", newline)
    path = tmp_path / "edgecore.yaml"
    path.write_bytes(original.encode())
    assert clear_config_token(path) is True
    expected = CONFIG.replace("{token}", '""').replace("\n", newline)
    assert path.read_bytes() == expected.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert clear_config_token(path) is False
    assert path.read_bytes() == expected.encode()


# --- rotation schedule (no I/O) ----------------------------------------------------------------------


def _cert_valid_for(days: int) -> x509.Certificate:
    return issue_client_cert(create_ca(), "edge-d", valid_days=days).cert


@pytest.mark.parametrize(("rand", "fraction"), [(0.0, 0.7), (0.25, 0.75), (0.5, 0.8), (1.0, 0.9)])
def test_rotation_deadline_is_70_to_90_percent_of_the_lifetime(rand: float, fraction: float) -> None:
    cert = _cert_valid_for(100)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    deadline = rotation_deadline(cert, lambda: rand)
    assert abs(deadline - (cert.not_valid_before_utc + lifetime * fraction)) < timedelta(seconds=1)


def test_rotation_deadline_uses_the_injected_random_each_time() -> None:
    cert = _cert_valid_for(10)
    values = iter([0.1, 0.9])
    draw: Callable[[], float] = lambda: next(values)  # noqa: E731
    first, second = rotation_deadline(cert, draw), rotation_deadline(cert, draw)
    assert first < second
    seeded = random.Random(7)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    for _ in range(100):
        offset = rotation_deadline(cert, seeded.random) - cert.not_valid_before_utc
        assert lifetime * 0.7 <= offset < lifetime * 0.9


def test_backoff_is_2s_doubling_5_steps_then_32s() -> None:
    delays = backoff_delays()
    assert [next(delays) for _ in range(8)] == [2, 4, 8, 16, 32, 32, 32, 32]

