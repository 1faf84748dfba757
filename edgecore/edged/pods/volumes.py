"""Pod volumes and env values from the objects MetaManager stored: emptyDir, hostPath, configMap, secret,
downwardAPI, env valueFrom (configMapKeyRef, secretKeyRef, fieldRef) and envFrom.

Layout, as kubelet's: `<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>`; the whole
`<root>/pods/<uid>` goes when the pod is gone. configMap, secret and downwardAPI volumes are written
atomically the way kubelet's AtomicWriter does: the files go into a fresh hidden directory, a `..data`
symlink is swapped to it with one rename, and each visible name is a symlink through `..data`; so a
reader (the container sees the volume through a bind mount) never sees half an update. They are
rewritten only when their content changes, which the worker checks every re-sync.

Anything that keeps a container from being configured (a missing non-optional configMap, secret or key,
a hostPath of the wrong type, an unknown volume) is a VolumeError: the worker reports the container
waiting with CreateContainerConfigError and retries with back-off, never crashes. One raised while
setting up a volume (an OSError there too) is a MountError naming the volume (the worker's FailedMount
event says which).

The pure parts (`projected_files`, `field_value`, `env_from_objects`) take the objects as dicts; the
I/O parts run on a worker thread so a slow disk does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import shutil
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any, Final

from common.errors import KubeEdgeError
from edgecore.cri.types import Mount
from edgecore.edged.pods.spec import ContainerSpec, PodSpec, Volume

# (namespace, kind "configmap"|"secret", name) -> the stored object, or None if there is none.
ObjectGetter = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]
JSONDict = dict[str, Any]

PLUGINS: Final = {
    "emptyDir": "kubernetes.io~empty-dir", "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret", "downwardAPI": "kubernetes.io~downward-api",
}
PROJECTED: Final = ("configMap", "secret", "downwardAPI")
DEFAULT_MODE: Final = 0o644
DATA_LINK: Final = "..data"
_HOSTPATH_TYPES: Final = {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
                          "BlockDevice"}


class VolumeError(KubeEdgeError):
    """The container cannot be configured yet (reported as CreateContainerConfigError)."""


class MountError(VolumeError):
    """One of the pod's volumes cannot be set up (kubelet's FailedMount event names `volume`)."""

    def __init__(self, volume: str, detail: str) -> None:
        super().__init__(detail)
        self.volume = volume


def pod_dir(root: Path, uid: str) -> Path:
    return root / "pods" / uid


def volume_dir(root: Path, uid: str, volume: Volume) -> Path:
    if volume.kind == "hostPath":
        return Path(str(volume.source.get("path") or ""))
    return pod_dir(root, uid) / "volumes" / PLUGINS[volume.kind] / volume.name


# ---- pure: what goes into the files and env ------------------------------------------------------


def field_value(spec: PodSpec, path: str, *, pod_ip: str = "", host_ip: str = "") -> str:
    """A downward-API fieldPath's value; VolumeError for one Edged does not know."""
    simple = {"metadata.name": spec.name, "metadata.namespace": spec.namespace, "metadata.uid": spec.uid,
              "spec.nodeName": spec.node_name, "spec.serviceAccountName": spec.service_account,
              "status.podIP": pod_ip, "status.hostIP": host_ip}
    if path in simple:
        return simple[path]
    if path in ("metadata.labels", "metadata.annotations"):
        values = spec.labels if path == "metadata.labels" else spec.annotations
        return "".join(f"{k}={_quote(v)}\n" for k, v in sorted(values.items()))
    for prefix, values in (("metadata.labels", spec.labels), ("metadata.annotations", spec.annotations)):
        if path.startswith(f"{prefix}['") and path.endswith("']"):
            return values.get(path[len(prefix) + 2:-2], "")
    raise VolumeError(f"fieldPath {path!r} is not supported")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def object_data(kind: str, obj: JSONDict) -> dict[str, bytes]:
    """The key -> bytes of a configMap (data + binaryData) or secret (base64 data + stringData)."""
    out: dict[str, bytes] = {}
    try:
        if kind == "configMap":
            out.update({str(k): str(v).encode() for k, v in (obj.get("data") or {}).items()})
            out.update({str(k): base64.b64decode(str(v)) for k, v in (obj.get("binaryData") or {}).items()})
        else:
            out.update({str(k): base64.b64decode(str(v)) for k, v in (obj.get("data") or {}).items()})
            out.update({str(k): str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
    except (binascii.Error, ValueError) as exc:
        raise VolumeError(f"{kind} {obj.get('metadata', {}).get('name', '?')}: bad base64 data: {exc}") from exc
    return out


def _safe_relative(path: str, what: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts:
        raise VolumeError(f"{what} {path!r} must be a relative path without '..'")
    return str(pure)


def _mode(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777 else default


def projected_files(volume: Volume, spec: PodSpec, obj: JSONDict | None) -> dict[str, tuple[bytes, int]] | None:
    """relative path -> (content, mode) of a configMap/secret/downwardAPI volume; None for an absent
    optional object (an empty volume); VolumeError when a required object or key is missing."""
    source = volume.source
    default_mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
    items = [i for i in source.get("items") or [] if isinstance(i, dict)]
    if volume.kind == "downwardAPI":
        return {_safe_relative(str(i.get("path") or ""), "path"):
                (field_value(spec, str((i.get("fieldRef") or {}).get("fieldPath") or "")).encode(),
                 _mode(i.get("mode"), default_mode)) for i in items}
    what = f"{volume.kind} {_object_name(volume)}"
    optional = bool(source.get("optional"))
    if obj is None:
        if optional:
            return None
        raise VolumeError(f"{what} not found")
    data = object_data(volume.kind, obj)
    if not items:
        return {_safe_relative(k, "key"): (v, default_mode) for k, v in data.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        key = str(item.get("key") or "")
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{what}: key {key!r} not found")
        files[_safe_relative(str(item.get("path") or key), "path")] = (data[key], _mode(item.get("mode"), default_mode))
    return files


def _object_name(volume: Volume) -> str:
    return str(volume.source.get("secretName" if volume.kind == "secret" else "name") or "")


def env_from_objects(container: ContainerSpec, objects: dict[tuple[str, str], JSONDict | None]) -> list[
        tuple[str, str]]:
    """The envFrom entries (prefix + every key of a configMap or secret), in order; `objects` has each
    referenced (kind, name)."""
    out: list[tuple[str, str]] = []
    for source in container.env_from:
        kind, ref = _env_from_ref(source)
        name = str(ref.get("name") or "")
        obj = objects.get((kind, name))
        if obj is None:
            if ref.get("optional"):
                continue
            raise VolumeError(f"{kind} {name} not found (envFrom)")
        prefix = str(source.get("prefix") or "")
        out += [(prefix + k, v.decode(errors="replace")) for k, v in sorted(object_data(kind, obj).items())]
    return out


def _env_from_ref(source: JSONDict) -> tuple[str, JSONDict]:
    if isinstance(source.get("configMapRef"), dict):
        return "configMap", source["configMapRef"]
    if isinstance(source.get("secretRef"), dict):
        return "secret", source["secretRef"]
    raise VolumeError("envFrom needs configMapRef or secretRef")


# ---- async: the objects, the env ------------------------------------------------------------------

_STORE_KIND: Final = {"configMap": "configmap", "secret": "secret"}


async def _get(get: ObjectGetter | None, spec: PodSpec, kind: str, name: str) -> JSONDict | None:
    if get is None or not name:
        return None
    return await get(spec.namespace, _STORE_KIND[kind], name)


async def resolve_env(spec: PodSpec, container: ContainerSpec, get: ObjectGetter | None, *, pod_ip: str = "",
                      host_ip: str = "") -> list[tuple[str, str]]:
    """The container's env as the runtime gets it: envFrom first, then `env` in order (later wins)."""
    objects: dict[tuple[str, str], JSONDict | None] = {}
    for source in container.env_from:
        kind, ref = _env_from_ref(source)
        objects[(kind, str(ref.get("name") or ""))] = await _get(get, spec, kind, str(ref.get("name") or ""))
    env = dict(env_from_objects(container, objects))
    for var in container.env_vars:
        if var.source is None:
            env[var.name] = var.value
            continue
        value = await _value_from(spec, var.name, var.source, get, pod_ip=pod_ip, host_ip=host_ip)
        if value is not None:
            env[var.name] = value
    return list(env.items())


async def _value_from(spec: PodSpec, name: str, source: JSONDict, get: ObjectGetter | None, *, pod_ip: str,
                      host_ip: str) -> str | None:
    if isinstance(source.get("fieldRef"), dict):
        return field_value(spec, str(source["fieldRef"].get("fieldPath") or ""), pod_ip=pod_ip, host_ip=host_ip)
    for ref_key, kind in (("configMapKeyRef", "configMap"), ("secretKeyRef", "secret")):
        ref = source.get(ref_key)
        if not isinstance(ref, dict):
            continue
        obj_name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
        obj = await _get(get, spec, kind, obj_name)
        data = object_data(kind, obj) if obj is not None else None
        if data is not None and key in data:
            return data[key].decode(errors="replace")
        if ref.get("optional"):
            return None
        missing = f"{kind} {obj_name}" if data is None else f"key {key!r} in {kind} {obj_name}"
        raise VolumeError(f"env {name}: {missing} not found")
    raise VolumeError(f"env {name}: valueFrom kind not supported (fieldRef, configMapKeyRef, secretKeyRef)")


# ---- I/O: the volume directories ------------------------------------------------------------------


async def prepare_volumes(spec: PodSpec, root: Path, get: ObjectGetter | None, *, only_projected: bool = False
                          ) -> dict[str, Path]:
    """Create or refresh every volume of the pod; volume name -> host directory (or file, for hostPath)."""
    dirs: dict[str, Path] = {}
    for volume in spec.volumes:
        if only_projected and volume.kind not in PROJECTED:
            continue
        try:
            dirs[volume.name] = await _prepare_volume(spec, volume, root, get)
        except MountError:
            raise
        except (VolumeError, OSError) as exc:
            raise MountError(volume.name, str(exc)) from None
    return dirs


async def _prepare_volume(spec: PodSpec, volume: Volume, root: Path, get: ObjectGetter | None) -> Path:
    if volume.kind not in (*PLUGINS, "hostPath"):
        raise VolumeError(f"volume {volume.name}: type {volume.kind or '(none or several)'} not supported")
    where = volume_dir(root, spec.uid, volume)
    if volume.kind == "hostPath":
        await asyncio.to_thread(_check_host_path, volume, where)
    elif volume.kind == "emptyDir":
        await asyncio.to_thread(where.mkdir, mode=0o777, parents=True, exist_ok=True)
    else:
        obj = None
        if volume.kind != "downwardAPI":
            obj = await _get(get, spec, volume.kind, _object_name(volume))
        files = projected_files(volume, spec, obj)
        await asyncio.to_thread(write_atomic, where, files or {})
    return where


def _check_host_path(volume: Volume, path: Path) -> None:
    kind = str(volume.source.get("type") or "")
    if kind not in _HOSTPATH_TYPES:
        raise VolumeError(f"volume {volume.name}: hostPath type {kind!r} not supported")
    if not path.is_absolute():
        raise VolumeError(f"volume {volume.name}: hostPath {str(path)!r} is not absolute")
    if kind == "DirectoryOrCreate":
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        if not path.parent.is_dir():
            raise VolumeError(f"volume {volume.name}: parent of {path} does not exist (FileOrCreate)")
        path.touch(mode=0o644)
    checks: dict[str, Callable[[int], bool]] = {
        "Directory": stat.S_ISDIR, "DirectoryOrCreate": stat.S_ISDIR, "File": stat.S_ISREG,
        "FileOrCreate": stat.S_ISREG, "Socket": stat.S_ISSOCK, "CharDevice": stat.S_ISCHR,
        "BlockDevice": stat.S_ISBLK}
    if kind in checks:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise VolumeError(f"volume {volume.name}: hostPath {path} does not exist (type {kind})") from None
        if not checks[kind](mode):
            raise VolumeError(f"volume {volume.name}: hostPath {path} is not a {kind.removesuffix('OrCreate')}")


def _current(where: Path) -> dict[str, tuple[bytes, int]] | None:
    data = where / DATA_LINK
    if not data.is_symlink():
        return None
    current: dict[str, tuple[bytes, int]] = {}
    for path in data.resolve().rglob("*"):
        if path.is_file():
            current[str(path.relative_to(data.resolve()))] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return current


def write_atomic(where: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Make `where` show exactly `files`, switching all at once; False if it already did."""
    where.mkdir(mode=0o755, parents=True, exist_ok=True)
    if _current(where) == files:
        return False
    fresh = where / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{os.getpid()}.{time.monotonic_ns()}"
    fresh.mkdir(mode=0o755)
    for relative, (content, mode) in files.items():
        target = fresh / relative
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)
    link = where / f"{DATA_LINK}_tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(fresh.name)
    old = (where / DATA_LINK).resolve() if (where / DATA_LINK).is_symlink() else None
    link.replace(where / DATA_LINK)  # the one atomic step
    top = {PurePosixPath(p).parts[0] for p in files}
    for name in top:
        visible = where / name
        if not visible.is_symlink():
            visible.symlink_to(f"{DATA_LINK}/{name}")
    for entry in where.iterdir():  # names no longer in the volume, then the previous generation
        if not entry.name.startswith("..") and entry.name not in top:
            entry.unlink()
    if old is not None and old != fresh.resolve():
        shutil.rmtree(old, ignore_errors=True)
    return True


async def container_mounts(container: ContainerSpec, spec: PodSpec, dirs: dict[str, Path]) -> list[Mount]:
    """The CRI mounts of `container` per its volumeMounts (subPath inside emptyDir/hostPath is created)."""
    mounts = []
    for mount in container.mounts:
        volume = spec.volume(mount.name)
        if volume is None or mount.name not in dirs:
            raise VolumeError(f"container {container.name}: volumeMount {mount.name!r} names no volume of the pod")
        host = dirs[mount.name]
        if mount.sub_path:
            host = host / _safe_relative(mount.sub_path, "subPath")
            if volume.kind in ("emptyDir", "hostPath") and not host.exists():
                await asyncio.to_thread(host.mkdir, mode=0o755, parents=True, exist_ok=True)
        # kubelet mounts configMap/secret/downwardAPI volumes read-only whatever the volumeMount says.
        read_only = mount.read_only or volume.kind in PROJECTED
        mounts.append(Mount(container_path=mount.mount_path, host_path=str(host), readonly=read_only))
    return mounts


def remove_pod_dir(root: Path, uid: str) -> None:
    """Remove the pod's volumes (emptyDir data included); hostPath contents are never touched."""
    shutil.rmtree(pod_dir(root, uid), ignore_errors=True)
