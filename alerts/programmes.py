"""The programmes' rule sets and parameters (alerts/programmes.toml), checked on load."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerts.catalogue import PATIENT_PARAMETERS, RULES
from alerts.model import Severity
from devices.registry import Programme
from ingest.platform import ConfigurationError

__all__ = ["AlertConfig", "ProgrammeConfig", "load_config", "parameter_names"]

ENABLED = "enabled"


class _Engine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timezone: str
    current_window_minutes: float = Field(gt=0)
    sweep_interval_seconds: float = Field(gt=0)
    cooldown_hours: dict[str, float]
    repeat_minutes: float = Field(ge=0)


class _Programme(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[str]
    parameters: dict[str, float] = {}


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: _Engine
    programme: dict[Programme, _Programme]


@dataclass(frozen=True, slots=True)
class ProgrammeConfig:
    programme: Programme
    rules: tuple[str, ...]
    parameters: Mapping[str, float]  # "<rule>.<name>" or "patient.<name>"


@dataclass(frozen=True, slots=True)
class AlertConfig:
    timezone: ZoneInfo
    current_window_us: int
    sweep_interval_s: float
    cooldown_us: Mapping[Severity, int]
    programmes: Mapping[Programme, ProgrammeConfig]
    # A firing no more severe than the last one the engine emitted for the same patient and
    # rule, at most this much event time after it, is not emitted (0: every firing is).
    repeat_window_us: int = 0

    def utc_offset_hours(self, at_us: int) -> float:
        moment = datetime.fromtimestamp(at_us / 1e6, self.timezone)
        offset = moment.utcoffset()
        return offset.total_seconds() / 3600 if offset else 0.0


class ConfigError(ConfigurationError):
    """The programmes file is wrong; the message says where."""


def parameter_names() -> set[str]:
    """Every name a programme or a patient override may set."""
    names = {f"patient.{n}" for n in PATIENT_PARAMETERS}
    for rule in RULES.values():
        names.update(f"{rule.id}.{n}" for n in rule.parameters)
        names.add(f"{rule.id}.{ENABLED}")
    return names


def check_parameter(name: str, value: float) -> None:
    """Refuse an unknown parameter, or switching off a rule that must stay on."""
    if name not in parameter_names():
        raise ConfigError(f"unknown parameter {name!r}")
    rule_id, _, parameter = name.partition(".")
    if parameter == ENABLED and value == 0 and rule_id in RULES and not RULES[rule_id].disableable:
        raise ConfigError(f"{rule_id} cannot be disabled")
    if math.isinf(value):
        raise ConfigError(f"{name}: {value} is not a threshold")


def load_config(path: Path | None = None) -> AlertConfig:
    text = (
        path.read_text()
        if path is not None
        else (resources.files("alerts") / "programmes.toml").read_text()
    )
    try:
        raw = _File.model_validate(tomllib.loads(text))
    except (ValidationError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"programmes file: {error}") from error
    programmes = {}
    for programme in Programme:
        entry = raw.programme.get(programme)
        if entry is None:
            raise ConfigError(f"programme {programme.value} has no rule set")
        for rule_id in entry.rules:
            if rule_id not in RULES:
                raise ConfigError(f"{programme.value}: unknown rule {rule_id!r}")
        for name, value in entry.parameters.items():
            check_parameter(name, value)
            rule_id = name.partition(".")[0]
            if rule_id != "patient" and rule_id not in entry.rules:
                raise ConfigError(f"{programme.value}: {name} is for a rule it does not run")
        programmes[programme] = ProgrammeConfig(programme, tuple(entry.rules), entry.parameters)
    cooldown = {
        Severity[name.upper()]: int(hours * 3.6e9)
        for name, hours in raw.engine.cooldown_hours.items()
    }
    if set(cooldown) != set(Severity):
        raise ConfigError("cooldown_hours needs info, orange and red")
    repeat_window_us = int(raw.engine.repeat_minutes * 6e7)
    if repeat_window_us >= min(cooldown.values()):
        # Within a cool-down a repeat is dropped anyway: suppressing it changes nothing.
        raise ConfigError("repeat_minutes must be shorter than every cool-down")
    return AlertConfig(
        timezone=ZoneInfo(raw.engine.timezone),
        current_window_us=int(raw.engine.current_window_minutes * 6e7),
        sweep_interval_s=raw.engine.sweep_interval_seconds,
        cooldown_us=cooldown,
        programmes=programmes,
        repeat_window_us=repeat_window_us,
    )
