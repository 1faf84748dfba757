"""The dynamiccontroller's discovery bundle: every readable group version, the unreadable ones left out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from cloudcore.dynamiccontroller.discovery import Discovery, fetch
from cloudcore.edgecontroller.kubeapi import KubeError


class FakeAPI:
    def __init__(self, documents: dict[str, Any], failing: dict[str, KubeError]) -> None:
        self.documents, self.failing, self.calls = documents, failing, 0

    async def get(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        self.calls += 1
        if path in self.failing:
            raise self.failing[path]
        return self.documents[path]


def versions(group: str, *names: str) -> dict[str, Any]:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in names]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


DOCUMENTS = {
    "/apis": {"kind": "APIGroupList", "groups": [versions("apps", "v1"), versions("metrics.k8s.io", "v1beta1"),
                                                 versions("example.com", "v2", "v1")]},
    "/api/v1": {"groupVersion": "v1", "resources": [{"name": "pods"}]},
    "/apis/apps/v1": {"groupVersion": "apps/v1", "resources": [{"name": "deployments"}]},
    "/apis/example.com/v1": {"groupVersion": "example.com/v1", "resources": [{"name": "widgets"}]},
}


async def test_the_bundle_lists_what_could_be_read() -> None:
    api = FakeAPI(DOCUMENTS, {"/apis/metrics.k8s.io/v1beta1": KubeError(503, "ServiceUnavailable", "down"),
                              "/apis/example.com/v2": KubeError(404, "NotFound", "gone")})
    bundle = await fetch(api)  # type: ignore[arg-type]
    assert bundle["kind"] == "DiscoveryBundle"
    assert [g["name"] for g in bundle["groups"]] == ["apps", "example.com"]
    example = bundle["groups"][1]
    assert [v["version"] for v in example["versions"]] == ["v1"] and example["preferredVersion"]["version"] == "v1"
    assert sorted(r["groupVersion"] for r in bundle["resources"]) == ["apps/v1", "example.com/v1", "v1"]


async def test_an_unreachable_api_fails_the_bundle_and_bundles_are_shared() -> None:
    failing = {"/apis/metrics.k8s.io/v1beta1": KubeError(503, "", ""), "/apis/example.com/v2": KubeError(404, "", "")}
    with pytest.raises(KubeError) as unreachable:
        await fetch(FakeAPI(DOCUMENTS, {**failing, "/apis/apps/v1": KubeError(0, "", "refused")}))  # type: ignore[arg-type]
    assert unreachable.value.unreachable
    api = FakeAPI(DOCUMENTS, failing)
    shared = Discovery(api, ttl=60)  # type: ignore[arg-type]
    first = await shared.bundle()
    calls = api.calls
    assert await shared.bundle() is first and api.calls == calls
