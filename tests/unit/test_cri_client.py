"""edgecore.cri.client without a runtime: endpoints, errors, and the requests and deadlines it sends."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from common.config.edgecore import TailoredKubeletConfig
from edgecore.cri import types as cri
from edgecore.cri.client import DEFAULT_TIMEOUT, LIFECYCLE_TIMEOUT, PULL_TIMEOUT, CRIClient, CRIError, grpc_target


@pytest.mark.parametrize(("endpoint", "target"), [
    ("unix:///run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
    ("unix:/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
    ("/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
    ("  unix:///run//k3s/containerd.sock ", "unix:///run/k3s/containerd.sock"),
])
def test_unix_endpoints_become_grpc_targets(endpoint: str, target: str) -> None:
    assert grpc_target(endpoint) == target


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:2375", "npipe:////./pipe/containerd", "unix://relative.sock",
                                      "run/containerd.sock", ""])
def test_other_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="CRI endpoint"):
        grpc_target(endpoint)


def test_crierror_carries_method_code_and_details() -> None:
    error = CRIError("CreateContainer", grpc.StatusCode.NOT_FOUND, 'failed to resolve image "x": not found')
    assert str(error) == 'CRI CreateContainer failed: NOT_FOUND: failed to resolve image "x": not found'
    assert error.not_found and not error.deadline_exceeded and not error.unavailable
    assert CRIError("Version", grpc.StatusCode.UNAVAILABLE, "").unavailable


def test_from_config_uses_both_edgecore_endpoints() -> None:
    kubelet = TailoredKubeletConfig.model_validate({
        "containerRuntimeEndpoint": "unix:///run/a/containerd.sock",
        "imageServiceEndpoint": "unix:///run/b/images.sock",
    })
    client = CRIClient.from_config(kubelet, timeout=3)
    assert (client.target, client.image_target, client.timeout) == (
        "unix:///run/a/containerd.sock", "unix:///run/b/images.sock", 3)
    defaults = CRIClient.from_config(TailoredKubeletConfig())
    assert defaults.target == defaults.image_target == "unix:///run/containerd/containerd.sock"


@pytest.mark.parametrize("option", ["timeout", "lifecycle_timeout", "pull_timeout"])
def test_deadlines_must_be_positive(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        CRIClient.from_config(TailoredKubeletConfig(), **{option: 0.0})


class Recorder:
    """Stands in for the gRPC call: records (method, request, deadline) and answers an empty response."""

    def __init__(self, client: CRIClient) -> None:
        self.client = client
        self.calls: list[tuple[str, Any, float]] = []

    async def __call__(self, method: str, request: Any, deadline: float) -> Any:
        self.calls.append((method, request, deadline))
        return self.client._proto.methods[method].response()


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    client = CRIClient("/run/x.sock", timeout=5, lifecycle_timeout=50, pull_timeout=500)
    recorder = Recorder(client)
    monkeypatch.setattr(client, "_call", recorder)
    return recorder


async def test_each_kind_of_call_gets_its_deadline(recorded: Recorder) -> None:
    cri_client = recorded.client
    config = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="p", uid="u", namespace="n"))
    await cri_client.version()
    await cri_client.run_pod_sandbox(config)
    await cri_client.stop_container("c1", grace_period=30)
    await cri_client.exec_sync("c1", ["true"], timeout=1.2)
    await cri_client.pull_image("docker.io/local/busybox:1.0")
    await cri_client.list_containers(rpc_timeout=0.5)
    deadlines = {method: deadline for method, _, deadline in recorded.calls}
    assert deadlines == {"Version": 5, "RunPodSandbox": 50, "StopContainer": 35, "ExecSync": 7,
                         "PullImage": 500, "ListContainers": 0.5}
    assert (DEFAULT_TIMEOUT, LIFECYCLE_TIMEOUT, PULL_TIMEOUT) == (10.0, 60.0, 600.0)


async def test_requests_carry_the_arguments(recorded: Recorder) -> None:
    cri_client = recorded.client
    sandbox = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="p", uid="u", namespace="n"))
    container = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="c"), image=cri.ImageSpec(image="img"))
    await cri_client.create_container("s1", container, sandbox)
    await cri_client.exec_sync("c1", ("echo", "ok"), timeout=1.2)
    await cri_client.stop_container("c1", grace_period=0)
    await cri_client.list_pod_sandbox(cri.PodSandboxFilter(state=cri.PodSandboxState.SANDBOX_READY))
    await cri_client.image_status("img", verbose=True)
    await cri_client.exec("c1", ["sh"], tty=True, stdin=True)
    (_, create, _), (_, exec_sync, _), (_, stop, _), (_, listing, _), (_, image, _), (_, exec_, _) = recorded.calls
    assert create.pod_sandbox_id == "s1" and create.config.image.image == "img"
    assert create.sandbox_config.metadata.uid == "u"
    assert (list(exec_sync.cmd), exec_sync.timeout) == (["echo", "ok"], 2)  # CRI counts whole seconds
    assert (stop.container_id, stop.timeout) == ("c1", 0)
    assert listing.filter.HasField("state") and listing.filter.state.state == 0
    assert image.image.image == "img" and image.verbose
    assert (exec_.tty, exec_.stdin, exec_.stdout, exec_.stderr) == (True, True, True, False)  # a TTY merges stderr


async def test_absent_image_is_none_not_an_error(recorded: Recorder) -> None:
    assert await recorded.client.image_status("docker.io/local/nope:1") is None


@pytest.mark.parametrize(("call", "says"), [
    (lambda c: c.exec_sync("c1", ["true"], timeout=0), "timeout must be > 0"),
    (lambda c: c.exec_sync("c1", []), "cmd must not be empty"),
    (lambda c: c.exec("c1", []), "cmd must not be empty"),
    (lambda c: c.stop_container("c1", grace_period=-1), "grace_period must be >= 0"),
])
async def test_arguments_that_make_no_sense_are_refused(recorded: Recorder, call: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        await call(recorded.client)
    assert recorded.calls == []
