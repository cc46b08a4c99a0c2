"""The programmes' protocols, rule sets and parameters (alerts/programmes.toml), checked on
load.

A programme's protocol prescribes measures and their frequency (alerts.protocol); each
measure brings the missing-data rule that watches it, its frequency that rule's
parameters. Every parameter, in the file or overridden for one patient, is checked
against the range the catalogue gives it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerts.catalogue import PATIENT_PARAMETERS, RULES
from alerts.model import Rule, Severity
from alerts.protocol import FREQUENCY, MEASURES
from devices.registry import Programme
from ingest.platform import ConfigurationError

__all__ = [
    "AlertConfig",
    "ProgrammeConfig",
    "check_parameter",
    "load_config",
    "measure_rule",
    "parameter_names",
]

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
    protocol: dict[str, dict[str, float]]
    rules: list[str]
    parameters: dict[str, float] = {}


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: _Engine
    programme: dict[Programme, _Programme]


@dataclass(frozen=True, slots=True)
class ProgrammeConfig:
    programme: Programme
    measures: tuple[str, ...]  # the protocol's, in the file's order
    rules: tuple[str, ...]  # the measures' rules, then the others
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


class ConfigError(ConfigurationError):
    """The programmes file is wrong; the message says where."""


def parameter_names() -> set[str]:
    """Every name a programme or a patient override may set."""
    names = {f"patient.{n}" for n in PATIENT_PARAMETERS}
    for rule in RULES.values():
        names.update(f"{rule.id}.{n}" for n in rule.parameters)
        names.add(f"{rule.id}.{ENABLED}")
    return names


def measure_rule(measure: str) -> Rule:
    """The missing-data rule that watches a protocol's measure."""
    return _MEASURE_RULES[measure]


_MEASURE_RULES = {rule.measure: rule for rule in RULES.values() if rule.measure}


def check_parameter(name: str, value: float) -> None:
    """Refuse an unknown parameter, a value outside its range, or switching off a rule that
    must stay on."""
    if name not in parameter_names():
        raise ConfigError(f"unknown parameter {name!r}")
    rule_id, _, parameter = name.partition(".")
    if parameter == ENABLED:
        if value not in (0, 1):
            raise ConfigError(f"{name}: 1 (on) or 0 (off), not {value}")
        if value == 0 and not RULES[rule_id].disableable:
            raise ConfigError(f"{rule_id} cannot be disabled")
        return
    spec = (
        PATIENT_PARAMETERS[parameter]
        if rule_id == "patient"
        else RULES[rule_id].parameters[parameter]
    )
    refusal = spec.refusal(value)
    if refusal is not None:
        raise ConfigError(f"{name}: {refusal}")


def _protocol(programme: Programme, entry: _Programme) -> dict[str, float]:
    """The protocol's measures as their rules' parameters."""
    parameters = {}
    for measure, frequency in entry.protocol.items():
        if measure not in MEASURES:
            raise ConfigError(f"{programme.value}: unknown measure {measure!r} in its protocol")
        rule = measure_rule(measure)
        missing = [n for n in FREQUENCY if n not in frequency]
        if missing:
            raise ConfigError(f"{programme.value}: {measure} needs {', '.join(missing)}")
        for name, value in frequency.items():
            if name not in rule.parameters:
                raise ConfigError(f"{programme.value}: {measure} has no {name!r}")
            parameters[f"{rule.id}.{name}"] = value
    return parameters


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
        measured = tuple(measure_rule(m).id for m in entry.protocol if m in MEASURES)
        for rule_id in entry.rules:
            if rule_id not in RULES:
                raise ConfigError(f"{programme.value}: unknown rule {rule_id!r}")
            if RULES[rule_id].measure is not None:
                raise ConfigError(
                    f"{programme.value}: {rule_id} comes with its measure in the protocol"
                )
        rules = (*measured, *entry.rules)
        for name, value in entry.parameters.items():
            check_parameter(name, value)
            rule_id, _, parameter = name.partition(".")
            if rule_id != "patient" and rule_id not in rules:
                raise ConfigError(f"{programme.value}: {name} is for a rule it does not run")
            if RULES.get(rule_id) and RULES[rule_id].measure and parameter in FREQUENCY:
                raise ConfigError(f"{programme.value}: {name} is set by its protocol")
        parameters = {**entry.parameters, **_protocol(programme, entry)}
        for name, value in parameters.items():
            check_parameter(name, value)
        programmes[programme] = ProgrammeConfig(programme, tuple(entry.protocol), rules, parameters)
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
