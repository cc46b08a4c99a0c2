"""The thresholds in force for a patient (the charts' lines), and clinicians' overrides."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request

from alerts import actions
from alerts.catalogue import RULES
from alerts.messages import language_of, words
from alerts.model import RuleKind
from alerts.programmes import ENABLED, AlertConfig
from devices.catalogue import BY_CODE
from devices.registry import Programme
from ingest.api.access import Api, Refused, WhoAsks, audited, the_patient
from ingest.api.schemas import Override, OverrideRequest, ParameterName, PatientId, ThresholdLine
from ingest.platform import ConfigurationError, Connection

__all__ = ["chart_thresholds", "router"]

router = APIRouter(prefix="/api/v1/patients/{patient_id}", tags=["thresholds"])


@router.get("/thresholds", response_model=list[ThresholdLine])
async def patient_thresholds(
    request: Request,
    api: Api,
    who: WhoAsks,
    patient_id: PatientId,
    lang: Annotated[str | None, Query(description="fr or en")] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> list[dict[str, Any]]:
    """The single-reading thresholds in force for the patient (programme, then overrides):
    the lines of the charts, each labelled with its rule's title."""
    language = words(language_of(lang, accept_language, api.language))
    async with audited(request, who, "R", "thresholds.read", patient_id) as s:
        key = await the_patient(s, patient_id)
        programme = await s.conn.fetchval(
            "SELECT programme FROM patients WHERE patient_key = $1", key
        )
        overridden = await _override_values(s.conn, key)
    lines = chart_thresholds(api.config, Programme(programme), overridden)
    return [{**line, "rule_title": language.rule_title(line["rule_id"])} for line in lines]


@router.get("/overrides", response_model=list[Override])
async def overrides(request: Request, who: WhoAsks, patient_id: PatientId) -> list[dict[str, Any]]:
    async with audited(request, who, "R", "override.read", patient_id) as s:
        return await _overrides(s.conn, await the_patient(s, patient_id))


@router.put("/overrides/{parameter}", response_model=list[Override])
async def set_override(
    request: Request,
    api: Api,
    who: WhoAsks,
    patient_id: PatientId,
    parameter: ParameterName,
    body: OverrideRequest,
) -> list[dict[str, Any]]:
    async with audited(request, who, "U", "override.set", patient_id) as s:
        patient_key = await the_patient(s, patient_id)
        try:
            await actions.set_override(
                s.conn, api.config, patient_id, parameter, body.value, who.subject, body.note
            )
        except (ConfigurationError, actions.EpisodeActionError) as error:
            raise Refused(400, str(error)) from error
        return await _overrides(s.conn, patient_key)


@router.delete("/overrides/{parameter}", response_model=list[Override])
async def remove_override(
    request: Request, who: WhoAsks, patient_id: PatientId, parameter: ParameterName
) -> list[dict[str, Any]]:
    async with audited(request, who, "D", "override.remove", patient_id) as s:
        patient_key = await the_patient(s, patient_id)
        await actions.remove_override(s.conn, patient_id, parameter, who.subject)
        return await _overrides(s.conn, patient_key)


def chart_thresholds(
    config: AlertConfig, programme: Programme, overrides: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Each threshold of the programme's single-reading rules, as a horizontal line on the
    chart of the kind it reads; enabled rules only, overrides applied."""
    settings = config.programmes[programme]
    lines = []
    for rule_id in settings.rules:
        rule = RULES[rule_id]
        if rule.kind is not RuleKind.READING or len(rule.kinds) != 1:
            continue
        if overrides.get(f"{rule_id}.{ENABLED}", 1) == 0:
            continue
        (kind_code,) = rule.kinds
        for name, parameter in rule.parameters.items():
            match = _THRESHOLD.match(name)
            if match is None:
                continue
            qualified = f"{rule_id}.{name}"
            value = overrides.get(qualified, settings.parameters.get(qualified, parameter.default))
            if math.isnan(value):
                continue
            lines.append(
                {
                    "kind": BY_CODE[kind_code].kind.value,
                    "rule_id": rule_id,
                    "parameter": name,
                    "value": value,
                    "severity": match["severity"],
                    "direction": "below" if name.endswith("below") else "above",
                }
            )
    return lines


_THRESHOLD = re.compile(r"^(?P<severity>red|orange)_(at_or_)?(below|above)$")


async def _override_values(conn: Connection, patient_key: int) -> dict[str, float]:
    """The patient's overrides as the rules read them (a NaN: a bound switched off)."""
    rows = await conn.fetch(
        "SELECT parameter, value FROM threshold_overrides WHERE patient_key = $1", patient_key
    )
    return {r["parameter"]: r["value"] for r in rows}


async def _overrides(conn: Connection, patient_key: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT parameter, value, changed_by, changed_at, note FROM threshold_overrides "
        "WHERE patient_key = $1 ORDER BY parameter",
        patient_key,
    )
    # A NaN an operator stored (a bound switched off) is served as null, as documented.
    return [{**r, "value": None if math.isnan(r["value"]) else r["value"]} for r in rows]
