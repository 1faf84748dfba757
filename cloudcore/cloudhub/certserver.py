"""CloudHub's certificate service: the HTTPS server on :10002 that edge nodes bootstrap and rotate with.

Routes (upstream `cloud/pkg/cloudhub/servers/httpserver`):

- `GET /ca.crt`: the CA certificate as raw DER;
- `GET /edge.crt`: body = a DER PKCS#10 CSR (at most 1 MiB); headers `NodeName`, `Authorization: Bearer
  <jwt>` and optionally `ExtKeyUsages` (JSON array of Go ExtKeyUsage ints, default [2] = ClientAuth).
  A client that presented a certificate at TLS is rotating: the certificate must be an edge client
  certificate of this CA for the `NodeName` node (or the legacy O=KubeEdge, CN=kubeedge.io). Otherwise the
  Bearer JWT must verify against the CA key. The CSR's CN must be `system:node:<NodeName>`; the answer is
  the signed certificate as raw DER, valid `edgeCertSigningDuration` days;
- `GET /node/{nodename}`: 200 if the Node exists in the Kubernetes API, 404 if not.

TLS requests a client certificate without requiring one; one that is presented must chain to the CA (a
certificate from another CA fails the handshake). Refusals are plain-text answers naming the cause (401
authentication, 400 request, 413 body too large) and one log line with node and reason. Tokens are never
logged or echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from typing import Final

from aiohttp import web
from cryptography import x509
from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from common.config.cloudcore import CloudHub
from common.log import get_logger
from common.pki import (
    CertificateError,
    CSRError,
    KeyPair,
    TokenError,
    cert_to_der,
    ext_key_usages_from_go,
    format_time,
    is_edge_client_subject,
    node_name_from_cert,
    sign_csr,
    verify_chain,
    verify_jwt,
)
from common.transport import server_tls_for

log = get_logger("cloudhub")

MAX_CSR_BYTES: Final = 1 << 20
"""Upstream reads at most 1 MiB of the `/edge.crt` body."""
NODE_NAME_HEADER: Final = "NodeName"
EXT_KEY_USAGES_HEADER: Final = "ExtKeyUsages"
_BODY_TIMEOUT: Final = 10.0
_API_TIMEOUT: Final = 10.0
_DER: Final = "application/octet-stream"


class CertServer:
    """The HTTPS certificate server. `start()` binds it (port 0 picks a free port, see `port`); `stop()`
    closes the listener and waits at most `shutdown_timeout` seconds for requests in flight."""

    def __init__(self, ca: KeyPair, server_cert: KeyPair, api: ApiClient, *, host: str = "0.0.0.0",
                 port: int = 10002, edge_cert_days: int = 365, shutdown_timeout: float = 5.0) -> None:
        if edge_cert_days <= 0:
            raise ValueError(f"edgeCertSigningDuration must be a positive number of days, got {edge_cert_days}")
        self._ca = ca
        self._ca_der = cert_to_der(ca.cert)
        self._server_cert = server_cert
        self._api = api
        self._host = host
        self._requested_port = port
        self._edge_cert_days = edge_cert_days
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @classmethod
    def from_config(cls, hub: CloudHub, ca: KeyPair, server_cert: KeyPair, api: ApiClient) -> CertServer:
        """A server on `cloudHub.https.{address,port}` signing for `edgeCertSigningDuration` days."""
        return cls(ca, server_cert, api, host=hub.https.address, port=hub.https.port,
                   edge_cert_days=hub.edge_cert_signing_duration)

    @property
    def port(self) -> int:
        """The bound port (after `start()`)."""
        if self._port is None:
            raise RuntimeError("certificate server is not started")
        return self._port

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("certificate server already started")
        app = web.Application(client_max_size=MAX_CSR_BYTES)
        app.router.add_get("/ca.crt", self._handle_ca)
        app.router.add_get("/edge.crt", self._handle_edge_cert)
        app.router.add_get("/node/{nodename}", self._handle_node)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout,
                               handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port, ssl_context=self._tls_context())
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self._port = int(addresses[0][1]) if addresses else self._requested_port
        log.info("certificate server listening", address=self._host, port=self._port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            async with asyncio.timeout(self._shutdown_timeout + 1.0):
                await runner.cleanup()
        except TimeoutError:
            log.warning("certificate server did not stop in time", timeout_seconds=self._shutdown_timeout)
        self._port = None
        log.info("certificate server stopped")

    def _tls_context(self) -> ssl.SSLContext:
        # Ask for a client certificate (rotation) without requiring one (bootstrap with a token).
        return server_tls_for(self._ca.cert, self._server_cert, ssl.CERT_OPTIONAL)

    async def _handle_ca(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._ca_der, content_type=_DER)

    async def _handle_edge_cert(self, request: web.Request) -> web.Response:
        node = request.headers.get(NODE_NAME_HEADER, "").strip()
        if not node:
            return _refuse(request, 400, node, "the NodeName header is missing: send the node's name in it")
        peer = _peer_certificate(request)
        if peer is not None:
            path = "rotation"
            problem = self._check_client_cert(peer, node)
        else:
            path = "token"
            problem = self._check_bearer(request)
        if problem is not None:
            return _refuse(request, 401, node, problem)
        try:
            usages = ext_key_usages_from_go(_parse_usages(request.headers.get(EXT_KEY_USAGES_HEADER)))
        except CSRError as exc:
            return _refuse(request, 400, node, str(exc))
        try:
            async with asyncio.timeout(_BODY_TIMEOUT):
                csr_der = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refuse(request, 413, node, f"the CSR is larger than {MAX_CSR_BYTES} bytes: send one DER CSR")
        except TimeoutError:
            return _refuse(request, 408, node, f"the CSR did not arrive within {_BODY_TIMEOUT:.0f} s")
        try:
            cert = sign_csr(self._ca, csr_der, self._edge_cert_days, usages, expected_node=node)
        except CSRError as exc:
            return _refuse(request, 400, node, str(exc))
        log.info("signed edge certificate", node=node, path=path, not_after=format_time(cert.not_valid_after_utc),
                 remote=request.remote or "")
        return web.Response(body=cert_to_der(cert), content_type=_DER)

    def _check_client_cert(self, peer: x509.Certificate, node: str) -> str | None:
        """Why the presented certificate may not rotate for `node`, or None if it may."""
        try:
            verify_chain(peer, self._ca.cert, "client")
        except CertificateError as exc:
            return f"the client certificate is not valid: {exc}"
        if not is_edge_client_subject(peer):
            return (
                f"the client certificate {peer.subject.rfc4514_string()!r} is not an edge node certificate "
                "(O=system:nodes, CN=system:node:<node>): rotate with the node's own certificate, or "
                "bootstrap without a client certificate using a token from `keadm gettoken`"
            )
        cert_node = node_name_from_cert(peer)
        if cert_node is not None and cert_node != node:
            return (
                f"the client certificate belongs to node {cert_node!r}, not to {node!r} named in the NodeName "
                "header: a node may only renew its own certificate"
            )
        return None

    def _check_bearer(self, request: web.Request) -> str | None:
        """Why the Bearer JWT is refused, or None if it verifies against the CA key."""
        scheme, _, jwt = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not jwt.strip():
            return (
                "no client certificate and no Authorization header (scheme Bearer, credentials: the JWT part "
                "of a token from `keadm gettoken`): bootstrap with a token, or rotate with the node's current "
                "certificate"
            )
        try:
            verify_jwt(jwt.strip(), self._ca)
        except TokenError as exc:
            return str(exc)
        return None

    async def _handle_node(self, request: web.Request) -> web.Response:
        name = request.match_info["nodename"]
        try:
            await CoreV1Api(self._api).read_node(name, _request_timeout=_API_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return web.Response(status=404, text=f"node {name} not found\n")
            log.warning("node lookup failed", node=name, reason=f"Kubernetes API answered {exc.status}")
            return web.Response(status=500, text="node lookup failed\n")
        except (OSError, TimeoutError) as exc:
            log.warning("node lookup failed", node=name, reason=f"{type(exc).__name__}: {exc}")
            return web.Response(status=500, text="node lookup failed\n")
        return web.Response(status=200, text=f"node {name} exists\n")


def _peer_certificate(request: web.Request) -> x509.Certificate | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    with contextlib.suppress(ValueError):
        return x509.load_der_x509_certificate(der)
    return None


def _parse_usages(header: str | None) -> list[object]:
    """The `ExtKeyUsages` header as a list (absent: ClientAuth); CSRError for anything else."""
    if header is None or not header.strip():
        return [2]
    try:
        value = json.loads(header)
    except ValueError:
        raise CSRError("the ExtKeyUsages header is not JSON: send a JSON array such as [2]") from None
    if not isinstance(value, list):
        raise CSRError("the ExtKeyUsages header must be a JSON array of ints such as [2]")
    return value


def _refuse(request: web.Request, status: int, node: str, reason: str) -> web.Response:
    log.warning("refused certificate request", node=node or "<none>", status=status, reason=reason,
                remote=request.remote or "")
    return web.Response(status=status, text=reason + "\n")
