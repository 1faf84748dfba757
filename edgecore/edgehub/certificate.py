"""The edge node's certificate: bootstrap with a join token, rotation before expiry, and the token cleanup.

Bootstrap (upstream `edge/pkg/edgehub/certificate/certmanager.go`), when `tlsCertFile`/`tlsPrivateKeyFile`
do not load or do not verify against `tlsCaFile`:

1. `GET <httpServer>/ca.crt` without verifying the server (there is no CA yet);
2. refuse that CA unless its sha256 is the token's first part;
3. write it as PEM to `tlsCaFile`;
4. make an ECDSA P-256 key and a CSR for `system:node:<node>`;
5. `GET <httpServer>/edge.crt` over TLS verified against that CA, with `Authorization: Bearer <JWT part>`
   and `NodeName`;
6. write the key (0600) and the certificate as PEM.

Rotation presents the current certificate as the TLS client certificate instead of a token, at a random
70-90 % of its lifetime, retrying after 2, 4, 8, 16 and 32 s and then every 32 s. Once certificates are
obtained, upstream clears `token` in edgecore.yaml: `clear_config_token` does that without touching any
other byte of the file. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Final

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from common.config import ConfigError
from common.config.edgecore import EdgeHub
from common.log import get_logger
from common.pki import (
    KeyPair,
    PKIError,
    as_utc,
    cert_to_pem,
    check_ca_against_token,
    create_edge_csr,
    format_time,
    load_cert,
    load_key_pair,
    node_name_from_cert,
    parse_token,
    verify_chain,
    write_atomic,
    write_cert,
    write_key,
)

log = get_logger("edgehub")

REQUEST_TIMEOUT: Final = 10.0
"""Seconds for each request to the certificate service."""
MAX_RESPONSE_BYTES: Final = 1 << 20
CONFIG_FILE_MODE: Final = 0o640
NO_TOKEN: Final = "edgeHub.token is empty and no certificate exists: run `keadm gettoken` on the cloud and set it"
_BACKOFF_START: Final = 2.0
_BACKOFF_STEPS: Final = 5


class EdgeCertificateError(PKIError):
    """The edge node cannot obtain or renew its certificate; the message names the cause and the fix."""


async def ensure_edge_certificate(edge_hub: EdgeHub, node_name: str, *,
                                  timeout: float = REQUEST_TIMEOUT) -> KeyPair:
    """The node's client certificate and key: the configured files if they verify against `tlsCaFile`,
    else a new pair obtained with `edgeHub.token` (files written).

    Raises EdgeCertificateError (no token, cloud unreachable or refusing) or another PKIError (malformed
    token, CA hash mismatch, bad answer).
    """
    try:
        pair = load_edge_certificate(edge_hub)
    except (PKIError, OSError) as exc:
        unusable = None if _missing(edge_hub) else str(exc)
    else:
        log.v(2).info("using the existing edge certificate", node=node_name, cert=edge_hub.tls_cert_file,
                      not_after=format_time(pair.cert.not_valid_after_utc))
        return pair
    if not edge_hub.token.strip():
        if unusable is None:
            raise EdgeCertificateError(NO_TOKEN)
        raise EdgeCertificateError(
            f"edgeHub.token is empty and the existing certificate cannot be used ({unusable}): run "
            "`keadm gettoken` on the cloud and set it"
        )
    if unusable is not None:
        log.warning("existing edge certificate is not usable; bootstrapping with the token", node=node_name,
                    reason=unusable)
    return await bootstrap(edge_hub, node_name, timeout=timeout)


def load_edge_certificate(edge_hub: EdgeHub) -> KeyPair:
    """The configured certificate and key, checked against `tlsCaFile` for client use (PKIError if not)."""
    pair = load_key_pair(edge_hub.tls_cert_file, edge_hub.tls_private_key_file)
    verify_chain(pair.cert, load_cert(edge_hub.tls_ca_file), "client")
    return pair


async def bootstrap(edge_hub: EdgeHub, node_name: str, *, timeout: float = REQUEST_TIMEOUT) -> KeyPair:
    """Steps 1-6 of the module docstring with `edgeHub.token`; returns the written pair."""
    parsed = parse_token(edge_hub.token)
    base = edge_hub.http_server.rstrip("/")
    ca_der = await _get(f"{base}/ca.crt", ssl_context=False, timeout=timeout)
    check_ca_against_token(edge_hub.token, ca_der)
    ca_cert = load_cert(ca_der)
    write_cert(edge_hub.tls_ca_file, ca_cert)
    log.info("fetched the cloud CA", node=node_name, ca_file=edge_hub.tls_ca_file)
    pair = await _request_certificate(edge_hub, node_name, ca_cert, _server_context(ca_cert, None), timeout,
                                      {"Authorization": f"Bearer {parsed.jwt}"})
    log.info("obtained edge certificate", node=node_name, cert=edge_hub.tls_cert_file,
             not_after=format_time(pair.cert.not_valid_after_utc))
    return pair


async def rotate(edge_hub: EdgeHub, node_name: str, *, timeout: float = REQUEST_TIMEOUT) -> KeyPair:
    """Renew the certificate presenting the current one (no token); returns the new, written pair."""
    ca_cert = load_cert(edge_hub.tls_ca_file)
    context = _server_context(ca_cert, (edge_hub.tls_cert_file, edge_hub.tls_private_key_file))
    pair = await _request_certificate(edge_hub, node_name, ca_cert, context, timeout, {})
    log.info("rotated edge certificate", node=node_name, cert=edge_hub.tls_cert_file,
             not_after=format_time(pair.cert.not_valid_after_utc))
    return pair


def rotation_deadline(cert: x509.Certificate, rand: Callable[[], float] = random.random) -> datetime:
    """When to renew: NotBefore + a random 70-90 % of the lifetime (`rand()` in [0, 1))."""
    not_before = cert.not_valid_before_utc
    lifetime = cert.not_valid_after_utc - not_before
    return not_before + lifetime * (0.7 + 0.2 * rand())


def backoff_delays() -> Iterator[float]:
    """Seconds between failed rotation attempts: 2, 4, 8, 16, 32, then 32 forever."""
    delay = _BACKOFF_START
    for _ in range(_BACKOFF_STEPS - 1):
        yield delay
        delay *= 2
    while True:
        yield delay


async def run_rotation(
    edge_hub: EdgeHub,
    node_name: str,
    *,
    on_rotated: Callable[[KeyPair], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], datetime] = lambda: as_utc(None),
    rand: Callable[[], float] = random.random,
    timeout: float = REQUEST_TIMEOUT,
) -> None:
    """Rotate the certificate at each deadline, forever (until cancelled); `on_rotated` gets each new pair
    (the hub reconnects with it)."""
    while True:
        try:
            deadline = rotation_deadline(load_cert(edge_hub.tls_cert_file), rand)
        except (PKIError, OSError) as exc:
            log.warning("cannot read the edge certificate to schedule its rotation; rotating now",
                        node=node_name, reason=str(exc))
        else:
            wait = (deadline - clock()).total_seconds()
            if wait > 0:
                log.v(2).info("edge certificate rotation scheduled", node=node_name, at=format_time(deadline))
                await sleep(wait)
        pair = await _rotate_until_done(edge_hub, node_name, sleep, timeout)
        if on_rotated is not None:
            try:
                await on_rotated(pair)
            except Exception:
                log.exception("handling the rotated edge certificate failed", node=node_name)


def clear_config_token(config_path: str | os.PathLike[str]) -> bool:
    """Set `modules.edgeHub.token` to `""` in edgecore.yaml, changing no other byte; True if it changed.

    Upstream rewrites the file once certificates are obtained (mode 0640) so that the token does not stay
    on disk. Only the token's YAML scalar is replaced; the file is replaced atomically.
    """
    path = Path(config_path)
    with path.open(encoding="utf-8", newline="") as handle:
        text = handle.read()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML, token not cleared: {exc}") from None
    spans = sorted(_token_scalar_spans(root))
    if not spans:
        return False
    for start, end in reversed(spans):
        text = text[:start] + '""' + _line_breaks_after(text[start:end]) + text[end:]
    write_atomic(path, text.encode("utf-8"), CONFIG_FILE_MODE)
    log.info("cleared edgeHub.token in the config file", path=str(path))
    return True


# --- internals -------------------------------------------------------------------------------------


def _missing(edge_hub: EdgeHub) -> bool:
    return not Path(edge_hub.tls_cert_file).exists() and not Path(edge_hub.tls_private_key_file).exists()


def _server_context(ca_cert: x509.Certificate, client: tuple[str, str] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=cert_to_pem(ca_cert).decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client is not None:
        context.load_cert_chain(client[0], client[1])
    return context


async def _request_certificate(edge_hub: EdgeHub, node_name: str, ca_cert: x509.Certificate,
                               context: ssl.SSLContext, timeout: float, headers: dict[str, str]) -> KeyPair:
    key, csr = create_edge_csr(node_name)
    url = f"{edge_hub.http_server.rstrip('/')}/edge.crt"
    der = await _get(url, ssl_context=context, timeout=timeout,
                     headers={**headers, "NodeName": node_name, "Content-Type": "application/octet-stream"},
                     body=csr.public_bytes(Encoding.DER))
    cert = load_cert(der)
    if cert.public_key() != key.public_key():
        raise EdgeCertificateError(
            f"{url} answered with a certificate for another key: the certificate service is misbehaving; "
            "check which server edgeHub.httpServer points at"
        )
    verify_chain(cert, ca_cert, "client")
    if node_name_from_cert(cert) != node_name:
        raise EdgeCertificateError(
            f"{url} answered with a certificate for {cert.subject.rfc4514_string()!r}, not node {node_name!r}: "
            "check which server edgeHub.httpServer points at"
        )
    pair = KeyPair(cert, key)
    write_key(edge_hub.tls_private_key_file, key)
    write_cert(edge_hub.tls_cert_file, cert)
    return pair


async def _get(url: str, *, ssl_context: ssl.SSLContext | bool, timeout: float,
               headers: dict[str, str] | None = None, body: bytes | None = None) -> bytes:
    """GET `url` (with a body if given) and return the 200 answer's body; EdgeCertificateError otherwise."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.request("GET", url, data=body, headers=headers, ssl=ssl_context) as response:
            content = await _read_limited(response, url)
            status = response.status
    except (aiohttp.ClientError, OSError) as exc:  # OSError covers ssl.SSLError and TimeoutError
        detail = f"timed out after {timeout:.0f} s" if isinstance(exc, TimeoutError) else str(exc)
        raise EdgeCertificateError(
            f"cannot reach the certificate service at {url}: {detail}: check edgeHub.httpServer and that "
            "cloudcore is running and reachable"
        ) from exc
    if status != 200:
        reason = content[:500].decode("utf-8", "replace").strip()
        raise EdgeCertificateError(f"the certificate service refused {url} with HTTP {status}: {reason}")
    return content


async def _read_limited(response: aiohttp.ClientResponse, url: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise EdgeCertificateError(
                f"{url} answered with more than {MAX_RESPONSE_BYTES} bytes: it is not a KubeEdge certificate "
                "service; check edgeHub.httpServer"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _rotate_until_done(edge_hub: EdgeHub, node_name: str, sleep: Callable[[float], Awaitable[None]],
                             timeout: float) -> KeyPair:
    delays = backoff_delays()
    while True:
        try:
            return await rotate(edge_hub, node_name, timeout=timeout)
        except (PKIError, OSError) as exc:
            delay = next(delays)
            log.warning("edge certificate rotation failed; retrying", node=node_name, retry_seconds=delay,
                        reason=str(exc))
            await sleep(delay)


def _token_scalar_spans(root: yaml.Node | None) -> Iterator[tuple[int, int]]:
    """Character spans of every non-empty `modules.edgeHub.token` scalar (duplicate keys included)."""
    for modules in _values(root, "modules"):
        for edge_hub in _values(modules, "edgeHub"):
            for token in _values(edge_hub, "token"):
                if isinstance(token, yaml.ScalarNode) and token.value != "":
                    yield token.start_mark.index, token.end_mark.index


def _values(node: yaml.Node | None, key: str) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                yield value_node


def _line_breaks_after(scalar_text: str) -> str:
    """A block scalar (`|`, `>`) span ends after its line breaks: keep them so the next key stays put."""
    content_end = len(scalar_text.rstrip())
    tail = scalar_text[content_end:]
    breaks = [index for index, char in enumerate(tail) if char in "\r\n"]
    return tail[breaks[0]:] if breaks else ""

