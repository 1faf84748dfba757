"""cloudcore/kube.py: in a pod (KUBERNETES_SERVICE_HOST set, no kubeConfig/master) the ServiceAccount is used."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio.config import incluster_config

from cloudcore import kube
from common.config.cloudcore import KubeAPIConfig
from common.pki.certs import cert_to_pem, create_ca


async def test_in_a_pod_the_service_account_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(cert_to_pem(create_ca().cert))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    client = await kube.api_client(KubeAPIConfig())
    try:
        assert client.configuration.host == "https://10.96.0.1:443"
    finally:
        await client.close()


async def test_outside_a_pod_a_kubeconfig_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kube.KubeConfigError, match=r"kubeAPIConfig\.kubeConfig"):
        await kube.api_client(KubeAPIConfig())
