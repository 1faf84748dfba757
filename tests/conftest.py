"""Suite-wide fixtures: each real component lives in its own plugin module under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.paths",
    "tests.fixtures.sqlite",
    "tests.fixtures.mosquitto",
    "tests.fixtures.containerd",
    "tests.fixtures.netns",
    "tests.fixtures.pki",
    "tests.fixtures.controlplane",
    "tests.fixtures.cloud_edge",
]
