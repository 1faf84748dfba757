"""CloudHub's Secrets in namespace `kubeedge`: the CA, cloudcore's server certificate and the join token.

cloudcore reaches them through the Kubernetes API like any client (kubernetes_asyncio; the embedded
control plane and a real cluster are the same code path). Upstream's names and encodings:

- `casecret`: `cadata` (CA certificate DER), `cakeydata` (CA key DER, SEC1 for ECDSA);
- `cloudcoresecret`: `cloudcoredata` / `cloudcorekeydata` (server certificate and key, DER);
- `tokensecret`: `tokendata` (the join token `<ca-sha256>.<JWT>`, what `keadm gettoken` prints).

Start-up order (upstream `pre_server.go`): the namespace; the CA from the cloudHub files if present, else
from `casecret`, else a new one; the server certificate the same way (a new one is signed by the CA); a
fresh token, then a new one every `tokenRefreshDuration` hours, each valid for twice that.
No function here logs or returns secret material in a message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

import aiohttp
from kubernetes_asyncio.client import ApiClient, CoreV1Api, V1Namespace, V1ObjectMeta, V1Secret
from kubernetes_asyncio.client.exceptions import ApiException

from common.config.cloudcore import CloudHub
from common.log import get_logger
from common.pki import (
    CertificateError,
    KeyMaterialError,
    KeyPair,
    PKIError,
    cert_to_der,
    create_ca,
    create_token,
    issue_server_cert,
    key_to_der,
    load_key_pair,
    verify_chain,
)

log = get_logger("cloudhub")

NAMESPACE: Final = "kubeedge"
CA_SECRET: Final = "casecret"
CA_DATA: Final = "cadata"
CA_KEY_DATA: Final = "cakeydata"
CLOUDCORE_SECRET: Final = "cloudcoresecret"
CLOUDCORE_DATA: Final = "cloudcoredata"
CLOUDCORE_KEY_DATA: Final = "cloudcorekeydata"
TOKEN_SECRET: Final = "tokensecret"
TOKEN_DATA: Final = "tokendata"

_NOT_FOUND: Final = 404
_CONFLICT: Final = 409
_API_TIMEOUT: Final = 10.0
"""Seconds for each Kubernetes API request."""
_REFRESH_RETRY: Final = 30.0
"""Seconds before retrying a token refresh that could not be stored."""


class SecretsError(Exception):
    """A `kubeedge` Secret or certificate file that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class CloudPKI:
    """What CloudHub serves with: the CA and cloudcore's server certificate."""

    ca: KeyPair
    server: KeyPair


async def ensure_namespace(api: ApiClient, namespace: str = NAMESPACE) -> None:
    """Create the namespace unless it exists (a concurrent creation is fine)."""
    core = CoreV1Api(api)
    try:
        await core.read_namespace(namespace, _request_timeout=_API_TIMEOUT)
        return
    except ApiException as exc:
        if exc.status != _NOT_FOUND:
            raise
    try:
        await core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=namespace)),
                                    _request_timeout=_API_TIMEOUT)
        log.info("created namespace", namespace=namespace)
    except ApiException as exc:
        if exc.status != _CONFLICT:
            raise


async def read_secret_data(api: ApiClient, name: str, namespace: str = NAMESPACE) -> dict[str, bytes] | None:
    """The decoded `data` of a Secret, or None when the Secret does not exist."""
    try:
        secret = await CoreV1Api(api).read_namespaced_secret(name, namespace, _request_timeout=_API_TIMEOUT)
    except ApiException as exc:
        if exc.status == _NOT_FOUND:
            return None
        raise
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


async def write_secret(api: ApiClient, name: str, data: dict[str, bytes], namespace: str = NAMESPACE,
                       *, replace: bool = True) -> bool:
    """Create the Secret, or with `replace` overwrite an existing one (upstream's create-then-update).

    Returns False when it existed and `replace` is off (left untouched), True when written.
    """
    body = _secret_body(name, namespace, data)
    core = CoreV1Api(api)
    try:
        await core.create_namespaced_secret(namespace, body, _request_timeout=_API_TIMEOUT)
        return True
    except ApiException as exc:
        if exc.status != _CONFLICT:
            raise
    if not replace:
        return False
    await core.replace_namespaced_secret(name, namespace, body, _request_timeout=_API_TIMEOUT)
    return True


async def load_or_create_ca(api: ApiClient, hub: CloudHub) -> KeyPair:
    """The CA: from `tlsCAFile`/`tlsCAKeyFile` if both exist, else from `casecret`, else a new one.

    The CA from files or newly created is saved to `casecret` (a CA loaded from there is already in it).
    Two cloudcores creating a CA at once agree on the one stored first.
    """
    from_files = _load_pair_files(hub.tls_ca_file, hub.tls_ca_key_file, "tlsCAFile", "tlsCAKeyFile")
    if from_files is not None:
        await write_secret(api, CA_SECRET, _ca_data(from_files))
        log.info("loaded CA from files and saved it to the secret", cert=hub.tls_ca_file,
                 name=f"{NAMESPACE}/{CA_SECRET}")
        return from_files
    stored = await _read_pair(api, CA_SECRET, CA_DATA, CA_KEY_DATA)
    if stored is not None:
        log.info("loaded CA from the secret", name=f"{NAMESPACE}/{CA_SECRET}")
        return stored
    created = create_ca()
    if not await write_secret(api, CA_SECRET, _ca_data(created), replace=False):
        winner = await _read_pair(api, CA_SECRET, CA_DATA, CA_KEY_DATA)
        if winner is None:
            raise SecretsError(f"secret {NAMESPACE}/{CA_SECRET} vanished while being created: restart cloudcore")
        log.info("another cloudcore created the CA first; using it", name=f"{NAMESPACE}/{CA_SECRET}")
        return winner
    log.info("created CA and saved it to the secret", name=f"{NAMESPACE}/{CA_SECRET}")
    return created


async def load_or_create_server_cert(api: ApiClient, hub: CloudHub, ca: KeyPair) -> KeyPair:
    """cloudcore's server certificate: from `tlsCertFile`/`tlsPrivateKeyFile` if both exist, else from
    `cloudcoresecret`, else signed by `ca` (CN and O KubeEdge, SANs advertiseAddress + dnsNames).

    The result is saved to `cloudcoresecret`. A certificate from files must verify against `ca`; one in
    the Secret that no longer does (the CA was replaced) is re-issued.
    """
    from_files = _load_pair_files(hub.tls_cert_file, hub.tls_private_key_file, "tlsCertFile", "tlsPrivateKeyFile")
    if from_files is not None:
        try:
            verify_chain(from_files.cert, ca.cert, "server")
        except CertificateError as exc:
            raise SecretsError(f"cloudHub.tlsCertFile {hub.tls_cert_file}: {exc}") from exc
        await write_secret(api, CLOUDCORE_SECRET, _server_data(from_files))
        log.info("loaded server certificate from files and saved it to the secret", cert=hub.tls_cert_file,
                 name=f"{NAMESPACE}/{CLOUDCORE_SECRET}")
        return from_files
    stored = await _read_pair(api, CLOUDCORE_SECRET, CLOUDCORE_DATA, CLOUDCORE_KEY_DATA)
    if stored is not None:
        try:
            verify_chain(stored.cert, ca.cert, "server")
        except CertificateError as exc:
            log.warning("server certificate in the secret is not usable with the current CA; issuing a new one",
                        name=f"{NAMESPACE}/{CLOUDCORE_SECRET}", reason=str(exc))
        else:
            log.info("loaded server certificate from the secret", name=f"{NAMESPACE}/{CLOUDCORE_SECRET}")
            return stored
    ips = [address for address in hub.advertise_address if address]
    names = [name for name in hub.dns_names if name]
    try:
        created = issue_server_cert(ca, ip_addresses=ips, dns_names=names)
    except ValueError as exc:
        raise SecretsError(f"cloudHub.advertiseAddress: {exc}: list the IP addresses edges connect to") from exc
    await write_secret(api, CLOUDCORE_SECRET, _server_data(created))
    log.info("issued server certificate and saved it to the secret", name=f"{NAMESPACE}/{CLOUDCORE_SECRET}",
             ips=",".join(ips), dns=",".join(names))
    return created


async def prepare_cloud_pki(api: ApiClient, hub: CloudHub) -> CloudPKI:
    """The namespace, the CA and the server certificate, in upstream's order."""
    await ensure_namespace(api)
    ca = await load_or_create_ca(api, hub)
    server = await load_or_create_server_cert(api, hub, ca)
    return CloudPKI(ca, server)


async def store_new_token(api: ApiClient, ca: KeyPair, refresh_hours: int) -> None:
    """Create a join token valid for 2 x `refresh_hours` and store it in `tokensecret`/`tokendata`."""
    token = create_token(ca, ttl=timedelta(hours=2 * refresh_hours))
    await write_secret(api, TOKEN_SECRET, {TOKEN_DATA: token.encode("ascii")})
    log.info("stored a new join token", name=f"{NAMESPACE}/{TOKEN_SECRET}",
             valid_hours=2 * refresh_hours)


async def read_token(api: ApiClient) -> str | None:
    """The join token in `tokensecret` (what `keadm gettoken` prints), or None if there is none yet."""
    data = await read_secret_data(api, TOKEN_SECRET)
    if data is None or TOKEN_DATA not in data:
        return None
    return data[TOKEN_DATA].decode("ascii", "replace")


class TokenRefresher:
    """Owns the task that stores a new join token every `tokenRefreshDuration` hours.

    `start()` stores the first token before returning (so `keadm gettoken` works as soon as cloudcore is
    up) and starts the task; `stop()` cancels it. `interval` (seconds) overrides the refresh period for
    tests; the token lifetime stays 2 x `refresh_hours`. A refresh that cannot be stored is retried after
    `retry` seconds (at most the interval).
    """

    def __init__(self, api: ApiClient, ca: KeyPair, refresh_hours: int, *, interval: float | None = None,
                 retry: float = _REFRESH_RETRY) -> None:
        if refresh_hours <= 0:
            raise ValueError(f"tokenRefreshDuration must be a positive number of hours, got {refresh_hours}")
        self._api = api
        self._ca = ca
        self._refresh_hours = refresh_hours
        self._interval = interval if interval is not None else refresh_hours * 3600.0
        self._retry = min(retry, self._interval)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("token refresher already started")
        await store_new_token(self._api, self._ca, self._refresh_hours)
        self._task = asyncio.create_task(self._run(), name="cloudhub-token-refresh")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        delay = self._interval
        while True:
            await asyncio.sleep(delay)
            try:
                await store_new_token(self._api, self._ca, self._refresh_hours)
            except (ApiException, aiohttp.ClientError, OSError) as exc:
                log.warning("could not store the refreshed join token; retrying",
                            name=f"{NAMESPACE}/{TOKEN_SECRET}", retry_seconds=self._retry,
                            reason=_api_reason(exc))
                delay = self._retry
            else:
                delay = self._interval


def _secret_body(name: str, namespace: str, data: dict[str, bytes]) -> V1Secret:
    return V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=V1ObjectMeta(name=name, namespace=namespace),
        type="Opaque",
        data={key: base64.b64encode(value).decode("ascii") for key, value in data.items()},
    )


def _ca_data(ca: KeyPair) -> dict[str, bytes]:
    return {CA_DATA: cert_to_der(ca.cert), CA_KEY_DATA: key_to_der(ca.key)}


def _server_data(server: KeyPair) -> dict[str, bytes]:
    return {CLOUDCORE_DATA: cert_to_der(server.cert), CLOUDCORE_KEY_DATA: key_to_der(server.key)}


def _load_pair_files(cert_file: str, key_file: str, cert_key: str, key_key: str) -> KeyPair | None:
    """Both files: the pair; neither: None; only one: an error (upstream refuses to start too)."""
    cert_path, key_path = Path(cert_file), Path(key_file)
    cert_exists, key_exists = cert_path.is_file(), key_path.is_file()
    if not cert_exists and not key_exists:
        return None
    if cert_exists != key_exists:
        present, missing = (cert_file, key_file) if cert_exists else (key_file, cert_file)
        raise SecretsError(
            f"cloudHub.{cert_key} and cloudHub.{key_key} must both exist or both be absent: {present} exists "
            f"but {missing} does not; restore the missing file, or remove both to use the "
            f"{NAMESPACE} secrets"
        )
    try:
        return load_key_pair(cert_path, key_path)
    except (PKIError, OSError) as exc:
        raise SecretsError(f"cloudHub.{cert_key}/{key_key}: {exc}") from exc


async def _read_pair(api: ApiClient, name: str, cert_key: str, key_key: str) -> KeyPair | None:
    data = await read_secret_data(api, name)
    if data is None:
        return None
    if cert_key not in data or key_key not in data:
        raise SecretsError(
            f"secret {NAMESPACE}/{name} lacks {cert_key if cert_key not in data else key_key}: restore it from "
            f"a backup, or delete the secret to let cloudcore create a new one (edges must then bootstrap "
            "again if it is the CA)"
        )
    try:
        return load_key_pair(data[cert_key], data[key_key])
    except (CertificateError, KeyMaterialError) as exc:
        raise SecretsError(f"secret {NAMESPACE}/{name}: {exc}") from exc


def _api_reason(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"Kubernetes API answered {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
