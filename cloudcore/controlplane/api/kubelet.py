"""The API server as a client of kubelets: `pods/log`, as kube-apiserver's LogREST and LogLocation do it.

`LogOptions` reads and validates a request's PodLogOptions, `log_container` picks the container
(kube-apiserver's rules and messages), `node_endpoint` finds a node's kubelet (InternalIP, else
Hostname, from status.addresses; port from status.daemonEndpoints.kubeletEndpoint, else 10250; for an
edge node, labelled `node-role.kubernetes.io/edge`, the `cloudstream.kubeedge.io/endpoint` annotation's
`host:port` when set: cloudcore's CloudStream, which relays to the node over its tunnel), and
`KubeletProxy.stream_logs` GETs `https://<node>:<port>/containerLogs/<ns>/<pod>/<container>` and
hands back the body's chunks as they arrive. `pods/exec`: `ExecOptions` reads the request,
`KubeletProxy.open_exec` opens the kubelet's `/exec/<ns>/<pod>/<container>` as a WebSocket with the
client's subprotocol offer (kube-apiserver >= 1.30 translates kubectl's WebSocket to SPDY for the
kubelet; here the kubelet side, CloudStream and then the runtime, speaks WebSocket itself).

TLS: the control plane authenticates to kubelets with its client certificate `DATA_DIR/pki/
apiserver-kubelet-client.{crt,key}` (CN `kube-apiserver-kubelet-client`, O `system:masters`). It does
NOT verify the kubelet's serving certificate, exactly as kube-apiserver without
`--kubelet-certificate-authority` (kubelets serve self-signed certificates by default): the log
stream is encrypted, but a machine impersonating the node's address could answer it.

Failures are kube-apiserver's: a kubelet that cannot be reached is a 500 whose message is Go's
(`Get "https://10.0.0.1:10250/containerLogs/default/web/c": dial tcp 10.0.0.1:10250: connect:
connection refused`, printed by kubectl as `Error from server: ...`); a kubelet's non-2xx answer
keeps its status, with its body as the message (400 and 500) or as the cause (others), as
kube-apiserver's GenericHttpResponseChecker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
from multidict import MultiMapping
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol
from yarl import URL

from cloudcore.controlplane.api import errors
from cloudcore.controlplane.api.errors import APIError
from common.log import get_logger
from common.wsrelay import MAX_MESSAGE

log = get_logger("apiserver")

DEFAULT_PORT: Final = 10250
EDGE_ROLE_LABEL: Final = "node-role.kubernetes.io/edge"
STREAM_ENDPOINT_ANNOTATION: Final = "cloudstream.kubeedge.io/endpoint"  # set by cloudcore's CloudStream
_HOST_PORT: Final = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<v6port>[0-9]{1,5})|(?P<host>[^:\[\]]+):(?P<port>[0-9]{1,5})")
CONNECT_TIMEOUT: Final = 5.0  # TCP connect and TLS handshake
READ_TIMEOUT: Final = 60.0  # longest silence of a kubelet answering a request that does not follow
EXEC_OPEN_TIMEOUT: Final = 40.0  # the edge's tunnel answers an exec within CloudStream's 30 s
MAX_ERROR_BODY: Final = 50_000  # as much of a kubelet's error answer as kube-apiserver reads
_INT64: Final = re.compile(r"[+-]?[0-9]+")
_RFC3339: Final = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_GO_RFC3339: Final = "2006-01-02T15:04:05Z07:00"
_CONTAINER_KINDS: Final = ("initContainers", "containers", "ephemeralContainers")  # podutil.VisitContainers
# kube-apiserver's NewGenericServerResponse: reason and message for a kubelet's status code
_GENERIC: Final[Mapping[int, tuple[str, str]]] = {
    401: ("Unauthorized", "the server has asked for the client to provide credentials"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    409: ("Conflict", "the server reported a conflict"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    429: ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted, but may still be "
                     "processing the request"),
}


@dataclass(frozen=True, slots=True)
class LogOptions:
    """A pods/log request's PodLogOptions (`insecureSkipTLSVerifyBackend` is moot: kubelets are never verified)."""

    container: str = ""
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    since_seconds: int | None = None
    since_time: str | None = None  # RFC 3339 in UTC, whole seconds
    tail_lines: int | None = None
    limit_bytes: int | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str], pod: str) -> LogOptions:
        """From the query string, decoded as kube-apiserver decodes it (400 on a malformed value) and
        validated as ValidatePodLogOptions does (422 PodLogOptions invalid)."""
        options = cls(container=query.get("container", ""), follow=_bool(query.get("follow")),
                      previous=_bool(query.get("previous")), timestamps=_bool(query.get("timestamps")),
                      since_seconds=_int64(query.get("sinceSeconds")), since_time=_time(query.get("sinceTime")),
                      tail_lines=_int64(query.get("tailLines")), limit_bytes=_int64(query.get("limitBytes")))
        causes: list[dict[str, str]] = []
        if options.tail_lines is not None and options.tail_lines < 0:
            causes.append(_invalid("tailLines", options.tail_lines, "must be greater than or equal to 0"))
        if options.limit_bytes is not None and options.limit_bytes < 1:
            causes.append(_invalid("limitBytes", options.limit_bytes, "must be greater than 0"))
        if options.since_seconds is not None and options.since_time is not None:
            causes.append({"reason": "FieldValueForbidden", "field": "",
                           "message": "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"})
        elif options.since_seconds is not None and options.since_seconds < 1:
            causes.append(_invalid("sinceSeconds", options.since_seconds, "must be greater than 0"))
        if causes:
            raise errors.invalid("PodLogOptions", pod, causes)
        return options

    def kubelet_query(self) -> str:
        """The kubelet's query string: only the options given, keys sorted (Go's url.Values.Encode)."""
        params = {"follow": "true" if self.follow else None, "previous": "true" if self.previous else None,
                  "timestamps": "true" if self.timestamps else None, "sinceTime": self.since_time,
                  "sinceSeconds": _text(self.since_seconds), "tailLines": _text(self.tail_lines),
                  "limitBytes": _text(self.limit_bytes)}
        return urlencode(sorted((key, value) for key, value in params.items() if value is not None))


@dataclass(frozen=True, slots=True)
class ExecOptions:
    """A pods/exec request's PodExecOptions."""

    command: tuple[str, ...]
    container: str = ""
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False

    @classmethod
    def parse(cls, query: MultiMapping[str]) -> ExecOptions:
        """From the query string (`command` repeated, one per argument); 400 as kube-apiserver and the
        kubelet answer a request that names no command or no stream."""
        options = cls(command=tuple(query.getall("command", ())), container=query.get("container", ""),
                      stdin=_bool(query.get("stdin")), stdout=_bool(query.get("stdout")),
                      stderr=_bool(query.get("stderr")), tty=_bool(query.get("tty")))
        if not options.command:
            raise errors.bad_request("you must specify at least one command for the container")
        if not (options.stdin or options.stdout or options.stderr):
            raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
        return options

    def kubelet_query(self) -> str:
        """The kubelet's query: `command` once per argument, then the streams asked for as `=1`, keys sorted."""
        flags = {"error": self.stderr, "input": self.stdin, "output": self.stdout, "tty": self.tty}
        return urlencode([("command", arg) for arg in self.command] + [(k, "1") for k, on in flags.items() if on])


def log_container(pod: Mapping[str, Any], container: str) -> str:
    """The container whose log is asked for: the given one if the pod has it, else the only one."""
    spec = pod.get("spec") or {}
    name = (pod.get("metadata") or {}).get("name", "")
    every = [str(c.get("name", "")) for kind in _CONTAINER_KINDS for c in spec.get(kind) or ()]
    if container:
        if container not in every:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        return container
    containers = spec.get("containers") or []
    if len(containers) == 1:
        return str(containers[0].get("name", ""))
    if not containers:
        raise errors.bad_request(f"a container name must be specified for pod {name}")
    raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                             f"[{' '.join(every)}]")


def node_endpoint(node: Mapping[str, Any]) -> tuple[str, int]:
    """(host, port) of a Node's kubelet; 500 when the node reports no usable address, as kube-apiserver.
    An edge node with CloudStream's endpoint annotation is reached there instead."""
    metadata = node.get("metadata") or {}
    if EDGE_ROLE_LABEL in (metadata.get("labels") or {}):
        stream = _HOST_PORT.fullmatch(str((metadata.get("annotations") or {}).get(STREAM_ENDPOINT_ANNOTATION, "")))
        if stream is not None and 0 < int(stream["v6port"] or stream["port"]) < 65536:
            return stream["v6"] or stream["host"], int(stream["v6port"] or stream["port"])
    status = node.get("status") or {}
    addresses = [a for a in status.get("addresses") or () if isinstance(a, Mapping)]
    host = next((str(a["address"]) for kind in ("InternalIP", "Hostname") for a in addresses
                 if a.get("type") == kind and a.get("address")), None)
    if host is None:
        known = " ".join(f"{{{a.get('type', '')} {a.get('address', '')}}}" for a in addresses)
        raise _server_error(f"no preferred addresses found; known addresses: [{known}]")
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    return host, port if isinstance(port, int) and port > 0 else DEFAULT_PORT


class KubeletProxy:
    """The control plane's HTTPS client of kubelets: one lazily made session, closed by `close()`."""

    def __init__(self, client_cert: Path, client_key: Path) -> None:
        self._tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE  # as kube-apiserver without --kubelet-certificate-authority
        self._tls.load_cert_chain(client_cert, client_key)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # no pool limit: every follower holds a connection as long as its client does
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._tls, limit=0))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def stream_logs(self, host: str, port: int, namespace: str, pod: str, container: str,
                          options: LogOptions) -> AsyncIterator[AsyncIterator[bytes]]:
        """GET the container's log from its kubelet. Entered once the kubelet answered 2xx, with the
        body's chunks as they arrive (an error mid-stream ends them); leaving it ends the request.
        Raises APIError as kube-apiserver answers when the kubelet cannot be reached or says no.
        Connecting is bounded by CONNECT_TIMEOUT; a request that does not follow also by READ_TIMEOUT
        of silence; a followed one lasts as long as the caller reads it."""
        url = f"https://{_host_port(host, port)}/containerLogs/{namespace}/{pod}/{container}"
        query = options.kubelet_query()
        if query:
            url = f"{url}?{query}"
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT,
                                        sock_read=None if options.follow else READ_TIMEOUT)
        try:
            response = await self._client().get(URL(url, encoded=True), timeout=timeout, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _server_error(f'Get "{url}": {_go_error(exc, host, port)}') from None
        async with response:
            if not 200 <= response.status <= 206:
                raise await _kubelet_error(response, pod)
            chunks = _chunks(response, url)
            try:
                yield chunks
            finally:
                await chunks.aclose()

    @contextlib.asynccontextmanager
    async def open_exec(self, host: str, port: int, namespace: str, pod: str, container: str,
                        options: ExecOptions, protocols: Sequence[str]) -> AsyncIterator[ClientConnection]:
        """Open the kubelet's `/exec` WebSocket with the client's subprotocol offer; entered once it
        accepted (the connection's `subprotocol` is its pick), closed on leaving. Raises APIError as
        kube-apiserver answers when the kubelet cannot be reached or says no."""
        path = "/".join(quote(part, safe="") for part in (namespace, pod, container))
        url = f"wss://{_host_port(host, port)}/exec/{path}?{options.kubelet_query()}"
        try:
            connection = await ws_connect(url, ssl=self._tls, subprotocols=[Subprotocol(p) for p in protocols],
                                          open_timeout=EXEC_OPEN_TIMEOUT, max_size=MAX_MESSAGE, compression=None,
                                          close_timeout=5)
        except InvalidStatus as exc:
            body = exc.response.body[:MAX_ERROR_BODY].decode(errors="replace") if exc.response.body else ""
            raise _status_error(exc.response.status_code, body.strip(), pod, "pods/exec") from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise _server_error(f"error dialing backend: {_dial_error(exc, host, port)}") from None
        try:
            yield connection
        finally:
            await connection.close()


async def _chunks(response: aiohttp.ClientResponse, url: str) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:  # the kubelet went away: the log ends here
        log.warning("kubelet log stream broke", url=url, error=f"{type(exc).__name__}: {exc}")


async def _kubelet_error(response: aiohttp.ClientResponse, pod: str) -> APIError:
    try:
        body = await _error_body(response)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return errors.internal(f"{type(exc).__name__}: {exc}")
    return _status_error(response.status, body, pod, "pods/log")


def _status_error(code: int, body: str, pod: str, kind: str) -> APIError:
    """A kubelet's non-2xx answer as kube-apiserver's GenericHttpResponseChecker turns it into a Status."""
    if code == 500:
        return errors.internal(body)
    if code == 400:
        return errors.bad_request(body)
    if code == 403:
        reason, message = "Forbidden", body  # the kubelet says who may not do what: kept
    elif code in _GENERIC:
        reason, message = _GENERIC[code]
    elif code >= 500:
        reason, message = "InternalError", (f"an error on the server ({_go_quote(body)}) has prevented the "
                                            "request from succeeding")
    else:
        reason, message = "", f"the server responded with the status code {code} but did not return more information"
    return APIError(code, reason, f"{message} ( {kind} {pod})",
                    {"name": pod, "kind": kind, "causes": [{"message": body}]})


async def _error_body(response: aiohttp.ClientResponse) -> str:
    """Up to MAX_ERROR_BODY bytes of the answer, within READ_TIMEOUT (a followed request has no read timeout)."""
    data = b""
    async with asyncio.timeout(READ_TIMEOUT):
        while len(data) < MAX_ERROR_BODY and (chunk := await response.content.read(MAX_ERROR_BODY - len(data))):
            data += chunk
    return data.decode(errors="replace")


def _server_error(message: str) -> APIError:
    """A plain Go error reaching kube-apiserver's handler: 500 with no reason (kubectl: `Error from server: ...`)."""
    return APIError(500, "", message)


def _go_error(exc: BaseException, host: str, port: int) -> str:
    """Go's net/http wording for why a request to the kubelet failed before any answer."""
    address = _host_port(host, port)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"dial tcp: lookup {host}: no such host"
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = getattr(exc.os_error, "reason", None) or exc.os_error
        return f"tls: {reason}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return f"dial tcp {address}: connect: {_lower_first(os.strerror(errno) if errno else str(exc.os_error))}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"dial tcp {address}: i/o timeout"
    if isinstance(exc, TimeoutError):
        return "net/http: timeout awaiting response headers"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "EOF"
    if isinstance(exc, OSError) and exc.errno:
        return f"read tcp {address}: {_lower_first(os.strerror(exc.errno))}"
    return str(exc) or type(exc).__name__


def _dial_error(exc: BaseException, host: str, port: int) -> str:
    """Go's wording for a WebSocket dial to the kubelet that got no answer."""
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return f"dial tcp {_host_port(host, port)}: i/o timeout"
    if isinstance(exc, OSError) and exc.errno:
        return f"dial tcp {_host_port(host, port)}: connect: {_lower_first(os.strerror(exc.errno))}"
    return str(exc) or type(exc).__name__


def _host_port(host: str, port: int) -> str:
    """Go's net.JoinHostPort: IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _bool(value: str | None) -> bool:
    """kube's query boolean: absent, `0` and `false` (any case) are false, anything else (even empty) true."""
    return value is not None and value != "0" and value.lower() != "false"


def _int64(value: str | None) -> int | None:
    if value is None:
        return None
    if not _INT64.fullmatch(value):
        raise errors.bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax')
    number = int(value)
    if not -(2**63) <= number < 2**63:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{value}": value out of range')
    return number


def _time(value: str | None) -> str | None:
    """An RFC 3339 time, re-written in UTC with whole seconds (as metav1.Time goes into a query)."""
    if value is None:
        return None
    try:
        if not _RFC3339.fullmatch(value):
            raise ValueError(value)
        moment = datetime.fromisoformat(value.upper())
    except ValueError:
        raise errors.bad_request(f'parsing time "{value}" as "{_GO_RFC3339}": cannot parse "{value}" as RFC 3339'
                                 ) from None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(number: int | None) -> str | None:
    return None if number is None else str(number)


def _invalid(field: str, value: int, why: str) -> dict[str, str]:
    return {"reason": "FieldValueInvalid", "field": field, "message": f"Invalid value: {value}: {why}"}
