"""keadm's Kubernetes API calls: reach the API, install the CRDs, the kubeedge secrets, read the join token.

Reuses cloudcore's client (cloudcore.kube) and CloudHub's secret code (cloudcore.cloudhub.secrets), so keadm
makes the CA, server certificate and token exactly as cloudcore does at start. Every call has a timeout.
Never prints a token (callers decide).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import yaml
from kubernetes_asyncio.client import ApiClient, ApiextensionsV1Api, VersionApi
from kubernetes_asyncio.client.exceptions import ApiException

from cloudcore import kube
from cloudcore.cloudhub.secrets import prepare_cloud_pki, read_token, store_new_token
from common.config.cloudcore import CloudHub, KubeAPIConfig
from common.pki import ca_hash

CRD_DIR: Final = Path(__file__).resolve().parent / "data" / "crds"
"""config/crds, shipped in the package (keadm/data/crds links to it in the repository; a wheel holds copies)."""
API_TIMEOUT: Final = 10.0
T = TypeVar("T")


async def _with_client(kubeconfig: Path, work: Callable[[ApiClient], Awaitable[T]], timeout: float) -> T:
    client = await kube.api_client(KubeAPIConfig(kube_config=str(kubeconfig)))
    try:
        async with asyncio.timeout(timeout):
            return await work(client)
    finally:
        await client.close()


def run(kubeconfig: Path, work: Callable[[ApiClient], Awaitable[T]], timeout: float = 60.0) -> T:
    """Run `work(client)` on a fresh event loop with an overall timeout."""
    return asyncio.run(_with_client(kubeconfig, work, timeout))


async def server_version(api: ApiClient) -> str:
    info = await VersionApi(api).get_code(_request_timeout=API_TIMEOUT)
    return str(info.git_version)


def crd_documents(root: Path = CRD_DIR) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition under `root`, recursively, in path order."""
    documents = []
    for path in sorted(root.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                documents.append(document)
    return documents


async def install_crds(api: ApiClient, root: Path = CRD_DIR) -> list[str]:
    """Create each CRD, or replace one that exists; kubectl-style lines (`.../<name> created`)."""
    extensions = ApiextensionsV1Api(api)
    lines = []
    for document in crd_documents(root):
        name = document["metadata"]["name"]
        try:
            await extensions.create_custom_resource_definition(cast(Any, document), _request_timeout=API_TIMEOUT)
            verb = "created"
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = await extensions.read_custom_resource_definition(name, _request_timeout=API_TIMEOUT)
            body = {**document, "metadata": {**document["metadata"],
                                             "resourceVersion": current.metadata.resource_version}}
            await extensions.replace_custom_resource_definition(name, cast(Any, body), _request_timeout=API_TIMEOUT)
            verb = "configured"
        lines.append(f"customresourcedefinition.apiextensions.k8s.io/{name} {verb}")
    return lines


async def cloud_secrets(api: ApiClient, hub: CloudHub) -> str:
    """Namespace kubeedge, the CA, cloudcore's certificate and a join token, as cloudcore makes them.

    Returns the CA hash (public) for the progress line.
    """
    pki = await prepare_cloud_pki(api, hub)
    await store_new_token(api, pki.ca, hub.token_refresh_duration)
    return ca_hash(pki.ca.cert)


async def join_token(api: ApiClient) -> str | None:
    return await read_token(api)
