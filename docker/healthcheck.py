"""Container health check for the kubeedge-py images (Docker HEALTHCHECK; stdlib + PyYAML only).

    healthcheck.py cloudcore    [--config FILE] [--path /healthz]
    healthcheck.py controlplane [--data-dir DIR] [--port N] [--path /readyz]

cloudcore: GET http://<commonConfig.monitorServer.bindAddress><path> (docs/metrics.md). The address is read
from the cloudcore.yaml the container runs with: `--config` of PID 1's command line, else
/etc/kubeedge/config/cloudcore.yaml; 0.0.0.0 / :: become the loopback address. The default path is /healthz
(liveness): /readyz also fails while the Kubernetes API is away, which a restart does not cure.

controlplane: GET https://127.0.0.1:<--bind-port><path>, verified with <--data-dir>/pki/ca.crt (the control
plane serves /healthz, /livez and /readyz without authentication; docs/controlplane.md). Port and data dir
come from PID 1's command line unless given.

Exit 0 when the answer is 200, else 1 with one line saying why (Docker keeps it in `docker inspect`).
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_CLOUDCORE_CONFIG = Path("/etc/kubeedge/config/cloudcore.yaml")
DEFAULT_MONITOR_ADDRESS = "127.0.0.1:9091"
DEFAULT_CONTROLPLANE_DATA_DIR = Path("/var/lib/kubeedge/controlplane")
DEFAULT_CONTROLPLANE_PORT = 6443
TIMEOUT = 4.0


class Unhealthy(Exception):
    """The check failed; the message says why."""


def pid1_argv(proc: Path = Path("/proc/1/cmdline")) -> list[str]:
    try:
        return [part.decode(errors="replace") for part in proc.read_bytes().split(b"\0") if part]
    except OSError:
        return []


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of `--flag VALUE` or `--flag=VALUE` in argv (the last one wins, as argparse does)."""
    found = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            found = argv[index + 1]
        elif arg.startswith(flag + "="):
            found = arg[len(flag) + 1:]
    return found


def loopback(host: str) -> str:
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def monitor_address(config: Path) -> tuple[str, int]:
    """(host, port) of cloudcore's monitor server as configured in `config`."""
    import yaml  # in the image's venv (a cloudcore dependency)

    try:
        root = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise Unhealthy(f"config file {config} not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise Unhealthy(f"cannot read {config}: {exc}") from None
    monitor = ((root.get("commonConfig") or {}).get("monitorServer") or {}) if isinstance(root, dict) else {}
    if monitor.get("enable") is False:
        raise Unhealthy(f"commonConfig.monitorServer.enable is false in {config}: nothing serves /healthz")
    address = str(monitor.get("bindAddress") or DEFAULT_MONITOR_ADDRESS)
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise Unhealthy(f"commonConfig.monitorServer.bindAddress {address!r} in {config} is not IP:port")
    return loopback(host), int(port)


def get(connection: http.client.HTTPConnection, path: str, what: str) -> None:
    try:
        connection.request("GET", path, headers={"User-Agent": "kubeedge-healthcheck"})
        response = connection.getresponse()
        body = response.read(2048).decode(errors="replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        raise Unhealthy(f"{what}: {exc}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise Unhealthy(f"{what}: HTTP {response.status}: {body[-500:]}")


def check_cloudcore(config: Path | None, path: str) -> str:
    config = config or Path(flag_value(pid1_argv(), "--config") or DEFAULT_CLOUDCORE_CONFIG)
    host, port = monitor_address(config)
    url = f"http://{host}:{port}{path}"
    get(http.client.HTTPConnection(host, port, timeout=TIMEOUT), path, url)
    return url


def check_controlplane(data_dir: Path | None, port: int | None, path: str) -> str:
    argv = pid1_argv()
    data_dir = data_dir or Path(flag_value(argv, "--data-dir") or DEFAULT_CONTROLPLANE_DATA_DIR)
    if port is None:
        given = flag_value(argv, "--bind-port")
        port = int(given) if given and given.isdigit() else DEFAULT_CONTROLPLANE_PORT
    ca = data_dir / "pki" / "ca.crt"
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise Unhealthy(f"the control plane's CA {ca}: {exc}") from None
    url = f"https://127.0.0.1:{port}{path}"  # 127.0.0.1 is always in the serving certificate
    get(http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=context), path, url)
    return url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healthcheck.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="daemon", required=True)
    cloud = sub.add_parser("cloudcore")
    cloud.add_argument("--config", type=Path)
    cloud.add_argument("--path", default="/healthz")
    plane = sub.add_parser("controlplane")
    plane.add_argument("--data-dir", type=Path)
    plane.add_argument("--port", type=int)
    plane.add_argument("--path", default="/readyz")
    args = parser.parse_args(argv)
    try:
        if args.daemon == "cloudcore":
            url = check_cloudcore(args.config, args.path)
        else:
            url = check_controlplane(args.data_dir, args.port, args.path)
    except Unhealthy as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"healthy: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
