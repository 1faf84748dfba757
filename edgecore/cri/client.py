"""An asyncio client for the CRI RuntimeService and ImageService (containerd's CRI plugin) over gRPC.

Thin on purpose: one method per RPC, typed dataclasses in and out (edgecore.cri.types), a deadline on
every call, and every gRPC failure raised as CRIError with the status code and the runtime's details.
Deciding what to run, retries and back-off are the pod workers' business, not this module's.

Deadlines: queries (Version, Status, List*, *Status, stats) get `timeout` (10 s); calls that make or
tear down sandboxes and containers get `lifecycle_timeout` (60 s: CNI set-up, mounts and shim start
are slower than a query, above all on the first pod after a cold start); StopContainer and ExecSync
get their own grace period / command timeout on top of `timeout`; PullImage gets `pull_timeout`.
Any call takes `rpc_timeout=` to override its deadline. A runtime that is not listening fails at once
with UNAVAILABLE (gRPC's default fail-fast), so no call waits for a socket that never appears.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any, Final, Self

import grpc

from common.config.edgecore import CONTAINERD_ENDPOINT, TailoredKubeletConfig
from common.errors import KubeEdgeError
from edgecore.cri.convert import from_proto, to_proto
from edgecore.cri.generate import load_protocol
from edgecore.cri.types import (
    AuthConfig,
    Container,
    ContainerConfig,
    ContainerFilter,
    ContainerStats,
    ContainerStatsFilter,
    ContainerStatus,
    ExecSyncResult,
    Image,
    ImageSpec,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxFilter,
    PodSandboxStatus,
    RuntimeStatus,
    RuntimeVersion,
)

DEFAULT_TIMEOUT: Final = 10.0
LIFECYCLE_TIMEOUT: Final = 60.0
PULL_TIMEOUT: Final = 600.0
# kubelet's limit too: ExecSync output and long lists exceed gRPC's default 4 MiB.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
CRI_API_VERSION: Final = "v1"
_IMAGE_SERVICE: Final = "ImageService"


class CRIError(KubeEdgeError):
    """A CRI call failed: `method` (e.g. "RunPodSandbox"), the gRPC `code`, and the runtime's `details`."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.method = method
        self.code = code
        self.details = details
        super().__init__(f"CRI {method} failed: {code.name}: {details}")

    @property
    def not_found(self) -> bool:
        return bool(self.code == grpc.StatusCode.NOT_FOUND)

    @property
    def deadline_exceeded(self) -> bool:
        return bool(self.code == grpc.StatusCode.DEADLINE_EXCEEDED)

    @property
    def unavailable(self) -> bool:
        return bool(self.code == grpc.StatusCode.UNAVAILABLE)


def grpc_target(endpoint: str) -> str:
    """A gRPC target for a kubelet-style runtime endpoint.

    `unix:///run/containerd/containerd.sock` (the edgecore.yaml form), `unix:/path` and a bare
    absolute path all name a unix socket; anything else (tcp://, npipe://, relative paths) is refused,
    because a CRI runtime on Linux listens on a local socket and kubelet accepts nothing else either.
    """
    raw = endpoint.strip()
    if raw.startswith("unix://"):
        path = raw.removeprefix("unix://")
    elif raw.startswith("unix:"):
        path = raw.removeprefix("unix:")
    elif "://" not in raw:
        path = raw
    else:
        raise ValueError(f"CRI endpoint {endpoint!r}: only unix sockets are supported (unix:///path/to.sock)")
    if not path.startswith("/"):
        raise ValueError(f"CRI endpoint {endpoint!r}: the socket path must be absolute")
    return f"unix://{PurePosixPath(path)}"


def _image_spec(image: str | ImageSpec) -> ImageSpec:
    return image if isinstance(image, ImageSpec) else ImageSpec(image=image)


class CRIClient:
    """CRI RuntimeService + ImageService on `endpoint` (and `image_endpoint`, if it differs).

    The channels open on the first call, inside the running event loop; use `async with` or `close()`.
    Building the client compiles the CRI proto if this installation has not yet (edgecore.cri.generate).
    """

    def __init__(
        self,
        endpoint: str = CONTAINERD_ENDPOINT,
        *,
        image_endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        lifecycle_timeout: float = LIFECYCLE_TIMEOUT,
        pull_timeout: float = PULL_TIMEOUT,
    ) -> None:
        for name, value in (("timeout", timeout), ("lifecycle_timeout", lifecycle_timeout),
                            ("pull_timeout", pull_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.target = grpc_target(endpoint)
        self.image_target = grpc_target(image_endpoint) if image_endpoint else self.target
        self.timeout = timeout
        self.lifecycle_timeout = lifecycle_timeout
        self.pull_timeout = pull_timeout
        self._proto = load_protocol()
        self._channels: dict[str, Any] = {}
        self._calls: dict[str, Any] = {}

    @classmethod
    def from_config(cls, kubelet: TailoredKubeletConfig, **options: float) -> CRIClient:
        """A client for edgecore.yaml's `containerRuntimeEndpoint` / `imageServiceEndpoint`."""
        return cls(kubelet.container_runtime_endpoint, image_endpoint=kubelet.image_service_endpoint or None,
                   **options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels; a later call opens new ones."""
        channels = list(self._channels.values())
        self._channels.clear()
        self._calls.clear()
        for channel in channels:
            await channel.close()

    # ---- plumbing -------------------------------------------------------------------------------------

    def _rpc(self, method: str) -> Any:
        call = self._calls.get(method)
        if call is None:
            spec = self._proto.methods[method]
            target = self.image_target if spec.service == _IMAGE_SERVICE else self.target
            channel = self._channels.get(target)
            if channel is None:
                channel = grpc.aio.insecure_channel(target, options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ])
                self._channels[target] = channel
            call = channel.unary_unary(spec.path, request_serializer=spec.request.SerializeToString,
                                       response_deserializer=spec.response.FromString)
            self._calls[method] = call
        return call

    def _request(self, method: str, **fields: Any) -> Any:
        return self._proto.methods[method].request(**fields)

    async def _call(self, method: str, request: Any, deadline: float) -> Any:
        try:
            return await self._rpc(method)(request, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            # `from None`: AioRpcError's own text is a multi-line debug dump; code and details say it all.
            raise CRIError(method, exc.code(), exc.details() or "") from None

    # ---- runtime --------------------------------------------------------------------------------------

    async def version(self, *, rpc_timeout: float | None = None) -> RuntimeVersion:
        response = await self._call("Version", self._request("Version", version=CRI_API_VERSION),
                                    rpc_timeout or self.timeout)
        return from_proto(response, RuntimeVersion)

    async def status(self, *, verbose: bool = False, rpc_timeout: float | None = None) -> RuntimeStatus:
        """RuntimeReady / NetworkReady conditions; `verbose` adds the runtime's JSON `info`."""
        response = await self._call("Status", self._request("Status", verbose=verbose), rpc_timeout or self.timeout)
        return from_proto(response.status, RuntimeStatus, info=dict(response.info))

    # ---- pod sandboxes --------------------------------------------------------------------------------

    async def run_pod_sandbox(
        self, config: PodSandboxConfig, *, runtime_handler: str = "", rpc_timeout: float | None = None
    ) -> str:
        """Create and start a sandbox; returns its ID."""
        request = self._request("RunPodSandbox", runtime_handler=runtime_handler)
        to_proto(config, request.config)
        response = await self._call("RunPodSandbox", request, rpc_timeout or self.lifecycle_timeout)
        return str(response.pod_sandbox_id)

    async def stop_pod_sandbox(self, pod_sandbox_id: str, *, rpc_timeout: float | None = None) -> None:
        """Stop the sandbox and kill its containers. Idempotent per CRI while the sandbox exists, but
        containerd 1.6 answers NOT_FOUND once it has been removed."""
        await self._call("StopPodSandbox", self._request("StopPodSandbox", pod_sandbox_id=pod_sandbox_id),
                         rpc_timeout or self.lifecycle_timeout)

    async def remove_pod_sandbox(self, pod_sandbox_id: str, *, rpc_timeout: float | None = None) -> None:
        """Remove the sandbox and (forcibly) its containers; idempotent per CRI."""
        await self._call("RemovePodSandbox", self._request("RemovePodSandbox", pod_sandbox_id=pod_sandbox_id),
                         rpc_timeout or self.lifecycle_timeout)

    async def pod_sandbox_status(
        self, pod_sandbox_id: str, *, verbose: bool = False, rpc_timeout: float | None = None
    ) -> PodSandboxStatus:
        """The sandbox's status; CRIError (NOT_FOUND) when there is no such sandbox."""
        request = self._request("PodSandboxStatus", pod_sandbox_id=pod_sandbox_id, verbose=verbose)
        response = await self._call("PodSandboxStatus", request, rpc_timeout or self.timeout)
        return from_proto(response.status, PodSandboxStatus, info=dict(response.info))

    async def list_pod_sandbox(
        self, filter: PodSandboxFilter | None = None, *, rpc_timeout: float | None = None
    ) -> list[PodSandbox]:
        request = self._request("ListPodSandbox")
        if filter is not None:
            to_proto(filter, request.filter)
        response = await self._call("ListPodSandbox", request, rpc_timeout or self.timeout)
        return [from_proto(item, PodSandbox) for item in response.items]

    # ---- containers -----------------------------------------------------------------------------------

    async def create_container(
        self,
        pod_sandbox_id: str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
        *,
        rpc_timeout: float | None = None,
    ) -> str:
        """Create a container in the sandbox (the image must be present); returns its ID."""
        request = self._request("CreateContainer", pod_sandbox_id=pod_sandbox_id)
        to_proto(config, request.config)
        to_proto(sandbox_config, request.sandbox_config)
        response = await self._call("CreateContainer", request, rpc_timeout or self.lifecycle_timeout)
        return str(response.container_id)

    async def start_container(self, container_id: str, *, rpc_timeout: float | None = None) -> None:
        await self._call("StartContainer", self._request("StartContainer", container_id=container_id),
                         rpc_timeout or self.lifecycle_timeout)

    async def stop_container(
        self, container_id: str, grace_period: int, *, rpc_timeout: float | None = None
    ) -> None:
        """SIGTERM, then SIGKILL after `grace_period` seconds (0: at once); idempotent per CRI.

        The default deadline is the grace period plus `timeout`, so a slow-to-stop container is not
        reported as a failed call.
        """
        if grace_period < 0:
            raise ValueError(f"grace_period must be >= 0, got {grace_period}")
        request = self._request("StopContainer", container_id=container_id, timeout=grace_period)
        await self._call("StopContainer", request, rpc_timeout or grace_period + self.timeout)

    async def remove_container(self, container_id: str, *, rpc_timeout: float | None = None) -> None:
        """Remove the container (forcibly if running); idempotent per CRI."""
        await self._call("RemoveContainer", self._request("RemoveContainer", container_id=container_id),
                         rpc_timeout or self.lifecycle_timeout)

    async def list_containers(
        self, filter: ContainerFilter | None = None, *, rpc_timeout: float | None = None
    ) -> list[Container]:
        request = self._request("ListContainers")
        if filter is not None:
            to_proto(filter, request.filter)
        response = await self._call("ListContainers", request, rpc_timeout or self.timeout)
        return [from_proto(item, Container) for item in response.containers]

    async def container_status(
        self, container_id: str, *, verbose: bool = False, rpc_timeout: float | None = None
    ) -> ContainerStatus:
        """The container's status; `verbose` adds `info["info"]` (runtime JSON incl. the pid).

        CRIError (NOT_FOUND) when there is no such container.
        """
        request = self._request("ContainerStatus", container_id=container_id, verbose=verbose)
        response = await self._call("ContainerStatus", request, rpc_timeout or self.timeout)
        return from_proto(response.status, ContainerStatus, info=dict(response.info))

    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], *, timeout: float = 10.0, rpc_timeout: float | None = None
    ) -> ExecSyncResult:
        """Run `cmd` in the container and wait for it; a non-zero exit is a result, not an error.

        `timeout` bounds the command in the runtime (CRI counts whole seconds, so it is rounded up);
        a command still running then makes the call fail with a CRIError. CRI's "0 = no limit" is not
        offered: every command here ends.
        """
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if not cmd:
            raise ValueError("cmd must not be empty")
        seconds = math.ceil(timeout)
        request = self._request("ExecSync", container_id=container_id, cmd=list(cmd), timeout=seconds)
        response = await self._call("ExecSync", request, rpc_timeout or seconds + self.timeout)
        return from_proto(response, ExecSyncResult)

    async def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        rpc_timeout: float | None = None,
    ) -> str:
        """The URL of the runtime's streaming server for an interactive exec (kubectl exec -it)."""
        if not cmd:
            raise ValueError("cmd must not be empty")
        # CRI: with a TTY, stderr must be false; the terminal carries both streams as one.
        request = self._request("Exec", container_id=container_id, cmd=list(cmd), tty=tty, stdin=stdin,
                                stdout=stdout, stderr=stderr and not tty)
        response = await self._call("Exec", request, rpc_timeout or self.timeout)
        return str(response.url)

    async def container_stats(self, container_id: str, *, rpc_timeout: float | None = None) -> ContainerStats:
        response = await self._call("ContainerStats", self._request("ContainerStats", container_id=container_id),
                                    rpc_timeout or self.timeout)
        return from_proto(response.stats, ContainerStats)

    async def list_container_stats(
        self, filter: ContainerStatsFilter | None = None, *, rpc_timeout: float | None = None
    ) -> list[ContainerStats]:
        request = self._request("ListContainerStats")
        if filter is not None:
            to_proto(filter, request.filter)
        response = await self._call("ListContainerStats", request, rpc_timeout or self.timeout)
        return [from_proto(item, ContainerStats) for item in response.stats]

    # ---- images ---------------------------------------------------------------------------------------

    async def list_images(self, *, rpc_timeout: float | None = None) -> list[Image]:
        """Every image of the runtime. (No filter: containerd 1.6 ignores ListImages' filter; use image_status.)"""
        response = await self._call("ListImages", self._request("ListImages"), rpc_timeout or self.timeout)
        return [from_proto(item, Image) for item in response.images]

    async def image_status(
        self, image: str | ImageSpec, *, verbose: bool = False, rpc_timeout: float | None = None
    ) -> Image | None:
        """The image if it is present on the node, None if not (CRI reports absence without an error)."""
        request = self._request("ImageStatus", verbose=verbose)
        to_proto(_image_spec(image), request.image)
        response = await self._call("ImageStatus", request, rpc_timeout or self.timeout)
        if not response.HasField("image"):
            return None
        return from_proto(response.image, Image, info=dict(response.info))

    async def pull_image(
        self,
        image: str | ImageSpec,
        *,
        auth: AuthConfig | None = None,
        sandbox_config: PodSandboxConfig | None = None,
        rpc_timeout: float | None = None,
    ) -> str:
        """Pull the image; returns the runtime's image reference. No registry reachable: CRIError."""
        request = self._request("PullImage")
        to_proto(_image_spec(image), request.image)
        if auth is not None:
            to_proto(auth, request.auth)
        if sandbox_config is not None:
            to_proto(sandbox_config, request.sandbox_config)
        response = await self._call("PullImage", request, rpc_timeout or self.pull_timeout)
        return str(response.image_ref)

    async def remove_image(self, image: str | ImageSpec, *, rpc_timeout: float | None = None) -> None:
        request = self._request("RemoveImage")
        to_proto(_image_spec(image), request.image)
        await self._call("RemoveImage", request, rpc_timeout or self.lifecycle_timeout)
