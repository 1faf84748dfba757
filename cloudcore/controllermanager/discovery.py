"""apiVersion + kind -> REST path, from the API server's discovery documents (any Kubernetes API).

One GET per group/version, cached; an unknown kind re-reads its group/version once (a CRD may have
just been installed). What it must never do: guess a plural.
"""

from __future__ import annotations

from cloudcore.edgecontroller.kinds import Kind
from cloudcore.edgecontroller.kubeapi import KubeError, KubeJSON


class UnknownKind(LookupError):
    """The API server does not serve this apiVersion/kind."""


class Discovery:
    def __init__(self, client: KubeJSON) -> None:
        self.client = client
        self._by_group_version: dict[str, dict[str, Kind]] = {}

    async def resolve(self, api_version: str, kind: str) -> Kind:
        for refresh in (False, True):
            kinds = await self._kinds(api_version, refresh)
            if kind in kinds:
                return kinds[kind]
        raise UnknownKind(f"the API serves no kind {kind} in {api_version}")

    async def _kinds(self, api_version: str, refresh: bool) -> dict[str, Kind]:
        if not refresh and api_version in self._by_group_version:
            return self._by_group_version[api_version]
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            document = await self.client.get(path)
        except KubeError as exc:
            if exc.not_found:
                self._by_group_version[api_version] = {}
                return {}
            raise
        kinds: dict[str, Kind] = {}
        for resource in document.get("resources") or []:
            name = str(resource.get("name") or "")
            if not name or "/" in name:
                continue
            kind = str(resource.get("kind") or "")
            kinds.setdefault(kind, Kind(name, kind, group, version, name, namespaced=bool(resource.get("namespaced"))))
        self._by_group_version[api_version] = kinds
        return kinds
