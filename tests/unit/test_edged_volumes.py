"""Pure mapping of pod volumes, env sources, resources and securityContext to files and CRI fields."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from edgecore.cri.types import NamespaceOption
from edgecore.edged.pods.resources import linux_resources, parse_quantity, sandbox_privileged, security_context
from edgecore.edged.pods.spec import PodSpecError, parse_pod
from edgecore.edged.pods.volumes import (
    VolumeError,
    env_from_objects,
    field_value,
    projected_files,
    resolve_env,
    volume_dir,
    write_atomic,
)


def pod(container: dict[str, Any] | None = None, **spec: Any) -> Any:
    return parse_pod({
        "metadata": {"uid": "u1", "name": "web", "namespace": "ns", "labels": {"app": "web"},
                     "annotations": {"note": 'say "hi"'}},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "app", "image": "i", **(container or {})}], **spec},
    })


def test_quantities() -> None:
    assert [parse_quantity(q) for q in ("500m", "0.5", "64Mi", "1G", "1e3", 2)] == [
        parse_quantity("0.5"), parse_quantity("500m"), 64 * 2**20, 10**9, 1000, 2]
    with pytest.raises(PodSpecError):
        parse_quantity("12xyz")


@pytest.mark.parametrize(("resources", "expected"), [
    ({}, (2, 0, 0, 0)),
    ({"requests": {"cpu": "250m"}}, (256, 0, 0, 0)),
    ({"limits": {"cpu": "500m", "memory": "64Mi"}}, (512, 100000, 50000, 64 * 2**20)),
    ({"limits": {"cpu": "1"}, "requests": {"cpu": "100m"}}, (102, 100000, 100000, 0)),
    ({"limits": {"cpu": "1m"}}, (2, 100000, 1000, 0)),
])
def test_cgroup_v1_resources(resources: dict[str, Any], expected: tuple[int, int, int, int]) -> None:
    mapped = linux_resources(pod({"resources": resources}).containers[0])
    assert (mapped.cpu_shares, mapped.cpu_period, mapped.cpu_quota, mapped.memory_limit_in_bytes) == expected


def test_security_context_container_overrides_pod() -> None:
    spec = pod({"securityContext": {"runAsUser": 1000, "privileged": True, "readOnlyRootFilesystem": True}},
               securityContext={"runAsUser": 5, "runAsGroup": 7})
    ctx = security_context(spec, spec.containers[0], NamespaceOption())
    assert (ctx.run_as_user, ctx.run_as_group, ctx.privileged, ctx.readonly_rootfs) == (1000, 7, True, True)
    assert sandbox_privileged(spec) and not sandbox_privileged(pod())


def test_field_values() -> None:
    spec = pod()
    assert field_value(spec, "metadata.name") == "web" and field_value(spec, "spec.nodeName") == "edge-1"
    assert field_value(spec, "status.podIP", pod_ip="10.88.0.3") == "10.88.0.3"
    assert field_value(spec, "metadata.labels") == 'app="web"\n'
    assert field_value(spec, "metadata.annotations") == 'note="say \\"hi\\""\n'
    assert field_value(spec, "metadata.labels['app']") == "web"
    with pytest.raises(VolumeError):
        field_value(spec, "status.phase")


def test_projected_files_items_modes_optional_and_secrets() -> None:
    spec = pod(volumes=[
        {"name": "c", "configMap": {"name": "cm", "items": [{"key": "a", "path": "sub/a.txt", "mode": 0o600}],
                                    "defaultMode": 0o640}},
        {"name": "s", "secret": {"secretName": "sec"}},
        {"name": "o", "configMap": {"name": "gone", "optional": True}},
        {"name": "r", "configMap": {"name": "gone"}},
    ])
    c, s, o, r = spec.volumes
    assert projected_files(c, spec, {"data": {"a": "1", "b": "2"}}) == {"sub/a.txt": (b"1", 0o600)}
    with pytest.raises(VolumeError, match="key 'a'"):
        projected_files(c, spec, {"data": {"b": "2"}})
    assert projected_files(s, spec, {"data": {"pw": base64.b64encode(b"x").decode()}}) == {"pw": (b"x", 0o644)}
    assert projected_files(o, spec, None) is None
    with pytest.raises(VolumeError, match="not found"):
        projected_files(r, spec, None)
    assert volume_dir(Path("/r"), "u1", s) == Path("/r/pods/u1/volumes/kubernetes.io~secret/s")


def test_unknown_volume_kind_is_kept_for_a_clear_error() -> None:
    spec = pod(volumes=[{"name": "x", "nfs": {"server": "a"}}, {"name": "y"}])
    assert [(v.name, v.kind) for v in spec.volumes] == [("x", "nfs"), ("y", "")]


def test_env_from_and_value_from_order() -> None:
    spec = pod({"envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "P_"}, {"secretRef": {"name": "nope",
                                                                                              "optional": True}}],
                "env": [{"name": "P_a", "value": "literal"},
                        {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]})
    container = spec.containers[0]
    assert container.env == (("P_a", "literal"),)
    assert env_from_objects(container, {("configMap", "cm"): {"data": {"a": "1"}}, ("secret", "nope"): None}) == [
        ("P_a", "1")]


async def test_resolve_env_missing_key_is_a_config_error() -> None:
    spec = pod({"env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                        {"name": "O", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}}]})

    async def get(namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        return {"data": {"k": "v"}} if (namespace, kind, name) == ("ns", "configmap", "cm") else None

    assert await resolve_env(spec, spec.containers[0], get) == [("K", "v")]

    async def nothing(namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        return None

    with pytest.raises(VolumeError, match="configMap cm not found"):
        await resolve_env(spec, spec.containers[0], nothing)


def test_write_atomic_swaps_and_prunes(tmp_path: Path) -> None:
    where = tmp_path / "v"
    assert write_atomic(where, {"a": (b"1", 0o644), "b": (b"2", 0o600)})
    assert not write_atomic(where, {"a": (b"1", 0o644), "b": (b"2", 0o600)})  # unchanged: no rewrite
    assert write_atomic(where, {"a": (b"3", 0o644)})
    assert (where / "a").read_bytes() == b"3" and not (where / "b").exists()
    assert len([p for p in where.iterdir() if p.name.startswith("..")]) == 2  # ..data + one generation
