"""edgecore/cri/proto/api.proto against the field numbers of ../shared/ref/runtime.md and upstream.

A field under a wrong number is not an error anywhere: containerd would silently ignore it or read it
as another field. So every number is compared with the reference table, copied below from runtime.md
("Hand-written minimal CRI proto"; long lines wrapped), and the few fields beyond it with upstream's.
"""

from __future__ import annotations

import re

import pytest

from edgecore.cri.generate import load_protocol

REF_TABLE = """
VersionRequest{version=1}  VersionResponse{version=1 runtime_name=2 runtime_version=3 runtime_api_version=4}
StatusRequest{verbose=1}  StatusResponse{status=1(RuntimeStatus{conditions=1}) info=2(map)}
RuntimeCondition{type=1 status=2 reason=3 message=4}
KeyValue{key=1 value=2}  Int64Value{value=1}  UInt64Value{value=1}
enum NamespaceMode{POD=0 CONTAINER=1 NODE=2 TARGET=3}
NamespaceOption{network=1 pid=2 ipc=3 target_id=4}
ImageSpec{image=1 annotations=2(map)}
Mount{container_path=1 host_path=2 readonly=3}
DNSConfig{servers=1 searches=2 options=3}
enum Protocol{TCP=0 UDP=1 SCTP=2}  PortMapping{protocol=1 container_port=2 host_port=3 host_ip=4}
LinuxContainerResources{cpu_period=1 cpu_quota=2 cpu_shares=3 memory_limit_in_bytes=4 oom_score_adj=5
                        cpuset_cpus=6 cpuset_mems=7}
PodSandboxMetadata{name=1 uid=2 namespace=3 attempt=4}
LinuxSandboxSecurityContext{namespace_options=1 run_as_user=3 readonly_rootfs=4 privileged=6}
LinuxPodSandboxConfig{cgroup_parent=1 security_context=2 sysctls=3(map)}
PodSandboxConfig{metadata=1 hostname=2 log_directory=3 dns_config=4 port_mappings=5 labels=6 annotations=7 linux=8}
RunPodSandboxRequest{config=1 runtime_handler=2}  RunPodSandboxResponse{pod_sandbox_id=1}
StopPodSandboxRequest{pod_sandbox_id=1}  RemovePodSandboxRequest{pod_sandbox_id=1}  (responses empty)
enum PodSandboxState{SANDBOX_READY=0 SANDBOX_NOTREADY=1}
PodSandboxNetworkStatus{ip=1}
PodSandboxStatus{id=1 metadata=2 state=3 created_at=4 network=5 labels=7 annotations=8 runtime_handler=9}
PodSandboxStatusRequest{pod_sandbox_id=1 verbose=2}  PodSandboxStatusResponse{status=1 info=2}
PodSandboxStateValue{state=1}  PodSandboxFilter{id=1 state=2 label_selector=3}
ListPodSandboxRequest{filter=1}  PodSandbox{id=1 metadata=2 state=3 created_at=4 labels=5 annotations=6
                                            runtime_handler=7}
ListPodSandboxResponse{items=1}
ContainerMetadata{name=1 attempt=2}
LinuxContainerSecurityContext{privileged=2 namespace_options=3 run_as_user=5 readonly_rootfs=7}
LinuxContainerConfig{resources=1 security_context=2}
ContainerConfig{metadata=1 image=2 command=3 args=4 working_dir=5 envs=6 mounts=7 labels=9 annotations=10
                log_path=11 stdin=12 stdin_once=13 tty=14 linux=15}
CreateContainerRequest{pod_sandbox_id=1 config=2 sandbox_config=3}  CreateContainerResponse{container_id=1}
StartContainerRequest{container_id=1}  StopContainerRequest{container_id=1 timeout=2}
RemoveContainerRequest{container_id=1}
enum ContainerState{CONTAINER_CREATED=0 CONTAINER_RUNNING=1 CONTAINER_EXITED=2 CONTAINER_UNKNOWN=3}
ContainerStateValue{state=1}  ContainerFilter{id=1 state=2 pod_sandbox_id=3 label_selector=4}
ListContainersRequest{filter=1}  ListContainersResponse{containers=1}
Container{id=1 pod_sandbox_id=2 metadata=3 image=4 image_ref=5 state=6 created_at=7 labels=8 annotations=9}
ContainerStatusRequest{container_id=1 verbose=2}  ContainerStatusResponse{status=1 info=2}
ContainerStatus{id=1 metadata=2 state=3 created_at=4 started_at=5 finished_at=6 exit_code=7 image=8 image_ref=9
                reason=10 message=11 labels=12 annotations=13 mounts=14 log_path=15}
ExecSyncRequest{container_id=1 cmd=2 timeout=3}  ExecSyncResponse{stdout=1(bytes) stderr=2(bytes) exit_code=3}
ContainerAttributes{id=1 metadata=2 labels=3 annotations=4}
CpuUsage{timestamp=1 usage_core_nano_seconds=2 usage_nano_cores=3}
MemoryUsage{timestamp=1 working_set_bytes=2 available_bytes=3 usage_bytes=4 rss_bytes=5 page_faults=6
            major_page_faults=7}
FilesystemIdentifier{mountpoint=1}  FilesystemUsage{timestamp=1 fs_id=2 used_bytes=3 inodes_used=4}
ContainerStats{attributes=1 cpu=2 memory=3 writable_layer=4}
ContainerStatsRequest{container_id=1}  ContainerStatsResponse{stats=1}
ContainerStatsFilter{id=1 pod_sandbox_id=2 label_selector=3}  ListContainerStatsRequest{filter=1}
ListContainerStatsResponse{stats=1}
ImageFilter{image=1}  ListImagesRequest{filter=1}  ListImagesResponse{images=1}
Image{id=1 repo_tags=2 repo_digests=3 size=4 uid=5 username=6 spec=7 pinned=8}
ImageStatusRequest{image=1 verbose=2}  ImageStatusResponse{image=1 info=2}
AuthConfig{username=1 password=2 auth=3 server_address=4 identity_token=5 registry_token=6}
PullImageRequest{image=1 auth=2 sandbox_config=3}  PullImageResponse{image_ref=1}  RemoveImageRequest{image=1}
"""

# Declared in api.proto but not in runtime.md's table; numbers from upstream's cri-api runtime/v1 api.proto.
BEYOND_REF: dict[str, dict[str, int]] = {
    "Mount": {"propagation": 5},
    "enum MountPropagation": {"PROPAGATION_PRIVATE": 0, "PROPAGATION_HOST_TO_CONTAINER": 1,
                              "PROPAGATION_BIDIRECTIONAL": 2},
    "Capability": {"add_capabilities": 1, "drop_capabilities": 2},
    "LinuxSandboxSecurityContext": {"supplemental_groups": 5, "run_as_group": 8},
    "LinuxContainerSecurityContext": {"capabilities": 1, "run_as_username": 6, "supplemental_groups": 8,
                                      "no_new_privs": 11, "run_as_group": 12},
    "Container": {"image_id": 10},
    "ContainerStatus": {"image_id": 17},
    "ExecRequest": {"container_id": 1, "cmd": 2, "tty": 3, "stdin": 4, "stdout": 5, "stderr": 6},
    "ExecResponse": {"url": 1},
}

SERVICES = {
    "RuntimeService": {"Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus",
                       "ListPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer",
                       "ListContainers", "ContainerStatus", "ExecSync", "Exec", "ContainerStats",
                       "ListContainerStats", "Status"},
    "ImageService": {"ListImages", "ImageStatus", "PullImage", "RemoveImage"},
}

_BLOCK = re.compile(r"((?:enum\s+)?\w+)\{([^{}]*)\}")


def parse_ref(text: str) -> dict[str, dict[str, int]]:
    """{"Message": {"field": number}, "enum Name": {"VALUE": number}}; nested blocks are read first."""
    found: dict[str, dict[str, int]] = {}
    while match := _BLOCK.search(text):
        body = re.sub(r"\([^()]*\)", "", match.group(2))
        found[re.sub(r"\s+", " ", match.group(1))] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", body)}
        text = text[: match.start()] + match.group(1).split()[-1] + text[match.end() :]
    return found


def proto_numbers() -> dict[str, dict[str, int]]:
    proto = load_protocol()
    numbers: dict[str, dict[str, int]] = {}
    for name, cls in proto.messages.items():
        numbers[name] = {f.name: f.number for f in cls.DESCRIPTOR.fields}
    file = proto.messages["KeyValue"].DESCRIPTOR.file
    for enum in file.enum_types_by_name.values():
        numbers[f"enum {enum.name}"] = {v.name: v.number for v in enum.values}
    return numbers


def test_the_reference_table_parses_completely() -> None:
    ref = parse_ref(REF_TABLE)
    assert ref["RuntimeStatus"] == {"conditions": 1}
    assert ref["StatusResponse"] == {"status": 1, "info": 2}
    assert ref["ContainerConfig"]["linux"] == 15 and ref["ContainerStatus"]["log_path"] == 15
    assert ref["enum ContainerState"]["CONTAINER_UNKNOWN"] == 3
    assert len(ref) == REF_TABLE.count("{")  # no block lost (76 of them)


@pytest.mark.parametrize("name", sorted(parse_ref(REF_TABLE)))
def test_every_reference_field_has_its_number(name: str) -> None:
    ours = proto_numbers()
    assert name in ours, f"{name} is in runtime.md but not in api.proto"
    want = parse_ref(REF_TABLE)[name]
    assert {field: ours[name].get(field) for field in want} == want


def test_every_field_is_in_the_reference_or_checked_against_upstream() -> None:
    ref = parse_ref(REF_TABLE)
    unexplained = {}
    for name, fields in proto_numbers().items():
        for field, number in fields.items():
            expected = ref.get(name, {}).get(field, BEYOND_REF.get(name, {}).get(field))
            if expected != number:
                unexplained[f"{name}.{field}"] = (number, expected)
    assert unexplained == {}


def test_the_services_have_the_rpcs_edged_uses() -> None:
    methods = load_protocol().methods
    for service, names in SERVICES.items():
        assert {m.name for m in methods.values() if m.service == service} == names
    assert methods["RunPodSandbox"].path == "/runtime.v1.RuntimeService/RunPodSandbox"
    assert methods["PullImage"].path == "/runtime.v1.ImageService/PullImage"
    assert methods["ExecSync"].response.DESCRIPTOR.full_name == "runtime.v1.ExecSyncResponse"


def test_the_wire_bytes_use_upstream_numbers() -> None:
    metadata = load_protocol().message("PodSandboxMetadata")(name="a", uid="u", namespace="n", attempt=1)
    # tag = number << 3 | wire type: 1/2/3 length-delimited (0x0a 0x12 0x1a), 4 varint (0x20).
    assert metadata.SerializeToString() == b"\x0a\x01a\x12\x01u\x1a\x01n\x20\x01"
