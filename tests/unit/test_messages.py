"""telemon's words: both catalogues complete, findings in clinical words, numbers as
clinicians write them, the reader's language."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts.catalogue import RULES
from alerts.messages import LANGUAGES, language_of, words
from alerts.model import Disposition
from devices.catalogue import VitalKind

PARIS = ZoneInfo("Europe/Paris")


def keys(table: Mapping[str, Any], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for name, value in table.items():
        if isinstance(value, Mapping):
            found |= keys(value, f"{prefix}{name}.")
        else:
            found.add(prefix + name)
    return found


def test_both_catalogues_say_everything() -> None:
    french, english = words("fr").everything(), words("en").everything()
    assert keys(french) == keys(english)
    for language in LANGUAGES:
        catalogue = words(language)
        assert set(catalogue.section("rule_title")) == set(RULES)
        assert set(catalogue.section("finding")) == set(RULES)
        assert set(catalogue.section("disposition")) == {d.value for d in Disposition}
        assert set(catalogue.section("kind")) == {k.value for k in VitalKind}


@pytest.mark.parametrize(
    ("language", "value", "decimals", "text"),
    [
        ("fr", 0.0, 0, "0"),
        ("fr", 10.0, 0, "10"),
        ("fr", 38.5, 1, "38,5"),
        ("en", 38.5, 1, "38.5"),
        ("en", 39.0, 1, "39"),
        ("en", float("nan"), 1, "—"),
    ],
)
def test_numbers_as_clinicians_write_them(
    language: str, value: float, decimals: int, text: str
) -> None:
    assert words(language).number(value, decimals) == text


def test_a_finding_names_the_bound_its_severity_crossed() -> None:
    rate = {
        "rule": "heart_rate",
        "values": {"value": 135.0},
        "parameters": {
            "red_at_or_below": 40.0,
            "orange_at_or_below": None,
            "orange_at_or_above": 111.0,
            "red_at_or_above": 131.0,
        },
    }
    assert words("en").finding(rate, "red", PARIS) == "Heart rate 135/min (≥ 131/min)"
    assert words("fr").finding(rate, "orange", PARIS) == "FC 135/min (≥ 111/min)"
    spo2 = {"rule": "spo2_covid", "values": {"value": 94.0, "day_of_follow_up": 10.0}}
    spo2["parameters"] = {"red_below": 95.0, "first_days": 14.0}
    assert words("fr").finding(spo2, "red", PARIS) == "SpO2 94 % (< 95 %, J10 du suivi)"


def test_an_explanation_without_the_values_its_words_need_gives_the_rule_title() -> None:
    assert words("en").finding({"rule": "news2", "values": {}}, "red", PARIS) == "NEWS2 score"


@pytest.mark.parametrize(
    ("asked", "browser", "language"),
    [
        ("en", "fr-FR,fr", "en"),
        (None, "en-GB,en;q=0.9", "en"),
        (None, "de-DE,fr;q=0.8", "fr"),
        (None, "de-DE", "fr"),
        (None, None, "fr"),
        ("xx", "en", "en"),
    ],
)
def test_the_readers_language(asked: str | None, browser: str | None, language: str) -> None:
    assert language_of(asked, browser, "fr") == language


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("fr", "SpO2 91 % (≤ 92 %), nouvelle mesure demandée"),
        ("en", "SpO2 91 % (≤ 92 %), re-measure asked"),
    ],
)
def test_an_isolated_reading_asks_for_a_re_measure(language: str, text: str) -> None:
    explanation = {
        "rule": "spo2_scale1",
        "values": {"value": 91.0, "confirmed": 0.0},
        "parameters": {"red_at_or_below": 92.0, "orange_at_or_below": 94.0},
    }
    assert words(language).finding(explanation, "info", PARIS) == text
    confirmed = {**explanation, "values": {"value": 91.0, "confirmed": 1.0}}
    assert words(language).finding(confirmed, "red", PARIS) == text.split(",")[0]
