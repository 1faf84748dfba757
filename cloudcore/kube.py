"""cloudcore's one Kubernetes client: kubernetes_asyncio configured from cloudcore.yaml's kubeAPIConfig.

The same code path serves the embedded control plane and a real cluster: only the kubeconfig differs.
"""

from __future__ import annotations

import os

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
    return kclient.ApiClient(configuration)
