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


async def test_the_proxy_is_read_from_the_environment_once_and_requests_do_no_lookups(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,.cluster.local")
    assert kube.proxy_for("https://api.example:6443") == "http://proxy.example:3128"
    assert kube.proxy_for("https://127.0.0.1:6443") is None  # NO_PROXY
    assert kube.proxy_for("https://kubernetes.default.svc.cluster.local") is None
    assert kube.proxy_for(None) is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(cert_to_pem(create_ca().cert))
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    client = await kube.api_client(KubeAPIConfig())
    try:
        assert client.rest_client.proxy == "http://proxy.example:3128"  # passed with every request
        session = client.rest_client.pool_manager
        assert session.trust_env is False and not session.closed
    finally:
        await client.close()
    assert session.closed and session.connector is None
