"""examples/mappers/thermometer/device.py: what the sample mapper takes from a Device, and its simulated sensor."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from edgecore.dmi.convert import device_message
from edgecore.dmi.generate import load_protocol
from examples.mappers.thermometer.device import (
    THRESHOLD,
    DeviceConfig,
    PropertyConfig,
    Thermometer,
    config_of,
    format_number,
)
from examples.mappers.thermometer.mapper import parse_args

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "thermometer.yaml"


def sample_config() -> DeviceConfig:
    device = next(d for d in yaml.safe_load_all(SAMPLE.read_text()) if d["kind"] == "Device")
    return config_of(device_message(load_protocol(), device))


def test_the_sample_device_configures_the_mapper() -> None:
    config = sample_config()
    assert (config.id, config.model) == ("default/thermometer-01", "thermometer-model")
    assert config.report_cycle == 1.0
    assert config.desired(THRESHOLD) == "30" and config.desired("temperature") == ""
    assert config.number("baseTemperature", 0.0) == 21.5
    thermometer = Thermometer(config, random.Random(1))
    assert thermometer.configure(config) is None
    assert (thermometer.threshold, thermometer.threshold_text()) == (30.0, "30")


def test_report_cycle_is_the_shortest_and_never_a_busy_loop() -> None:
    props = {"a": PropertyConfig("a", 5000), "b": PropertyConfig("b", 250), "c": PropertyConfig("c", 0)}
    assert DeviceConfig("ns", "d", properties=props).report_cycle == 0.25
    assert DeviceConfig("ns", "d", properties={"a": PropertyConfig("a", 1)}).report_cycle == 0.1
    assert DeviceConfig("ns", "d").report_cycle == 1.0


def test_temperature_swings_around_the_base_and_a_bad_threshold_is_refused() -> None:
    config = DeviceConfig("ns", "d", config={"baseTemperature": 10.0, "noise": 0.0},
                          properties={THRESHOLD: PropertyConfig(THRESHOLD, desired="hot")})
    thermometer = Thermometer(config, random.Random(1))
    assert thermometer.read_temperature(0.0) == 10.0
    assert thermometer.read_temperature(15.0) == 12.0  # a quarter of the 60 s swing
    assert "could not convert" in (thermometer.configure(config) or "")
    assert thermometer.threshold_text() == "30"  # the default stays
    with pytest.raises(ValueError, match="finite"):
        thermometer.write_threshold("inf")
    thermometer.write_threshold("25.50")
    assert (thermometer.threshold, thermometer.threshold_text()) == (25.5, "25.50")  # echoed as written


def test_numbers_are_written_as_twin_values_accept_them() -> None:
    assert [format_number(v) for v in (30.0, 21.53, -0.5, 1e20, 1e-7)] == [
        "30", "21.53", "-0.5", "100000000000000000000", "0"]


def test_defaults_of_the_command_line() -> None:
    args = parse_args([])
    assert (str(args.socket), str(args.edgecore_socket), args.name, args.protocol) == (
        "/etc/kubeedge/thermometer.sock", "/etc/kubeedge/dmi.sock", "thermometer", "virtual-thermometer")
