"""The parts of a v1.Pod that Edged acts on, parsed once from the dict the cloud sent.

Parsing is lenient where Kubernetes has defaults (restartPolicy Always, grace period 30 s, probe timings)
and strict where acting on a guess would run the wrong thing (no uid, no name, a container without an
image: the API server refuses those too). A probe is kept as sent, even one that cannot run (no handler,
an undeclared port name): the worker refuses to start that container with a clear reason and an event,
so one bad pod never fails the parse.

What the pod's own status says is kept for one case: a pod this node rejected at admission (phase
Failed, message "Pod was rejected: ...", as kubelet writes it) stays rejected when edgecore restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from common.errors import KubeEdgeError

RestartPolicy = Literal["Always", "OnFailure", "Never"]
RESTART_POLICIES: Final[tuple[RestartPolicy, ...]] = ("Always", "OnFailure", "Never")
DEFAULT_GRACE_SECONDS: Final = 30

# kubelet's labels; a restarted edgecore finds its pods' sandboxes and containers by them.
LABEL_POD_UID: Final = "io.kubernetes.pod.uid"
LABEL_NODE_NAME: Final = "kubeedge.io/node-name"  # ours: kubelet labels name no node
LABEL_POD_NAME: Final = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE: Final = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME: Final = "io.kubernetes.container.name"


REJECTED_PREFIX: Final = "Pod was rejected: "


class PodSpecError(KubeEdgeError):
    """The pod cannot be run as given."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the node refused to admit a pod (kubelet: the failed predicate's name, and its message)."""

    reason: str
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerPort:
    container_port: int
    name: str = ""
    host_port: int = 0
    protocol: str = "TCP"
    host_ip: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class EnvVar:
    """One `env` entry: a literal value, or `source` (its valueFrom, as sent) resolved at container start."""

    name: str
    value: str = ""
    source: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Volume:
    """A pod volume: `kind` is its source's key (emptyDir, hostPath, configMap, secret, downwardAPI, or
    whatever else was sent, which the worker then refuses with a clear reason), `source` that object."""

    name: str
    kind: str
    source: dict[str, Any] = field(default_factory=dict, compare=False)


ProbeHandler = Literal["exec", "httpGet", "tcpSocket", "grpc", ""]  # "": none, or several


@dataclass(frozen=True, kw_only=True, slots=True)
class Probe:
    """A liveness/readiness/startup probe with kubelet's defaults; `port` is a number or a port name."""

    handler: ProbeHandler
    command: tuple[str, ...] = ()  # exec
    port: int | str = 0  # httpGet, tcpSocket
    host: str = ""  # "": the pod IP (the host IP for hostNetwork pods)
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env_vars: tuple[EnvVar, ...] = ()
    env_from: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    working_dir: str = ""
    ports: tuple[ContainerPort, ...] = ()
    mounts: tuple[VolumeMount, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict, compare=False)
    security: dict[str, Any] = field(default_factory=dict, compare=False)
    liveness: Probe | None = None
    readiness: Probe | None = None
    startup: Probe | None = None

    @property
    def probed(self) -> bool:
        return any((self.liveness, self.readiness, self.startup))

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """The literal env entries (valueFrom ones need the pod's objects: see pods.volumes.resolve_env)."""
        return tuple((e.name, e.value) for e in self.env_vars if e.source is None)


@dataclass(frozen=True, kw_only=True, slots=True)
class PodSpec:
    uid: str
    name: str
    namespace: str
    node_name: str = ""
    host_network: bool = False
    restart_policy: RestartPolicy = "Always"
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    containers: tuple[ContainerSpec, ...] = ()
    init_containers: tuple[ContainerSpec, ...] = ()  # run in order, each to success, before `containers`
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    volumes: tuple[Volume, ...] = ()
    security: dict[str, Any] = field(default_factory=dict, compare=False)  # the pod's securityContext
    service_account: str = ""
    deleting: bool = False
    resource_version: str = field(default="", compare=False)  # for events' involvedObject
    created: str = field(default="", compare=False)  # metadata.creationTimestamp (RFC 3339): admission order
    rejected: Rejection | None = field(default=None, compare=False)  # its status says this node rejected it

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def pod_labels(self) -> dict[str, str]:
        labels = {LABEL_POD_UID: self.uid, LABEL_POD_NAME: self.name, LABEL_POD_NAMESPACE: self.namespace}
        if self.node_name:  # whose pod this is when several edgecores share one runtime (edged.orphans)
            labels[LABEL_NODE_NAME] = self.node_name
        return labels

    def container(self, name: str) -> ContainerSpec | None:
        """The app or init container `name`."""
        return next((c for c in (*self.init_containers, *self.containers) if c.name == name), None)

    def is_init(self, name: str) -> bool:
        return any(c.name == name for c in self.init_containers)

    def volume(self, name: str) -> Volume | None:
        return next((v for v in self.volumes if v.name == name), None)


def parse_pod(obj: object) -> PodSpec:
    """A PodSpec from a v1.Pod dict; PodSpecError when it lacks what running it needs."""
    if not isinstance(obj, dict):
        raise PodSpecError("a pod must be an object")
    metadata = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    uid, name = str(metadata.get("uid") or ""), str(metadata.get("name") or "")
    if not uid or not name:
        raise PodSpecError("a pod needs metadata.uid and metadata.name")
    policy = spec.get("restartPolicy") or "Always"
    if policy not in RESTART_POLICIES:
        raise PodSpecError(f"pod {name}: restartPolicy {policy!r} is not Always, OnFailure or Never")
    grace = spec.get("terminationGracePeriodSeconds")
    containers = tuple(_container(c) for c in spec.get("containers") or [])
    if not containers:
        raise PodSpecError(f"pod {name}: no containers")
    return PodSpec(
        uid=uid, name=name, namespace=str(metadata.get("namespace") or "default"),
        node_name=str(spec.get("nodeName") or ""), host_network=bool(spec.get("hostNetwork")),
        restart_policy=policy, grace_seconds=max(0, int(grace)) if isinstance(grace, int) else DEFAULT_GRACE_SECONDS,
        containers=containers, init_containers=tuple(_container(c) for c in spec.get("initContainers") or []),
        labels={str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()},
        annotations={str(k): str(v) for k, v in _mapping(metadata.get("annotations")).items()},
        volumes=tuple(_volume(v) for v in spec.get("volumes") or []), security=_mapping(spec.get("securityContext")),
        service_account=str(spec.get("serviceAccountName") or ""),
        deleting=bool(metadata.get("deletionTimestamp")),
        resource_version=str(metadata.get("resourceVersion") or ""),
        created=str(metadata.get("creationTimestamp") or ""),
        rejected=_rejection(_mapping(obj.get("status"))),
    )


def _rejection(status: dict[str, Any]) -> Rejection | None:
    message = str(status.get("message") or "")
    if status.get("phase") != "Failed" or not message.startswith(REJECTED_PREFIX):
        return None
    return Rejection(reason=str(status.get("reason") or ""), message=message.removeprefix(REJECTED_PREFIX))


_VOLUME_META: Final = frozenset({"name"})


def _volume(obj: object) -> Volume:
    raw = _mapping(obj)
    name = str(raw.get("name") or "")
    if not name:
        raise PodSpecError("every volume needs a name")
    kinds = [k for k in raw if k not in _VOLUME_META]
    # Neither none nor several sources is runnable; the worker reports it (kind "") instead of guessing.
    kind = kinds[0] if len(kinds) == 1 else ""
    return Volume(name=name, kind=kind, source=_mapping(raw.get(kind)) if kind else {})


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _container(obj: object) -> ContainerSpec:
    raw = _mapping(obj)
    name, image = str(raw.get("name") or ""), str(raw.get("image") or "")
    if not name or not image:
        raise PodSpecError("every container needs a name and an image")
    env = tuple(EnvVar(name=str(e["name"]), value=str(e.get("value") or ""),
                       source=_mapping(e["valueFrom"]) if "valueFrom" in e else None)
                for e in map(_mapping, raw.get("env") or []) if e.get("name"))
    mounts = tuple(VolumeMount(name=str(m["name"]), mount_path=str(m["mountPath"]), read_only=bool(m.get("readOnly")),
                               sub_path=str(m.get("subPath") or ""))
                   for m in map(_mapping, raw.get("volumeMounts") or []) if m.get("name") and m.get("mountPath"))
    ports = tuple(
        ContainerPort(container_port=int(p["containerPort"]), name=str(p.get("name") or ""),
                      host_port=int(p.get("hostPort") or 0), protocol=str(p.get("protocol") or "TCP"),
                      host_ip=str(p.get("hostIP") or ""))
        for p in map(_mapping, raw.get("ports") or []) if p.get("containerPort"))
    return ContainerSpec(
        name=name, image=image, command=tuple(map(str, raw.get("command") or ())),
        args=tuple(map(str, raw.get("args") or ())), env_vars=env,
        env_from=tuple(map(_mapping, raw.get("envFrom") or [])), working_dir=str(raw.get("workingDir") or ""),
        ports=ports, mounts=mounts, resources=_mapping(raw.get("resources")),
        security=_mapping(raw.get("securityContext")), liveness=_probe(raw.get("livenessProbe")),
        readiness=_probe(raw.get("readinessProbe")), startup=_probe(raw.get("startupProbe")))


_HANDLERS: Final[tuple[ProbeHandler, ...]] = ("exec", "httpGet", "tcpSocket", "grpc")


def _probe(obj: object) -> Probe | None:
    raw = _mapping(obj)
    if not raw:
        return None
    handlers = [h for h in _HANDLERS if h in raw]
    handler: ProbeHandler = handlers[0] if len(handlers) == 1 else ""
    action = _mapping(raw.get(handler)) if handler else {}
    path = str(action.get("path") or "/")
    return Probe(
        handler=handler, command=tuple(map(str, action.get("command") or ())) if handler == "exec" else (),
        port=_int_or_name(action.get("port")), host=str(action.get("host") or ""),
        path=path if path.startswith("/") else f"/{path}", scheme=str(action.get("scheme") or "HTTP").upper(),
        headers=tuple((str(h["name"]), str(h.get("value") or ""))
                      for h in map(_mapping, action.get("httpHeaders") or []) if h.get("name")),
        # Below 1 (or 0 for the delay) the API server would have refused them; clamp rather than spin.
        initial_delay=float(max(0, _int(raw.get("initialDelaySeconds"), 0))),
        period=float(max(1, _int(raw.get("periodSeconds"), 10))),
        timeout=float(max(1, _int(raw.get("timeoutSeconds"), 1))),
        success_threshold=max(1, _int(raw.get("successThreshold"), 1)),
        failure_threshold=max(1, _int(raw.get("failureThreshold"), 3)))


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _int_or_name(value: object) -> int | str:
    """An IntOrString port: digits are a number (kubelet's intstr parsing), anything else a port name."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value or "")
    return int(text) if text.isdigit() else text or 0
