"""config/kubernetes/cloudcore.yaml: cloudcore in a real cluster without Helm.

- Every object validates against the Kubernetes v1.30 schemas, twice: `kubernetes_validate` (strict) and the
  control plane's own validation (`cloudcore/controlplane/api/validation.py`, unknown fields included).
- The RBAC bound to cloudcore's ServiceAccount allows every API call cloudcore makes (`NEEDS`, each derived from
  the file that makes the call), and names every kind cloudcore's modules define; removing a rule is caught.
- The ConfigMap's cloudcore.yaml loads with the project's loader without a warning; its ports are the
  Deployment's and the Service's; the probes hit the monitor server; the pod's uid is the image's USER.
- The manifest is applied with the real kubectl to the embedded control plane (server-side dry run, then for
  real) for every kind it serves; it has no RBAC API, so the RBAC objects are checked offline only.
- cloudcore runs with the ConfigMap's cloudcore.yaml and its kubeconfig (a ServiceAccount-style token file, the
  only change being the API address and ports), makes its Secrets, and `docker/healthcheck.py` (the images'
  HEALTHCHECK) finds it and the control plane healthy.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import cloudcore
from cloudcore.controlplane.api import validation
from cloudcore.controlplane.api.schemas import BUILTIN_VERSION
from cloudcore.edgecontroller.kinds import Kind
from common.config import CloudCoreConfig
from common.config.loader import load_config
from tests.fixtures.controlplane import ROOT, ControlPlaneProcess
from tests.fixtures.daemons import Daemon
from tests.fixtures.mosquitto import free_port

MANIFEST = ROOT / "config" / "kubernetes" / "cloudcore.yaml"
DOCKERFILE = ROOT / "docker" / "cloudcore.Dockerfile"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
NAMESPACE = "kubeedge"
SERVICE_ACCOUNT = "cloudcore"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONFIG_MOUNT = "/etc/kubeedge/config"

Object = dict[str, Any]


def load_objects(text: str | None = None) -> list[Object]:
    docs = yaml.safe_load_all(MANIFEST.read_text() if text is None else text)
    return [doc for doc in docs if doc]


def find(objects: list[Object], kind: str, name: str) -> Object:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{MANIFEST.name}: expected one {kind} {name}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module")
def objects() -> list[Object]:
    return load_objects()


# -- schemas -----------------------------------------------------------------------------------------------

def test_every_object_validates_against_the_v130_schemas(objects: list[Object]) -> None:
    problems = []
    for obj in objects:
        what = f"{obj['kind']} {obj['metadata'].get('name')}"
        try:
            kubernetes_validate.validate(obj, BUILTIN_VERSION.lstrip("v"), strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{what}: kubernetes_validate: {exc.message} at {'.'.join(map(str, exc.path))}")
        group, _, version = obj["apiVersion"].rpartition("/")
        result = validation.validate_builtin(group, version, obj["kind"], obj, "Strict")
        problems += [f"{what}: {error}" for error in result.errors]
        problems += [f"{what}: unknown field {path}" for path in result.unknown_fields]
    assert not problems, "\n".join(problems)


# -- RBAC --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Need:
    group: str
    resource: str
    verbs: str
    where: str  # the code that makes the call
    namespace: str = ""  # "" = cluster-wide; else a Role in that namespace is enough


NEEDS = (
    Need("", "namespaces", "get create", "cloudhub/secrets.py ensure_namespace"),
    Need("", "namespaces", "list", "edgecontroller/downstream.py, dynamiccontroller/subscriptions.py: the API probe"),
    Need("", "nodes", "get list watch", "edgecontroller informers, cloudhub/certserver.py GET /node/{name}"),
    Need("", "nodes", "create patch", "edgecontroller/nodes.py register + labels, controllermanager/nodegroup.py, "
                                      "cloudstream annotation"),
    Need("", "nodes/status", "update patch", "edgecontroller/nodes.py (PUT status, strategic-merge nodepatch)"),
    Need("", "pods", "get list watch delete", "edgecontroller/pods.py + downstream.py, cloudstream, nodegroup.py"),
    Need("", "pods/status", "update patch", "edgecontroller/pods.py podstatus / podpatch"),
    Need("", "configmaps", "get list watch", "edgecontroller informers and queries"),
    Need("", "secrets", "get list watch", "edgecontroller informers and queries, cloudhub/secrets.py"),
    Need("", "secrets", "create update", "cloudhub/secrets.py write_secret (casecret, cloudcoresecret, tokensecret)",
         NAMESPACE),
    Need("", "services", "get list watch", "edgecontroller informers, dynamiccontroller/topology.py"),
    Need("", "services", "create patch delete", "controllermanager/edgeapplication.py (EdgeApplication Services)"),
    Need("", "endpoints", "get list watch", "edgecontroller informers"),
    Need("discovery.k8s.io", "endpointslices", "get list watch", "edgecontroller informers"),
    Need("", "events", "get create patch", "edgecontroller/events.py, controllermanager/events.py"),
    Need("coordination.k8s.io", "leases", "get create update", "edgecontroller/nodes.py node leases"),
    Need("coordination.k8s.io", "leases", "get create update",
         "cloudhub/ownership.py: which cloudcore serves a node (cloudHub.nodeLease, Leases cloudcore-node-<node>)",
         NAMESPACE),
    Need("reliablesyncs.kubeedge.io", "objectsyncs", "list create delete",
         "cloudhub/objectsync.py, edgecontroller/resync.py"),
    Need("reliablesyncs.kubeedge.io", "clusterobjectsyncs", "list create delete", "cloudhub/objectsync.py"),
    Need("reliablesyncs.kubeedge.io", "objectsyncs/status", "patch", "cloudhub/objectsync.py acked resourceVersion"),
    Need("reliablesyncs.kubeedge.io", "clusterobjectsyncs/status", "patch", "cloudhub/objectsync.py"),
    Need("devices.kubeedge.io", "devices", "get list watch patch", "devicecontroller downstream.py + upstream.py"),
    Need("devices.kubeedge.io", "devicemodels", "get list watch", "devicecontroller/downstream.py"),
    Need("apps.kubeedge.io", "nodegroups", "get list watch patch", "controllermanager/nodegroup.py"),
    Need("apps.kubeedge.io", "nodegroups/status", "patch", "controllermanager/nodegroup.py"),
    Need("apps.kubeedge.io", "edgeapplications", "get list watch patch", "controllermanager/edgeapplication.py"),
    Need("apps.kubeedge.io", "edgeapplications/status", "patch", "controllermanager/edgeapplication.py"),
    Need("apps", "deployments", "get list watch create patch delete", "controllermanager/edgeapplication.py"),
    Need("example.com", "widgets", "get list watch", "dynamiccontroller: any kind an edge MetaServer reads"),
)


def _matches(values: list[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def granted_rules(objects: list[Object], namespace: str) -> list[Object]:
    """Rules bound to cloudcore's ServiceAccount that apply in `namespace` ("" = cluster-wide only)."""
    def bound(binding: Object) -> bool:
        return any(s.get("kind") == "ServiceAccount" and s.get("name") == SERVICE_ACCOUNT
                   and s.get("namespace") == NAMESPACE for s in binding.get("subjects") or [])

    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects
             if o["kind"] in ("ClusterRole", "Role")}
    rules: list[Object] = []
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding") or not bound(binding):
            continue
        scope = binding["metadata"].get("namespace", "")
        if binding["kind"] == "RoleBinding" and scope != namespace:
            continue
        ref = binding["roleRef"]
        role_ns = scope if ref["kind"] == "Role" else ""
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        assert role is not None, f"{binding['kind']} {binding['metadata']['name']} names a missing {ref['kind']} " \
                                 f"{ref['name']}"
        rules += role.get("rules") or []
    return rules


def rbac_problems(objects: list[Object]) -> list[str]:
    problems = []
    for need in NEEDS:
        rules = granted_rules(objects, need.namespace)
        for verb in need.verbs.split():
            if not any(_matches(r.get("apiGroups") or [], need.group) and _matches(r.get("resources") or [],
                       need.resource) and _matches(r.get("verbs") or [], verb) for r in rules):
                scope = f"in namespace {need.namespace}" if need.namespace else "cluster-wide"
                problems.append(f"{verb} {need.resource} (group {need.group or 'core'!r}) {scope} is not granted; "
                                f"needed by {need.where}")
    return problems


def test_rbac_allows_every_call_cloudcore_makes(objects: list[Object]) -> None:
    problems = rbac_problems(objects)
    assert not problems, "cloudcore's ServiceAccount lacks:\n" + "\n".join(problems)


def test_rbac_check_catches_a_missing_rule(objects: list[Object]) -> None:
    broken = copy.deepcopy(objects)
    role = find(broken, "ClusterRole", "cloudcore")
    role["rules"] = [r for r in role["rules"] if "reliablesyncs.kubeedge.io" not in r["apiGroups"]]
    problems = "\n".join(rbac_problems(broken))
    assert "create objectsyncs (group 'reliablesyncs.kubeedge.io') cluster-wide is not granted" in problems, problems
    find(broken, "RoleBinding", "cloudcore-secrets")["subjects"][0]["name"] = "someone-else"
    assert "create secrets (group 'core') in namespace kubeedge" in "\n".join(rbac_problems(broken))


def _cloudcore_kinds() -> tuple[set[tuple[str, str]], set[str]]:
    """(group, plural) of every module-level Kind in cloudcore's modules (the control plane excepted), and the
    API groups they name in `GROUP` constants (the custom-object clients use those)."""
    kinds: set[tuple[str, str]] = set()
    groups: set[str] = set()
    for info in pkgutil.walk_packages(cloudcore.__path__, "cloudcore."):
        if info.name.startswith("cloudcore.controlplane"):
            continue
        module = importlib.import_module(info.name)
        kinds.update((v.group, v.plural) for v in vars(module).values() if isinstance(v, Kind))
        if isinstance(getattr(module, "GROUP", None), str):
            groups.add(module.GROUP)
    return kinds, groups


def test_needs_name_every_kind_cloudcore_defines() -> None:
    kinds, groups = _cloudcore_kinds()
    missing = sorted(kinds - {(n.group, n.resource) for n in NEEDS})
    assert not missing, (f"cloudcore defines kinds {missing} that NEEDS (and so the manifest's ClusterRole) does "
                         "not list: add the verbs the new code uses to both")
    missing_groups = sorted(groups - {n.group for n in NEEDS})
    assert not missing_groups, f"cloudcore uses API groups {missing_groups} that NEEDS does not list"
    assert "reliablesyncs.kubeedge.io" in groups


# -- the ConfigMap, the Deployment, the Services -------------------------------------------------------------

def cloudcore_yaml(objects: list[Object]) -> str:
    return str(find(objects, "ConfigMap", "cloudcore")["data"]["cloudcore.yaml"])


def load_cloudcore_text(text: str, tmp_path: Path) -> CloudCoreConfig:
    path = tmp_path / "cloudcore.yaml"
    path.write_text(text)
    result = load_config(path, CloudCoreConfig)
    assert not result.warnings, "cloudcore.yaml in the ConfigMap:\n" + "\n".join(map(str, result.warnings))
    return result.config


def test_configmap_deployment_and_services_agree(objects: list[Object], tmp_path: Path) -> None:
    config = load_cloudcore_text(cloudcore_yaml(objects), tmp_path)
    hub, stream = config.modules.cloud_hub, config.modules.cloud_stream
    monitor_host, _, monitor_port = config.common_config.monitor_server.bind_address.rpartition(":")
    assert monitor_host == "0.0.0.0", "the kubelet's probes reach the monitor server on the pod IP"
    ports = {"cloudhub": (hub.websocket.port, "TCP"), "cloudhub-quic": (hub.quic.port, "UDP"),
             "cloudhub-https": (hub.https.port, "TCP"), "cloudstream": (stream.stream_port, "TCP"),
             "tunnelport": (stream.tunnel_port, "TCP"), "monitor": (int(monitor_port), "TCP")}

    deployment = find(objects, "Deployment", "cloudcore")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    declared = {p["name"]: (p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert declared == ports, f"containerPorts {declared} differ from cloudcore.yaml's {ports}"
    service = find(objects, "Service", "cloudcore")
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports and ports[port["targetPort"]] == (port["port"], port["protocol"]), port
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports) - {"monitor"}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    metrics = find(objects, "Service", "cloudcore-metrics")
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["monitor"]

    assert container["args"] == ["--config", f"{CONFIG_MOUNT}/cloudcore.yaml"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "monitor"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "monitor"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[CONFIG_MOUNT]["readOnly"] is True
    assert "/run/kubeedge" in mounts, "the default --pidfile lives there; the root filesystem is read-only"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT and deployment["metadata"]["namespace"] == NAMESPACE

    user = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("USER ")][-1]
    uid, _, gid = user.partition(":")
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and str(context["runAsUser"]) == uid and str(context["runAsGroup"]) == gid, (
        f"the pod's uid/gid {context.get('runAsUser')}:{context.get('runAsGroup')} differ from the image's USER {user}")

    assert config.kube_api_config.kube_config == f"{CONFIG_MOUNT}/kubeconfig"
    kubeconfig = yaml.safe_load(find(objects, "ConfigMap", "cloudcore")["data"]["kubeconfig"])
    (cluster,) = kubeconfig["clusters"]
    (user_entry,) = kubeconfig["users"]
    assert cluster["cluster"] == {"server": "https://kubernetes.default.svc",
                                  "certificate-authority": f"{SA_DIR}/ca.crt"}
    assert user_entry["user"] == {"tokenFile": f"{SA_DIR}/token"}
    assert pod.get("automountServiceAccountToken", True) is True


# -- the embedded control plane, real kubectl, real cloudcore --------------------------------------------------

@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlaneProcess, str]]:
    """A control plane that also knows a bearer token for cloudcore's ServiceAccount (a tokens.csv line)."""
    instance = ControlPlaneProcess(tmp_path_factory.mktemp("kube-manifest"))
    instance.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # No RBAC API in the embedded control plane: the identity must be an admin to do anything.
    (instance.data_dir / "tokens.csv").write_text(
        f"{token},system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT},system:serviceaccounts;system:masters\n")
    instance.start()
    try:
        yield instance, token
    finally:
        instance.stop()


def served_kinds(plane: ControlPlaneProcess) -> set[tuple[str, str]]:
    """(apiVersion, kind) pairs the control plane serves, from `kubectl api-resources`."""
    result = plane.kubectl("api-resources", "--no-headers", "-o", "wide")
    served = set()
    for line in result.stdout.splitlines():
        words = line.split()
        version = next(w for w in words if re.fullmatch(r"([a-z0-9.-]+/)?v\d\w*", w))
        kind = words[words.index(version) + 2]
        served.add((version, kind))
    return served


def test_applies_to_the_embedded_control_plane(plane: tuple[ControlPlaneProcess, str], objects: list[Object],
                                               tmp_path: Path) -> None:
    control_plane, _ = plane
    control_plane.kubectl("apply", "-R", "-f", str(ROOT / "config" / "crds"))
    served = served_kinds(control_plane)
    here = [o for o in objects if (o["apiVersion"], o["kind"]) in served]
    offline = sorted({o["kind"] for o in objects} - {o["kind"] for o in here})
    assert set(offline) <= {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}, (
        f"the control plane does not serve {offline}")

    namespaces = [o for o in here if o["kind"] == "Namespace"]
    rest = [o for o in here if o["kind"] != "Namespace"]
    (tmp_path / "ns.yaml").write_text(yaml.safe_dump_all(namespaces))
    (tmp_path / "rest.yaml").write_text(yaml.safe_dump_all(rest))
    control_plane.kubectl("apply", "-f", str(tmp_path / "ns.yaml"))
    dry = control_plane.kubectl("apply", "--dry-run=server", "-f", str(tmp_path / "rest.yaml"))
    assert dry.stdout.count("(server dry run)") == len(rest), dry.stdout
    applied = control_plane.kubectl("apply", "-f", str(tmp_path / "rest.yaml"))
    assert applied.stdout.count("created") + applied.stdout.count("configured") == len(rest), applied.stdout
    for obj in rest:
        namespace = ["-n", obj["metadata"]["namespace"]] if obj["metadata"].get("namespace") else []
        control_plane.kubectl("get", obj["kind"].lower(), obj["metadata"]["name"], *namespace, "-o", "name")

    deadline = time.monotonic() + 30  # the Deployment controller makes the pod (unschedulable here: no nodes)
    pods: list[Object] = []
    while time.monotonic() < deadline and not pods:
        listed = control_plane.kubectl("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=cloudcore",
                                       "-o", "yaml")
        pods = yaml.safe_load(listed.stdout)["items"]
        time.sleep(0.2)
    assert pods, "the Deployment made no pod"
    spec = pods[0]["spec"]
    assert spec["serviceAccountName"] == SERVICE_ACCOUNT and spec["securityContext"]["runAsNonRoot"] is True


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, timeout=30)


def test_cloudcore_runs_with_the_manifest_config(plane: tuple[ControlPlaneProcess, str], objects: list[Object],
                                                 tmp_path: Path) -> None:
    control_plane, token = plane
    configmap = find(objects, "ConfigMap", "cloudcore")
    config = yaml.safe_load(configmap["data"]["cloudcore.yaml"])
    kubeconfig = yaml.safe_load(configmap["data"]["kubeconfig"])
    # What the kubelet mounts in the pod, here: the ServiceAccount token and the cluster CA.
    (tmp_path / "token").write_text(token)
    cluster, user = kubeconfig["clusters"][0]["cluster"], kubeconfig["users"][0]["user"]
    cluster["server"] = control_plane.url
    cluster["certificate-authority"] = str(control_plane.data_dir / "pki" / "ca.crt")
    user["tokenFile"] = str(tmp_path / "token")
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    # Free ports for this host (the pod has its own network); everything else as in the manifest.
    monitor = free_port()
    config["commonConfig"]["monitorServer"]["bindAddress"] = f"0.0.0.0:{monitor}"
    config["kubeAPIConfig"]["kubeConfig"] = str(tmp_path / "kubeconfig")
    hub = config["modules"]["cloudHub"]
    hub["advertiseAddress"] = ["127.0.0.1"]
    hub["websocket"]["port"], hub["https"]["port"], hub["quic"]["port"] = free_port(), free_port(), _free_udp_port()
    (tmp_path / "cloudcore.yaml").write_text(yaml.safe_dump(config))

    daemon = Daemon("cloudcore", tmp_path / "cloudcore.yaml", tmp_path / "cloudcore.log", verbosity=2)
    daemon.start()
    try:
        deadline = time.monotonic() + 60
        ready = healthcheck("cloudcore", "--config", str(tmp_path / "cloudcore.yaml"), "--path", "/readyz")
        while ready.returncode != 0 and time.monotonic() < deadline:
            assert daemon.running(), f"cloudcore exited:\n{(tmp_path / 'cloudcore.log').read_text()[-3000:]}"
            time.sleep(0.5)
            ready = healthcheck("cloudcore", "--config", str(tmp_path / "cloudcore.yaml"), "--path", "/readyz")
        assert ready.returncode == 0, f"{ready.stderr}\n{(tmp_path / 'cloudcore.log').read_text()[-3000:]}"
        live = healthcheck("cloudcore", "--config", str(tmp_path / "cloudcore.yaml"))
        assert live.returncode == 0 and f"http://127.0.0.1:{monitor}/healthz" in live.stdout, live.stderr
        # It authenticated with the token file and made its Secrets in the kubeedge namespace.
        names = control_plane.kubectl("-n", NAMESPACE, "get", "secrets", "-o", "name").stdout.split()
        assert {"secret/casecret", "secret/cloudcoresecret", "secret/tokensecret"} <= set(names), names
    finally:
        daemon.stop()
    stopped = healthcheck("cloudcore", "--config", str(tmp_path / "cloudcore.yaml"))
    assert stopped.returncode == 1 and "unhealthy" in stopped.stderr

    plane_ok = healthcheck("controlplane", "--data-dir", str(control_plane.data_dir), "--port", str(control_plane.port))
    assert plane_ok.returncode == 0 and "/readyz" in plane_ok.stdout, plane_ok.stderr
    wrong_ca = healthcheck("controlplane", "--data-dir", str(tmp_path), "--port", str(control_plane.port))
    assert wrong_ca.returncode == 1 and "CA" in wrong_ca.stderr, wrong_ca.stderr
