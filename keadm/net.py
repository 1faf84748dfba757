"""keadm's network checks: local ports free, the cloud reachable, the :10002 certificate service, /readyz.

Blocking calls with explicit timeouts (keadm is a short-lived CLI). Failures are StepError with a cause and
a fix. Tokens never appear in a message.
"""

from __future__ import annotations

import errno
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Final

from cryptography import x509

from common.pki import PKIError, cert_to_pem, check_ca_against_token, load_cert
from keadm.progress import StepError
from keadm.render import host_port

CONNECT_TIMEOUT: Final = 5.0
HTTP_TIMEOUT: Final = 10.0


def port_in_use(host: str, port: int) -> bool:
    """True when binding `host:port` (TCP) fails with EADDRINUSE."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def require_free_ports(ports: Iterable[tuple[str, str, int]]) -> list[str]:
    """(what, host, port) each free; StepError naming the first one taken. Returns `what :port` lines."""
    checked = []
    for what, host, port in ports:
        if port_in_use(host, port):
            raise StepError(
                f"port {port} ({what}) is already in use on {host}",
                f"stop what listens there (`ss -ltnp 'sport = :{port}'` shows it; `keadm reset` if it is an "
                f"earlier keadm run), or choose another port with --set",
            )
        checked.append(f"{what} :{port} free")
    return checked


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_reachable(host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return
    except TimeoutError:
        cause = f"no answer from {host_port(host, port)} within {CONNECT_TIMEOUT:.0f} s"
    except OSError as exc:
        cause = f"cannot connect to {host_port(host, port)}: {exc.strerror or exc}"
    raise StepError(cause, "check --cloudcore-ipport/--certport, that cloudcore runs on the cloud (`keadm init`) "
                           "and that a firewall lets this host reach the port")


def _get(url: str, context: ssl.SSLContext, what: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=context) as response:
            return int(response.status), response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(4096)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise StepError(
                f"cloudcore's certificate does not verify for {url}: {reason.verify_message}",
                "join with an address listed in cloudcore's certificate, or add this address to --advertise-address "
                "on `keadm init` (then delete Secret kubeedge/cloudcoresecret and restart cloudcore so it is "
                "re-issued)",
            ) from None
        raise StepError(f"{what} failed: {reason}", "check that cloudcore runs and its https port is reachable"
                        ) from None
    except (TimeoutError, OSError) as exc:
        raise StepError(f"{what} failed: {exc}", "check that cloudcore runs and its https port is reachable"
                        ) from None


def fetch_ca(host: str, port: int, token: str) -> x509.Certificate:
    """GET /ca.crt without verifying (there is no CA yet) and pin it with the token's CA hash."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://{host_port(host, port)}/ca.crt"
    status, body = _get(url, context, f"GET {url}")
    if status != 200:
        raise StepError(f"GET {url} answered HTTP {status}", "check that --certport is cloudcore's https port")
    try:
        check_ca_against_token(token, body)
        return load_cert(body)
    except PKIError as exc:
        raise StepError(str(exc), "run `keadm gettoken` on the cloud you join and pass that token with --token, "
                                  "and check that --cloudcore-ipport points at that cloud") from None


def verified_context(ca: x509.Certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=cert_to_pem(ca).decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def node_exists(host: str, port: int, node: str, ca: x509.Certificate) -> bool:
    """GET /node/<name> over TLS verified against the CA: True (200), False (404)."""
    url = f"https://{host_port(host, port)}/node/{node}"
    status, _ = _get(url, verified_context(ca), f"GET {url}")
    if status == 404:
        return False
    if status == 200:
        return True
    raise StepError(f"GET {url} answered HTTP {status}", "see cloudcore's log on the cloud")


def edge_connected(monitor: str) -> bool | None:
    """From edgecore's /readyz: True once connected to cloudcore, False before, None if it cannot be asked."""
    try:
        with urllib.request.urlopen(f"http://{monitor}/readyz", timeout=2.0) as response:
            body = response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
    except OSError:
        return None
    return "[+]cloud ok" in body
