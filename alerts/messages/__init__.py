"""telemon's words, in French and English: one message catalogue per language (fr.toml,
en.toml) for the worklist page, the rules' titles, the findings in clinical words, the
dispositions, the vitals' names and units.

`words(language)` gives a language's catalogue; `language_of` picks the language of a
request from what the reader asked for and the deployment's default.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal
from zoneinfo import ZoneInfo

from alerts.catalogue import RULES
from devices.catalogue import BY_CODE

__all__ = ["LANGUAGES", "Language", "Words", "language_of", "words"]

Language = Literal["fr", "en"]
LANGUAGES: tuple[Language, ...] = ("fr", "en")

_COMPARATORS = {"at_or_below": "≤", "below": "<", "at_or_above": "≥", "above": ">"}
_THRESHOLD = re.compile(
    r"^(?P<severity>red|orange|info)_(?:on_o2_)?(?P<side>at_or_below|below|at_or_above|above)$"
)
_TIMES = ("scheduled_at_s", "last_reading_s", "data_since_s")


class Words:
    """One language's catalogue."""

    def __init__(self, language: Language, table: Mapping[str, Any]) -> None:
        self.language = language
        self._table = table

    def section(self, name: str) -> Mapping[str, str]:
        section: Mapping[str, str] = self._table[name]
        return section

    def everything(self) -> Mapping[str, Any]:
        """The whole catalogue (for the page)."""
        return self._table

    def rule_title(self, rule_id: str) -> str:
        return self.section("rule_title").get(rule_id, rule_id)

    def kind(self, kind: str) -> str:
        return self.section("kind").get(kind, kind)

    def unit(self, ucum: str) -> str:
        return self.section("unit").get(ucum, ucum)

    def number(self, value: float | None, decimals: int = 1) -> str:
        """A value as a clinician reads it: no trailing zero, a decimal comma in French."""
        if value is None or math.isnan(value):
            return "—"
        text = f"{value:.{decimals}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text.replace(".", ",") if self.language == "fr" else text

    def finding(self, explanation: Mapping[str, Any], severity: str, timezone: ZoneInfo) -> str:
        """What a rule found, in clinical words: "SpO2 90 % (≤ 92 %)"."""
        rule_id = str(explanation.get("rule", ""))
        template = self.section("finding").get(rule_id)
        if template is None:
            return self.rule_title(rule_id)
        values: Mapping[str, float | None] = explanation.get("values") or {}
        # An isolated abnormal reading fires info until a re-measure confirms it: its band
        # is the bound it crossed, and the re-measure is what is asked.
        to_confirm = severity == "info" and values.get("confirmed") == 0
        bands = ("red", "orange") if to_confirm else (severity,)
        fields = self._fields(rule_id, explanation, bands, timezone)
        try:
            found = template.format_map(fields)
        except (KeyError, ValueError):  # an older explanation without a value this names
            return self.rule_title(rule_id)
        return self.section("confirmation")["asked"].format(finding=found) if to_confirm else found

    def _fields(
        self,
        rule_id: str,
        explanation: Mapping[str, Any],
        bands: tuple[str, ...],
        timezone: ZoneInfo,
    ) -> dict[str, str]:
        values: Mapping[str, float | None] = explanation.get("values") or {}
        parameters: Mapping[str, float | None] = explanation.get("parameters") or {}
        fields = {name: self.number(value) for name, value in values.items()}
        fields.update({name: self.number(value) for name, value in parameters.items()})
        value = values.get("value")
        unit = self.unit(_unit_of(rule_id))
        fields["threshold"] = next(
            (t for band in bands if (t := self._threshold(value, parameters, band, unit))), ""
        )
        for name in _TIMES:
            at = values.get(name)
            if at is not None and not math.isnan(at):
                fields[name.removesuffix("_s")] = self._time(at, timezone)
        if "minimum_before" in values and value is not None:
            fields["gain"] = self.number(value - (values["minimum_before"] or value))
        if "kind" in values and values["kind"] is not None:
            fields["item"] = self.kind(BY_CODE[int(values["kind"])].kind.value)
        for name in (
            "score",
            "parameters_present",
            "days_with_data",
            "days_over",
            "percent",
            "points",
            "rise",
            "score_now",
            "score_before",
        ):
            if values.get(name) is not None:
                fields[name] = self.number(values[name], 0)
        if "percent_below" in values:
            fields["percent_below"] = self.number(values["percent_below"])
        day = values.get("day_of_follow_up")
        if day is not None:  # a reading a little before the enrolment is of its first day
            fields["day_of_follow_up"] = self.number(max(0.0, day), 0)
        return fields

    def _threshold(
        self, value: float | None, parameters: Mapping[str, float | None], severity: str, unit: str
    ) -> str:
        """The bound of the finding's severity that the value crossed, as "≤ 92 %"."""
        if value is None:
            return ""
        for name, bound in parameters.items():
            match = _THRESHOLD.match(name)
            if match is None or match["severity"] != severity or bound is None:
                continue
            side = match["side"]
            crossed = {
                "at_or_below": value <= bound,
                "below": value < bound,
                "at_or_above": value >= bound,
                "above": value > bound,
            }[side]
            if crossed:
                spaced = unit if unit.startswith("/") or not unit else f" {unit}"
                return f"{_COMPARATORS[side]} {self.number(bound)}{spaced}"
        return ""

    def _time(self, epoch_s: float, timezone: ZoneInfo) -> str:
        moment = datetime.fromtimestamp(epoch_s, UTC).astimezone(timezone)
        return moment.strftime("%d/%m %H:%M" if self.language == "fr" else "%d %b %H:%M")


def _unit_of(rule_id: str) -> str:
    """The UCUM unit of the values a rule reads, if they all share one."""
    rule = RULES.get(rule_id)
    units = {BY_CODE[code].unit for code in rule.kinds} if rule is not None else set()
    return units.pop() if len(units) == 1 else ""


@functools.cache
def words(language: Language) -> Words:
    text = (resources.files("alerts.messages") / f"{language}.toml").read_text(encoding="utf-8")
    return Words(language, tomllib.loads(text))


def language_of(asked: str | None, accept_language: str | None, default: Language) -> Language:
    """The reader's language: what they chose (`asked`), else the first of their browser's
    languages telemon speaks, else the deployment's."""
    if asked in LANGUAGES:
        return asked
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return default
