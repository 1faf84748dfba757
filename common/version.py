"""Version strings: ours, and the upstream KubeEdge release whose wire formats and configs we follow."""

from typing import Final

VERSION: Final = "0.1.0"
KUBEEDGE_COMPAT: Final = "v1.20.0"
# What an edge node reports as kubeletVersion: <CurrentSupportK8sVersion>-kubeedge-<release>.
KUBELET_VERSION: Final = f"v1.30.7-kubeedge-{KUBEEDGE_COMPAT}"


def describe(program: str) -> str:
    return f"{program} kubeedge-py {VERSION} (KubeEdge {KUBEEDGE_COMPAT} compatible)"
