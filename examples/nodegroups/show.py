"""Print the hostname-app pods as the cloud sees them, and each edge node's MetaServer EndpointSlice listing.

    python examples/nodegroups/show.py --kubeconfig K --node NODE=METASERVER_PORT [--node ...] [--wait 60]

With --wait, it first polls (up to that many seconds) until every node's MetaServer lists exactly the
endpoints of the Running pods in its own node group, then prints. Exit status 1 if that never held.
Standard library and kubectl only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

BELONGING_TO = "apps.kubeedge.io/belonging-to"
SERVICE_NAME = "kubernetes.io/service-name"

Endpoint = tuple[str, str]  # (address, nodeName)


def kubectl_json(kubeconfig: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args, "-o", "json"], capture_output=True,
                          text=True, timeout=30, check=False)
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {}


def metaserver_slices(port: int, namespace: str, service: str) -> list[dict[str, Any]] | None:
    url = f"http://127.0.0.1:{port}/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            items = json.loads(response.read()).get("items") or []
    except (OSError, ValueError):
        return None
    return [s for s in items if (s.get("metadata", {}).get("labels") or {}).get(SERVICE_NAME) == service]


def endpoints_of(slices: list[dict[str, Any]]) -> list[Endpoint]:
    return sorted((a, str(e.get("nodeName"))) for s in slices for e in s.get("endpoints") or []
                  for a in e.get("addresses") or [])


def answer(ip: str) -> str:
    """What the pod serves on :8080 ("<hostname> <region>"), or '-'."""
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=2) as response:
            return str(response.read().decode(errors="replace").strip())
    except OSError:
        return "-"


def running(pod: dict[str, Any]) -> bool:
    ready = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}.get("Ready")
    return pod["status"].get("phase") == "Running" and ready == "True" and "deletionTimestamp" not in pod["metadata"]


class View:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ports = {name: int(port) for name, port in (n.split("=", 1) for n in args.node)}
        self.pods: list[dict[str, Any]] = []
        self.groups: dict[str, str] = {}
        self.listings: dict[str, list[dict[str, Any]] | None] = {}

    def read(self) -> None:
        a = self.args
        self.pods = list(kubectl_json(a.kubeconfig, "get", "pods", "-n", a.namespace, "-l", f"app={a.app}")
                         .get("items", []))
        nodes = kubectl_json(a.kubeconfig, "get", "nodes").get("items", [])
        self.groups = {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(BELONGING_TO, "")
                       for n in nodes}
        self.listings = {node: metaserver_slices(port, a.namespace, a.service) for node, port in self.ports.items()}

    def expected(self, node: str) -> list[Endpoint]:
        group = self.groups.get(node, "")
        return sorted((p["status"]["podIP"], p["spec"]["nodeName"]) for p in self.pods
                      if running(p) and p["status"].get("podIP")
                      and self.groups.get(p["spec"].get("nodeName", ""), "") == group)

    def consistent(self) -> bool:
        for node in self.ports:
            listing = self.listings.get(node)
            if listing is None or endpoints_of(listing) != self.expected(node):
                return False
        # settled: no pod terminating, and every pod of a group that has a node is Running (a group without
        # nodes keeps its pods Pending)
        placed = set(self.groups.values()) - {""}
        return (any(running(p) for p in self.pods)
                and not any("deletionTimestamp" in p["metadata"] for p in self.pods)
                and all(running(p) for p in self.pods
                        if (p["spec"].get("nodeSelector") or {}).get(BELONGING_TO) in placed))

    def print(self) -> None:
        names = {p["status"].get("podIP"): p["metadata"]["name"] for p in self.pods}
        print(f"pods of {self.args.app} (from the cloud):")
        print(f"  {'NAME':40} {'GROUP':10} {'NODE':20} {'IP':15} {'PHASE':9} {'IMAGE':29} ANSWERS ON :8080")
        for pod in sorted(self.pods, key=lambda p: p["metadata"]["name"]):
            group = (pod["spec"].get("nodeSelector") or {}).get(BELONGING_TO, "-")
            ip = pod["status"].get("podIP", "-")
            print(f"  {pod['metadata']['name']:40} {group:10} {pod['spec'].get('nodeName', '<none>'):20} "
                  f"{ip:15} {pod['status'].get('phase', ''):9} {pod['spec']['containers'][0]['image']:29} "
                  f"{answer(ip) if running(pod) else '-'}")
        cloud = list(kubectl_json(self.args.kubeconfig, "get", "endpointslices", "-n", self.args.namespace,
                                  "-l", f"{SERVICE_NAME}={self.args.service}").get("items", []))
        print(f"\nthe cloud's EndpointSlices of service {self.args.service} (kubectl): "
              + ", ".join(f"{a} on {n}" for a, n in endpoints_of(cloud)))
        for node, port in self.ports.items():
            group = self.groups.get(node) or "<none>"
            print(f"\nnode {node} (group {group}): GET http://127.0.0.1:{port}/apis/discovery.k8s.io/v1/"
                  f"namespaces/{self.args.namespace}/endpointslices  (service {self.args.service})")
            listing = self.listings.get(node)
            if listing is None:
                print("  MetaServer does not answer")
                continue
            for item in listing:
                print(f"  EndpointSlice {item['metadata']['name']}:")
                for endpoint in item.get("endpoints") or []:
                    for address in endpoint.get("addresses") or []:
                        node_name = str(endpoint.get("nodeName"))
                        print(f"    {address:15} on {node_name:24} (group {self.groups.get(node_name) or '<none>'})"
                              f"  {names.get(address, '')}")
                if not item.get("endpoints"):
                    print("    (no endpoints)")
            foreign = [e for e in endpoints_of(listing) if self.groups.get(e[1], "") != self.groups.get(node, "")]
            print(f"  -> {len(endpoints_of(listing))} endpoint(s), "
                  + (f"{len(foreign)} from another group!" if foreign else "all in this node's own group"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--app", default="hostname-app", help="the pods' app label")
    parser.add_argument("--service", default="hostname-app")
    parser.add_argument("--node", action="append", required=True, help="NODE=METASERVER_PORT (repeat)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for consistent listings")
    args = parser.parse_args()
    view = View(args)
    deadline = time.monotonic() + args.wait
    view.read()
    while not view.consistent() and time.monotonic() < deadline:
        time.sleep(1)
        view.read()
    view.print()
    if args.wait and not view.consistent():
        print(f"\nnot consistent within {args.wait:.0f} s: some node lists endpoints outside its group, or misses "
              "some of its own, or pods are still starting or terminating", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
