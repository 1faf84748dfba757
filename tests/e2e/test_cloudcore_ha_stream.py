"""`kubectl logs` and `kubectl exec` keep working when the cloudcore holding an edge's stream tunnel dies
(docs/ha.md): two cloudcores with node leases on one control plane, a real edgecore whose `edgeHub.websocket.server`
and `edgeStream.server` list both, edged on the `containerd` fixture's runtime. After kill -9 of the first
instance, the edge's tunnel moves to the second, which points the Node's stream endpoint annotation at itself;
once the tunnel closes, that instance removes the annotation again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from common.hostsvc.containerd import ContainerdLayout
from common.hostsvc.ociimage import BUSYBOX_REF
from common.streamframes import ENDPOINT_ANNOTATION
from tests.fixtures.daemons import Daemon
from tests.fixtures.edge_rig import EdgeRig, merged, wait
from tests.fixtures.mosquitto import free_port

pytestmark = pytest.mark.timeout(300)

LEASE = {"leaseDurationSeconds": 10, "renewIntervalSeconds": 3}


def second_cloudcore(rig: EdgeRig) -> tuple[Daemon, dict[str, int]]:
    """A second instance on the rig's control plane: the first's cloudcore.yaml with its own ports, files
    and lease identity."""
    ports = {name: free_port() for name in ("ws", "https", "tunnel", "stream", "monitor")}
    root = rig.root / "cloud2"
    root.mkdir()
    first = yaml.safe_load(rig.cloud.config.read_text())
    hub = first["modules"]["cloudHub"]
    config = merged(first, {
        "commonConfig": {"monitorServer": {"bindAddress": f"127.0.0.1:{ports['monitor']}"}},
        "modules": {
            "cloudHub": {"tlsCAFile": str(root / "ca.crt"), "tlsCAKeyFile": str(root / "ca.key"),
                         "tlsCertFile": str(root / "server.crt"), "tlsPrivateKeyFile": str(root / "server.key"),
                         "unixsocket": {"address": f"unix://{root}/kubeedge.sock"},
                         "websocket": {**hub["websocket"], "port": ports["ws"]},
                         "https": {**hub["https"], "port": ports["https"]},
                         "nodeLease": {"enable": True, "identity": "cloudcore-2", **LEASE}},
            "cloudStream": {"tunnelPort": ports["tunnel"], "streamPort": ports["stream"]}}})
    daemon = Daemon("cloudcore", root / "cloudcore.yaml", root / "cloudcore.log", verbosity=2)
    daemon.config.write_text(yaml.safe_dump(config))
    return daemon, ports


def endpoint(rig: EdgeRig) -> str:
    found = rig.plane.kubectl("get", "node", rig.node, "-o", "json", check=False)
    if found.returncode != 0:
        return ""
    return str(json.loads(found.stdout)["metadata"].get("annotations", {}).get(ENDPOINT_ANNOTATION, ""))


def test_logs_and_exec_follow_the_tunnel_to_another_cloudcore_after_kill_9(
        tmp_path: Path, containerd: ContainerdLayout, run_id: str) -> None:
    node, pod = f"ha-stream-{run_id}", f"talker-{run_id}"
    rig = EdgeRig(tmp_path, containerd, node, stream=True, verbosity=2,
                  cloud_extra={"commonConfig": {"monitorServer": {"bindAddress": f"127.0.0.1:{free_port()}"}},
                               "modules": {"cloudHub": {"nodeLease": {"enable": True, "identity": "cloudcore-1",
                                                                      **LEASE}}}})
    spare: Daemon | None = None
    try:
        rig.start_plane()
        rig.write_cloud_config()
        spare, ports = second_cloudcore(rig)
        rig.edge_extra = {"modules": {
            "edgeHub": {"websocket": {"server": f"127.0.0.1:{rig.ports['ws']},127.0.0.1:{ports['ws']}"}},
            "edgeStream": {"server": f"127.0.0.1:{rig.ports['tunnel']},127.0.0.1:{ports['tunnel']}"}}}
        rig.start_cloud()
        spare.start()
        spare.wait_log('"cloudstream listening"')
        rig.join()
        wait(rig.node_ready, "edge node Ready")
        first, second = f"127.0.0.1:{rig.ports['stream']}", f"127.0.0.1:{ports['stream']}"
        wait(lambda: endpoint(rig) == first, f"stream endpoint annotation {first}")

        rig.plane.kubectl("apply", "-f", "-", input_text=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "talk", "image": BUSYBOX_REF,
                "command": ["sh", "-c", "echo first; echo second; sleep 3600"]}]}}))
        wait(lambda: rig.plane.kubectl("get", "pod", pod, "-o", "jsonpath={.status.phase}",
                                       check=False).stdout == "Running", "pod Running in the cloud")
        assert wait(lambda: rig.plane.kubectl("logs", pod, check=False).stdout, "logs through cloudcore-1",
                    timeout=20) == "first\nsecond\n"

        connected = rig.edge.log_count('"stream tunnel connected"')
        rig.cloud.kill()
        rig.edge.wait_log('"stream tunnel connected"', count=connected + 1, timeout=60)
        wait(lambda: endpoint(rig) == second, f"stream endpoint annotation moved to {second}", timeout=30)
        last = [line for line in rig.edge.log.read_text().splitlines() if '"stream tunnel connected"' in line][-1]
        assert f"127.0.0.1:{ports['tunnel']}" in last, last
        assert rig.plane.kubectl("logs", pod, "--tail=1").stdout == "second\n"
        assert rig.plane.kubectl("exec", pod, "--", "sh", "-c", "echo via-$((1+1))").stdout == "via-2\n"
        # CloudHub moved too, once the dead instance's node lease ran out: the node is served again.
        wait(lambda: spare.log_count('"node lease held"') >= 1, "cloudcore-2 holds the node's lease", timeout=60)
        wait(rig.node_ready, "edge node Ready through cloudcore-2")
        # The tunnel ends (edgecore stopped): its instance removes the annotation it set.
        rig.edge.stop()
        wait(lambda: endpoint(rig) == "", "stream endpoint annotation removed when the tunnel closed", timeout=30)
    finally:
        if spare is not None:
            spare.stop()
        rig.stop()
