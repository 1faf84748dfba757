"""cloudcore's one Kubernetes client: kubernetes_asyncio configured from cloudcore.yaml's kubeAPIConfig.

The same code path serves the embedded control plane and a real cluster: only the kubeconfig differs.

kubernetes_asyncio makes its aiohttp session with `trust_env=True`, so every request reads ~/.netrc and
the proxy variables in worker threads (two thread hops per request: ~8% of cloudcore's CPU at 1,000
nodes, py-spy). Here the proxy for the API server (HTTPS_PROXY / HTTP_PROXY, NO_PROXY, as client-go
reads them) is resolved once, and the session does no per-request lookups; .netrc is no Kubernetes
credential.
"""

from __future__ import annotations

import os
import urllib.request
from urllib.parse import urlsplit

import aiohttp
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from common.config.cloudcore import KubeAPIConfig


class KubeConfigError(RuntimeError):
    """cloudcore cannot reach a Kubernetes API with the configured settings."""


async def api_client(settings: KubeAPIConfig) -> kclient.ApiClient:
    """An ApiClient for kubeAPIConfig (kubeConfig file, else master URL, else in a pod its ServiceAccount);
    the caller closes it."""
    configuration = kclient.Configuration()
    if settings.kube_config:
        try:
            await kconfig.load_kube_config(settings.kube_config, client_configuration=configuration)
        except (OSError, kconfig.ConfigException) as exc:
            raise KubeConfigError(f"kubeAPIConfig.kubeConfig {settings.kube_config}: {exc}") from None
        if settings.master:
            configuration.host = settings.master
    elif settings.master:
        configuration.host = settings.master
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):  # in a pod: its ServiceAccount, token re-read as it rotates
        try:
            kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kconfig.ConfigException as exc:
            raise KubeConfigError(f"in-cluster config: {exc}") from None
    else:
        raise KubeConfigError("set kubeAPIConfig.kubeConfig (or master) in cloudcore.yaml: cloudcore needs a "
                              "Kubernetes API (`cloudcore controlplane` writes an admin.kubeconfig; in a pod, "
                              "its ServiceAccount is used)")
    if not configuration.proxy:
        configuration.proxy = proxy_for(configuration.host)
    client = kclient.ApiClient(configuration)
    rest = client.rest_client
    lookups = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(connector=lookups.connector, read_bufsize=READ_BUFFER)
    lookups.detach()  # the connector now belongs to the new session, which closes it
    return client


READ_BUFFER = 2**21  # kubernetes_asyncio's: watch events of large objects exceed aiohttp's default


def proxy_for(url: str | None) -> str | None:
    """The proxy the environment names for `url` (None when NO_PROXY covers its host, or none is set)."""
    parts = urlsplit(url or "")
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)
