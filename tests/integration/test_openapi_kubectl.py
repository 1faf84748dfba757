"""Real kubectl reads our OpenAPI documents: `kubectl explain` of built-in and custom kinds, field validation.

A tiny HTTP server (test-only) serves /version, discovery and the OpenAPICache documents; kubectl
talks to it over plain HTTP with an empty kubeconfig and its own cache directory.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from cloudcore.controlplane.api import schemas
from cloudcore.controlplane.api.openapi import KindInfo, OpenAPICache

CRON_SCHEMA: dict[str, Any] = {
    "type": "object", "description": "CronTab runs a command on a schedule.",
    "properties": {"spec": {"type": "object", "description": "The schedule and what to run.", "properties": {
        "cronSpec": {"type": "string", "description": "When to run, in cron syntax."},
        "image": {"type": "string", "description": "The image to run."}}}},
}
# (group, kind, plural, short name, namespaced)
BUILTIN = [("", "Pod", "pods", "po", True), ("", "Namespace", "namespaces", "ns", False),
           ("", "Service", "services", "svc", True), ("apps", "Deployment", "deployments", "deploy", True)]
CRON = ("stable.example.com", "CronTab", "crontabs", "ct", True)
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def kinds() -> list[KindInfo]:
    found = [KindInfo(g, "v1", k, schemas.definition_for_gvk(g, "v1", k), None, ns, plural)
             for g, k, plural, _, ns in BUILTIN]
    return [*found, KindInfo(CRON[0], "v1", CRON[1], None, CRON_SCHEMA, True, CRON[2])]


def resource_list(group: str) -> dict[str, Any]:
    resources = [{"name": plural, "singularName": kind.lower(), "namespaced": ns, "kind": kind,
                  "verbs": VERBS, "shortNames": [short]}
                 for g, kind, plural, short, ns in [*BUILTIN, CRON] if g == group]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/v1" if group else "v1",
            "resources": resources}


def discovery(port: int) -> dict[str, Any]:
    groups = [{"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
               "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in ("apps", CRON[0])]
    return {
        "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.7", "gitCommit": "0" * 40,
                     "gitTreeState": "clean", "buildDate": "2024-11-19T00:00:00Z", "goVersion": "go1.22.8",
                     "compiler": "gc", "platform": "linux/amd64"},
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}]},
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups},
        "/api/v1": resource_list(""),
        "/apis/apps/v1": resource_list("apps"),
        f"/apis/{CRON[0]}/v1": resource_list(CRON[0]),
    }


class Server(ThreadingHTTPServer):
    """Discovery and the OpenAPI documents; records the paths kubectl writes to."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.cache = OpenAPICache(kinds)
        self.writes: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        document = None
        if path == "/openapi/v3":
            document = self.server.cache.v3_index()
        elif path.startswith("/openapi/v3/"):
            document = self.server.cache.v3_document(path.removeprefix("/openapi/v3/"))
        elif path in (docs := discovery(self.server.server_address[1])):
            return self.reply(200, orjson.dumps(docs[path]))
        if document is None:
            return self.reply(404, orjson.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                 "reason": "NotFound", "code": 404}))
        self.reply(200, document.body)

    def do_POST(self) -> None:
        self.server.writes.append(self.path)
        obj = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        obj["metadata"].update(uid="1", resourceVersion="1")
        self.reply(201, orjson.dumps(obj))


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def kubectl(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is not installed (needed on PATH for this test)")
    home = tmp_path_factory.mktemp("kubectl")
    (home / "config").write_text("")

    def run(*args: str) -> str:
        command = [binary, "--server", server.url, "--kubeconfig", str(home / "config"), "--cache-dir",
                   str(home / "cache"), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, env={"HOME": str(home)})
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def test_explain_pods(kubectl: Callable[..., str]) -> None:
    out = kubectl("explain", "pods")
    assert out.startswith("KIND:       Pod\nVERSION:    v1\n\nDESCRIPTION:\n"
                          "    Pod is a collection of containers")
    assert "\nFIELDS:\n" in out
    for line in ("  apiVersion\t<string>", "  kind\t<string>", "  metadata\t<ObjectMeta>",
                 "  spec\t<PodSpec>", "  status\t<PodStatus>"):
        assert f"\n{line}\n" in out


def test_explain_a_pod_field(kubectl: Callable[..., str]) -> None:
    out = kubectl("explain", "pods.spec.containers.image")
    assert out.startswith("KIND:       Pod\nVERSION:    v1\n\nFIELD: image <string>\n")
    assert "DESCRIPTION:\n    Container image name." in out
    containers = kubectl("explain", "pods.spec.containers")
    assert "FIELD: containers <[]Container>" in containers
    assert "\n  name\t<string> -required-\n" in containers
    assert "\n  ports\t<[]ContainerPort>\n" in containers


def test_explain_a_deployment_field(kubectl: Callable[..., str]) -> None:
    out = kubectl("explain", "deployments.spec.strategy")
    assert out.startswith("GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\n"
                          "FIELD: strategy <DeploymentStrategy>\n")
    assert "\n  rollingUpdate\t<RollingUpdateDeployment>\n" in out and "\n  type\t<string>\n" in out
    rolling = kubectl("explain", "deploy.spec.strategy.rollingUpdate")
    assert "\n  maxSurge\t<IntOrString>\n" in rolling and "\n  maxUnavailable\t<IntOrString>\n" in rolling
    resources = kubectl("explain", "deployments.spec.template.spec.containers.resources")
    assert "\n  limits\t<map[string]Quantity>\n" in resources


def test_explain_a_custom_resource(kubectl: Callable[..., str]) -> None:
    out = kubectl("explain", "crontabs")
    assert out.startswith("GROUP:      stable.example.com\nKIND:       CronTab\nVERSION:    v1\n\n")
    assert "CronTab runs a command on a schedule." in out and "\n  metadata\t<ObjectMeta>\n" in out
    spec = kubectl("explain", "ct.spec")
    assert "FIELD: spec <Object>" in spec
    assert "\n  cronSpec\t<string>\n    When to run, in cron syntax." in spec


def test_kubectl_asks_for_server_side_field_validation(kubectl: Callable[..., str], server: Server,
                                                       tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\nspec:\n"
                        "  containers:\n  - name: web\n    image: nginx\n")
    assert kubectl("create", "-f", str(manifest)).strip() == "pod/web created"
    assert server.writes[-1] == ("/api/v1/namespaces/default/pods?fieldManager=kubectl-create"
                                 "&fieldValidation=Strict")
