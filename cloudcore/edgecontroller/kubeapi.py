"""Kubernetes API calls as plain JSON, through cloudcore's one kubernetes_asyncio ApiClient.

Why not the generated typed API: its models rename fields to snake_case, turn times into datetimes and
drop fields the client does not know, but the edge must receive objects exactly as a Go client would
marshal them, and thousands of objects would pay for the model round trip. So requests go through
`ApiClient.call_api` (same TLS, auth and connection pool) with `_preload_content=False`, and bodies
are parsed here. Every call is bounded by a timeout; a watch by the server's `timeoutSeconds` plus a
socket read timeout. Watch lines are split by hand because aiohttp's `readline` refuses lines over
128 KiB, and one Secret or ConfigMap may hold 1 MiB.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, Final

import aiohttp
import orjson
from kubernetes_asyncio.client import ApiClient

from cloudcore.edgecontroller.kinds import Object

JSON: Final = "application/json"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
DEFAULT_TIMEOUT: Final = 10.0
_CONNECT_TIMEOUT: Final = 10.0
_MAX_WATCH_LINE: Final = 64 * 1024 * 1024  # far above etcd's 1.5 MiB object limit; bounds a broken stream
_AUTH: Final = ["BearerToken"]
UNREACHABLE: Final = 0  # KubeError.status when the API server did not answer
_TRANSPORT_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError)


class KubeError(Exception):
    """The API answered with an error Status (or a body that is not JSON), or did not answer at all
    (`unreachable`): callers handle one exception type for every way a call can fail."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def unreachable(self) -> bool:
        """No answer at all: connection refused or lost, or a timeout."""
        return self.status == UNREACHABLE

    @property
    def transient(self) -> bool:
        """A failure that may pass (no answer, 5xx, 429): worth the edge's retry; anything else is for good."""
        return self.unreachable or self.status >= 500 or self.status == 429


def _error(status: int, body: bytes) -> KubeError:
    try:
        parsed = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    return KubeError(
        int(parsed.get("code") or status),
        str(parsed.get("reason") or ""),
        str(parsed.get("message") or body[:200].decode(errors="replace")),
    )


def status_error(obj: Object) -> KubeError:
    """The error a watch ERROR event carries (a metav1.Status)."""
    return KubeError(int(obj.get("code") or 500), str(obj.get("reason") or ""), str(obj.get("message") or ""))


class KubeJSON:
    """GET/POST/PUT/PATCH/DELETE/watch of any path, JSON dicts in and out."""

    def __init__(self, api: ApiClient, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api = api
        self.timeout = timeout

    async def get(self, path: str, query: Mapping[str, str] | None = None) -> Object:
        return await self._call("GET", path, query)

    async def create(self, path: str, body: Object) -> Object:
        return await self._call("POST", path, body=body)

    async def replace(self, path: str, body: Object) -> Object:
        return await self._call("PUT", path, body=body)

    async def replace_status(self, path: str, read: Callable[[], Awaitable[Object]],
                             status_of: Callable[[Object], Object], attempts: int = 3) -> Object:
        """Read-modify-write of `path`'s status subresource; on a 409 Conflict read again and retry."""
        for attempt in range(1, attempts + 1):
            current = await read()
            try:
                return await self.replace(f"{path}/status", {**current, "status": status_of(current)})
            except KubeError as exc:
                if not exc.conflict or attempt == attempts:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def patch(self, path: str, body: Object, patch_type: str = MERGE_PATCH) -> Object:
        return await self._call("PATCH", path, body=body, content_type=patch_type)

    async def delete(self, path: str, body: Object | None = None) -> Object:
        return await self._call("DELETE", path, body=body or {"kind": "DeleteOptions", "apiVersion": "v1"})

    async def request(self, method: str, path: str, query: Mapping[str, str] | None = None, *,
                      body: Any = None, content_type: str = JSON) -> Object:
        """Any call, e.g. a write relayed for an edge client with its own query options and patch type."""
        return await self._call(method, path, query, body=body, content_type=content_type)

    async def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        *,
        body: Any = None,
        content_type: str = JSON,
    ) -> Object:
        response = await self._open(method, path, query, body, content_type, self.timeout)
        try:
            data = await response.read()
        except _TRANSPORT_ERRORS as exc:
            raise _unreachable(method, path, exc) from None
        finally:
            response.release()
        if response.status >= 300:
            raise _error(response.status, data)
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise KubeError(response.status, "BadResponse", f"{method} {path}: body is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise KubeError(response.status, "BadResponse", f"{method} {path}: body is not a JSON object")
        return parsed

    async def watch(self, path: str, query: Mapping[str, str], read_timeout: float) -> AsyncGenerator[Object, None]:
        """The events of one watch request until the server ends it; an error status raises KubeError."""
        timeout = aiohttp.ClientTimeout(sock_connect=_CONNECT_TIMEOUT, sock_read=read_timeout)
        response = await self._open("GET", path, {**query, "watch": "true"}, None, JSON, timeout)
        try:
            if response.status >= 300:
                raise _error(response.status, await response.read())
            pending = bytearray()  # appended in place: a 1 MiB event arriving in small chunks stays linear
            async for chunk in response.content.iter_any():
                pending += chunk
                if len(pending) > _MAX_WATCH_LINE:
                    raise KubeError(500, "WatchLineTooLong", f"watch {path}: event over {_MAX_WATCH_LINE} bytes")
                if b"\n" not in chunk:
                    continue
                *lines, rest = bytes(pending).split(b"\n")
                pending = bytearray(rest)
                for line in lines:
                    if line.strip():
                        yield _event(path, line)
        except _TRANSPORT_ERRORS as exc:
            raise _unreachable("WATCH", path, exc) from None
        finally:
            response.close()  # a watch is never read to its end: the connection cannot be reused

    async def _open(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        timeout: float | aiohttp.ClientTimeout,
    ) -> Any:
        headers = {"Accept": JSON, "Content-Type": content_type}
        try:
            return await self.api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=_AUTH,
                _preload_content=False,
                _request_timeout=timeout,
            )
        except _TRANSPORT_ERRORS as exc:
            raise _unreachable(method, path, exc) from None


def _unreachable(method: str, path: str, exc: BaseException) -> KubeError:
    return KubeError(UNREACHABLE, "Unreachable", f"{method} {path}: {type(exc).__name__}: {exc}")


def _event(path: str, line: bytes) -> Object:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise KubeError(500, "BadWatchEvent", f"watch {path}: event is not JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise KubeError(500, "BadWatchEvent", f"watch {path}: event without an object")
    return event
