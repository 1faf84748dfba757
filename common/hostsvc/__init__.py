"""Host daemons for tests and scripts/quickstart: containerd, mosquitto, netns pairs, local OCI images.

One code path for both users: the test fixtures call these functions, and scripts/quickstart calls
`python -m common.hostsvc <cmd>`, which calls the same functions. Everything is synchronous (setup
tools, not hot paths). The submodules own one service each:

- `process`: detached daemons with pidfiles, readiness polling, PID-safe stop from any process.
- `ociimage`: the stdlib OCI archive builder (busybox and pause images).
- `containerd`: layout, config deltas, CNI conflist, start, image import, teardown.
- `mosquitto`: broker config, permission checks, start/stop.
- `netns`: cloud/edge namespace pairs joined by a veth.
"""

from common.hostsvc import containerd, mosquitto, netns, ociimage
from common.hostsvc.containerd import ConfigDeltaError, ContainerdLayout
from common.hostsvc.mosquitto import MosquittoLayout, TlsFiles
from common.hostsvc.netns import NetnsPair, exec_argv
from common.hostsvc.ociimage import (
    BUSYBOX_REF,
    PAUSE_REF,
    BuiltImage,
    build_busybox_image,
    build_image,
    build_pause_image,
)
from common.hostsvc.process import (
    Daemon,
    DaemonError,
    HostServiceError,
    StopOutcome,
    is_running,
    run_cmd,
    stop_from_pidfile,
)

__all__ = [
    "BUSYBOX_REF",
    "PAUSE_REF",
    "BuiltImage",
    "ConfigDeltaError",
    "ContainerdLayout",
    "Daemon",
    "DaemonError",
    "HostServiceError",
    "MosquittoLayout",
    "NetnsPair",
    "StopOutcome",
    "TlsFiles",
    "build_busybox_image",
    "build_image",
    "build_pause_image",
    "containerd",
    "exec_argv",
    "is_running",
    "mosquitto",
    "netns",
    "ociimage",
    "run_cmd",
    "stop_from_pidfile",
]
