"""The published contract: schema in sync with the models, catalogue consistent."""

from __future__ import annotations

import json
from pathlib import Path

from devices.catalogue import BY_CODE, CATALOGUE, ValueType, VitalKind
from devices.contract import json_schema

SCHEMA = Path(__file__).parents[2] / "devices" / "schemas" / "readings.v1.schema.json"


def test_checked_in_schema_is_generated_from_the_models() -> None:
    """Regenerate with: python -m devices.contract > devices/schemas/readings.v1.schema.json"""
    assert json.loads(SCHEMA.read_text()) == json_schema()


def test_schema_lists_every_kind_and_requires_the_envelope() -> None:
    schema = json_schema()
    assert set(schema["$defs"]["VitalKind"]["enum"]) == {k.value for k in VitalKind}
    assert set(schema["required"]) == {"device_id", "patient_id", "readings"}


def test_catalogue_codes_are_unique_and_cover_every_kind() -> None:
    assert len(BY_CODE) == len(CATALOGUE)
    assert {v.kind for v in CATALOGUE} == set(VitalKind)


def test_questionnaire_items_have_the_contract_units() -> None:
    for vital in CATALOGUE:
        if vital.value_type is ValueType.GRADE:
            assert (vital.unit, vital.low, vital.high) == ("{grade}", 0, 4)
        if vital.value_type is ValueType.BOOLEAN:
            assert (vital.unit, vital.low, vital.high) == ("{boolean}", 0, 1)
