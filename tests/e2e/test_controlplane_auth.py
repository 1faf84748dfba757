"""Who may do what on the control plane: admin certificates, bearer tokens, and node identities that
read only what their node needs."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from common.pki import issue_user_cert, load_key_pair
from tests.fixtures.controlplane import ControlPlaneProcess


async def call(instance: ControlPlaneProcess, method: str, path: str, *, cert: tuple[Path, Path] | None = None,
               token: str = "", body: Any = None) -> int:
    context = ssl.create_default_context(cafile=str(instance.data_dir / "pki/ca.crt"))
    if cert is not None:
        context.load_cert_chain(*cert)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session, session.request(
            method, f"{instance.url}{path}", headers=headers,
            data=None if body is None else orjson.dumps(body)) as response:
        await response.read()
        return response.status


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data_dir = tmp_path_factory.mktemp("cp-auth")
    (data_dir / "tokens.csv").write_text("s3cret-admin-token,ops,system:masters\nplain-token,nobody\n")
    instance = ControlPlaneProcess(data_dir)
    instance.start()
    ca = load_key_pair(data_dir / "pki/ca.crt", data_dir / "pki/ca.key")
    node = issue_user_cert(ca, "system:node:edge-1", ("system:nodes",))
    node.write(data_dir / "node.crt", data_dir / "node.key")
    admin = (data_dir / "pki/admin.crt", data_dir / "pki/admin.key")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
           "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "busybox",
                                                          "envFrom": [{"configMapRef": {"name": "used"}}]}]}}
    for path, body in (("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "used"}}),
                       ("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "unused"}}),
                       ("/api/v1/namespaces/default/secrets", {"metadata": {"name": "private"}}),
                       ("/api/v1/nodes", {"metadata": {"name": "edge-1"}}),
                       ("/api/v1/namespaces/default/pods", pod)):
        assert asyncio.run(call(instance, "POST", path, cert=admin, body=body)) == 201
    yield instance, (data_dir / "node.crt", data_dir / "node.key")
    instance.stop()


def test_bearer_tokens_from_the_token_file(secured: Any) -> None:
    instance, _ = secured
    assert asyncio.run(call(instance, "GET", "/api/v1/namespaces", token="s3cret-admin-token")) == 200
    assert asyncio.run(call(instance, "GET", "/api/v1/namespaces", token="plain-token")) == 403
    assert asyncio.run(call(instance, "GET", "/api/v1/namespaces", token="wrong")) == 401


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/api/v1/nodes/edge-1", True),
    ("GET", "/api/v1/namespaces/default/pods/web", True),
    ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1", True),
    ("GET", "/api/v1/pods", False),
    ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-2", False),
    ("GET", "/api/v1/namespaces/default/configmaps/used", True),
    ("GET", "/api/v1/namespaces/default/configmaps/unused", False),
    ("GET", "/api/v1/namespaces/default/secrets/private", False),
    ("GET", "/api/v1/namespaces/default/services", True),
    ("DELETE", "/api/v1/namespaces/default/configmaps/used", False),
])
def test_a_node_reads_only_what_its_node_needs(secured: Any, method: str, path: str, allowed: bool) -> None:
    instance, node_cert = secured
    status = asyncio.run(call(instance, method, path, cert=node_cert))
    assert (status == 403) is not allowed, status
