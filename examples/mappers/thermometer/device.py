"""The thermometer itself (pure: no sockets, no clock; time and randomness are passed in).

`DeviceConfig` is what the mapper keeps of a `v1beta1.Device` edgecore sent: the properties, their report
cycles and desired values, and the protocol's configData. `Thermometer` simulates the hardware: a temperature
that swings slowly around `baseTemperature` with some noise, and a writable `threshold` setting. A real mapper
replaces `Thermometer` with the code that talks to its device; the rest of the mapper stays as it is.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Final

from edgecore.dmi.convert import customized_dict

TEMPERATURE: Final = "temperature"
THRESHOLD: Final = "threshold"
DEFAULT_CYCLE_MS: Final = 1000
MIN_CYCLE_MS: Final = 100  # a tiny or zero reportCycle must not turn the mapper into a busy loop
DEFAULT_BASE: Final = 21.0
DEFAULT_NOISE: Final = 0.1
DEFAULT_THRESHOLD: Final = 30.0
SWING: Final = 2.0  # degC of the slow swing
SWING_PERIOD: Final = 60.0  # s


@dataclass(frozen=True, slots=True)
class PropertyConfig:
    name: str
    report_cycle_ms: int = 0
    desired: str = ""  # spec.properties[].desired.value, "" when none


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    namespace: str
    name: str
    model: str = ""
    properties: dict[str, PropertyConfig] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # spec.protocol.configData

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def report_cycle(self) -> float:
        """Seconds between reports: the shortest positive reportCycle of the properties (1 s if none)."""
        cycles = [p.report_cycle_ms for p in self.properties.values() if p.report_cycle_ms > 0]
        return max(MIN_CYCLE_MS, min(cycles, default=DEFAULT_CYCLE_MS)) / 1000.0

    def desired(self, name: str) -> str:
        prop = self.properties.get(name)
        return prop.desired if prop else ""

    def number(self, key: str, default: float) -> float:
        value = self.config.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def config_of(device: Any) -> DeviceConfig:
    """The parts of a `v1beta1.Device` message this mapper uses."""
    properties = {p.name: PropertyConfig(p.name, int(p.reportCycle), p.desired.value)
                  for p in device.spec.properties if p.name}
    return DeviceConfig(namespace=device.namespace or "default", name=device.name,
                        model=device.spec.deviceModelReference, properties=properties,
                        config=customized_dict(device.spec.protocol.configData))


class Thermometer:
    """A simulated thermometer with a writable alarm threshold."""

    def __init__(self, config: DeviceConfig, rng: random.Random) -> None:
        self.rng = rng
        self.base = config.number("baseTemperature", DEFAULT_BASE)
        self.noise = config.number("noise", DEFAULT_NOISE)
        self.threshold = DEFAULT_THRESHOLD
        self.applied_desired = ""  # the last desired threshold written to the device, as given

    def read_temperature(self, now: float) -> float:
        swing = SWING * math.sin(2 * math.pi * now / SWING_PERIOD)
        return round(self.base + swing + self.rng.gauss(0.0, self.noise), 2)

    def write_threshold(self, desired: str) -> None:
        """Apply a desired threshold; ValueError when it is not a number (the old one stays)."""
        value = float(desired)
        if not math.isfinite(value):
            raise ValueError(f"threshold {desired!r} is not a finite number")
        self.threshold = value
        self.applied_desired = desired

    def configure(self, config: DeviceConfig) -> str | None:
        """Take a (new) Device config: base/noise and the desired threshold; returns a problem, if any."""
        self.base = config.number("baseTemperature", self.base)
        self.noise = config.number("noise", self.noise)
        desired = config.desired(THRESHOLD)
        if desired and desired != self.applied_desired:
            try:
                self.write_threshold(desired)
            except ValueError as exc:
                return str(exc)
        return None

    def threshold_text(self) -> str:
        """The threshold as the device echoes it: the desired text as written, else the default."""
        return self.applied_desired or format_number(self.threshold)


def format_number(value: float) -> str:
    """A twin value as plain decimal text: twin values may only hold letters, digits and `-_.,:/@#`."""
    return f"{value:.6f}".rstrip("0").rstrip(".")
