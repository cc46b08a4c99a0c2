"""FHIR for real: Bundles and Observations through Kafka and the pipeline, the export
validated by fhir.resources and against the profiles' required elements, the round trip,
and the INS identity visible only to those who need it, every read audited."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from devices.fhir_codes import FHIR_CONTENT_TYPE, LOINC, MDC, UCUM
from devices.identity import IdentityStatus, InsIdentity, InsKind, nir_key, store_identity
from devices.registry import DeviceType, Enrollment, Programme, enroll
from ingest.api.teams import add_member, add_patients, create_team
from tests.feed_support import running_api
from tests.support import Stack, eventually, run_cli

PATIENT = "p-fhir-1"
DEVICES = {
    "oxi-f1": DeviceType.PULSE_OXIMETER,
    "bpm-f1": DeviceType.BLOOD_PRESSURE_MONITOR,
    "scale-f1": DeviceType.SCALE,
    "app-f1": DeviceType.QUESTIONNAIRE_APP,
}
FHIR = [("content-type", FHIR_CONTENT_TYPE.encode())]
NIR = "1850578006048"
VITAL_SIGNS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
ANS = "https://interop.esante.gouv.fr/ig/fhir/mesures/StructureDefinition/"


def observation(
    coding: list[tuple[str, str]], value: dict[str, Any], device: str, at: datetime
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": s, "code": c} for s, c in coding]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": at.isoformat(),
        "device": {"reference": f"Device/{device}"},
        **value,
    }


def quantity(value: float, unit: str) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def gateway_upload(at: datetime) -> dict[str, Any]:
    """A PHG's transaction Bundle: four devices' readings, a BP panel, a low SpO2."""
    bp = observation([(LOINC, "85354-9")], {}, "bpm-f1", at)
    bp["component"] = [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, **quantity(17.9, "kPa")},
        {"code": {"coding": [{"system": MDC, "code": "150022"}]}, **quantity(88, "mm[Hg]")},
    ]
    kind = "https://telemon.example/fhir/CodeSystem/vital-kind"
    resources = [
        {"resourceType": "Patient", "id": PATIENT},
        observation([(LOINC, "59408-5")], quantity(88, "%"), "oxi-f1", at),
        observation([(MDC, "149530")], quantity(104, "/min"), "oxi-f1", at),
        bp,
        observation([(LOINC, "29463-7")], quantity(176.4, "[lb_av]"), "scale-f1", at),
        observation([(kind, "dyspnoea")], {"valueInteger": 3}, "app-f1", at),
        observation([(kind, "callback_requested")], {"valueBoolean": True}, "app-f1", at),
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "identifier": {"value": "upload-f1"},
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for r in resources
        ],
    }


async def stored_readings(stack: Stack) -> list[tuple[str, str, float, datetime]]:
    rows = await (await stack.db()).fetch(
        """
        SELECT d.device_id, k.kind, r.value, r.measured_at FROM readings r
        JOIN devices d USING (device_key) JOIN vital_kinds k ON k.code = r.kind
        ORDER BY 1, 2, 4
        """
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def setup(stack: Stack) -> None:
    async with stack.connection() as conn:
        await enroll(
            conn,
            [
                Enrollment(
                    patient_id=PATIENT, programme=Programme.COVID, device_id=d, device_type=t
                )
                for d, t in DEVICES.items()
            ],
        )
        await create_team(conn, "ward", "Ward")
        await add_member(conn, "ward", "dr-identity", reads_identity=True)
        await add_member(conn, "ward", "dr-plain")
        await add_patients(conn, "ward", [PATIENT])
        identity = InsIdentity(
            status=IdentityStatus.QUALIFIED,
            birth_family_name="MARTIN",
            first_names="Jeanne Marie",
            birth_date=date(1985, 5, 12),
            sex="F",
            birthplace_code="78006",
            ins_matricule=f"{NIR}{nir_key(NIR):02d}",
            ins_kind=InsKind.NIR,
        )
        assert await store_identity(conn, PATIENT, identity)


def check_profiles(bundle: dict[str, Any]) -> None:
    """The required elements of the vital-signs and ANS Mesures de santé profiles."""
    observations = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    for o in observations:
        assert o["status"] == "final"
        assert o["subject"]["reference"] == f"Patient/{PATIENT}"
        assert o["effectiveDateTime"]
        assert o["device"]["reference"].startswith("Device/")  # mandatory for device data
        assert o["meta"]["source"]
        category = o["category"][0]["coding"][0]
        if category["code"] == "vital-signs":
            assert VITAL_SIGNS_PROFILE in o["meta"]["profile"]
            assert any(p.startswith(ANS) for p in o["meta"]["profile"])
            assert {c["system"] for c in o["code"]["coding"]} >= {LOINC, MDC}
            for q in [o.get("valueQuantity")] + [
                c["valueQuantity"] for c in o.get("component", [])
            ]:
                if q is not None:
                    assert q["system"] == UCUM
                    assert q["code"] == q["unit"]
    panels = [o for o in observations if o["code"]["coding"][0]["code"] == "85354-9"]
    assert len(panels) == 1
    assert [c["code"]["coding"][0]["code"] for c in panels[0]["component"]] == ["8480-6", "8462-4"]


async def test_fhir_in_out_round_trip_and_identity(stack: Stack, tmp_path: Path) -> None:
    await setup(stack)
    at = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=123456)
    unknown = observation([(LOINC, "2339-0")], quantity(104, "mg/dL"), "oxi-f1", at)
    async with stack.ingest(), running_api(stack, tmp_path / "dev.pem") as api:
        await stack.produce(
            [
                (PATIENT.encode(), json.dumps(body).encode())
                for body in (gateway_upload(at), unknown)
            ],
            headers=FHIR,
        )
        await stack.wait_drained()

        # In: every reading stored in the catalogue's unit; the unknown code dead-lettered.
        stored = await stored_readings(stack)
        assert [(d, k) for d, k, _, _ in stored] == [
            ("app-f1", "callback_requested"),
            ("app-f1", "dyspnoea"),
            ("bpm-f1", "diastolic_bp"),
            ("bpm-f1", "systolic_bp"),
            ("oxi-f1", "heart_rate"),
            ("oxi-f1", "spo2"),
            ("scale-f1", "body_weight"),
        ]
        assert {m for _, _, _, m in stored} == {at}
        assert dict((k, v) for _, k, v, _ in stored)["body_weight"] == 176.4 * 0.453_592_37
        dead = await stack.read_topic(stack.settings.dead_letter_topic)
        assert len(dead) == 1
        headers = dict(dead[0].headers)
        assert headers["telemon.errors.reason"] == b"unknown_kind"
        assert b"2339-0" in headers["__connect.errors.exception.message"]
        assert headers["content-type"] == FHIR_CONTENT_TYPE.encode()

        async def alerted() -> bool:  # an episode, with its findings
            return bool(await (await stack.db()).fetchval("SELECT count(*) FROM episodes"))

        await eventually(alerted, 30, "the low SpO2's episode")

        # Out: the export validates as FHIR R4 and keeps the profiles' required elements.
        async with api.client("dr-identity") as reader, api.client("dr-plain") as plain:
            everything = f"/fhir/Patient/{PATIENT}/$everything"
            response = await reader.get(everything)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith(FHIR_CONTENT_TYPE)
            bundle = response.json()
            Bundle.model_validate(bundle)
            for entry in bundle["entry"]:
                resource = entry["resource"]
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            check_profiles(bundle)
            types = [e["resource"]["resourceType"] for e in bundle["entry"]]
            assert types.count("Observation") == 6  # the BP pair is one panel
            assert types.count("Device") == 4
            assert types.count("DetectedIssue") == types.count("Communication") >= 1
            patient = bundle["entry"][0]["resource"]
            ins = [i for i in patient["identifier"] if i["system"] == "urn:oid:1.2.250.1.213.1.4.8"]
            assert ins[0]["value"] == f"{NIR}{nir_key(NIR):02d}"
            assert patient["name"][0]["family"] == "MARTIN"

            # Identity: only for the member who reads identities; every attempt audited.
            plain_bundle = (await plain.get(everything)).json()
            plain_patient = plain_bundle["entry"][0]["resource"]
            assert "name" not in plain_patient
            assert len(plain_patient["identifier"]) == 1
            assert (await plain.get(f"/api/v1/patients/{PATIENT}/identity")).status_code == 403
            shown = (await reader.get(f"/api/v1/patients/{PATIENT}/identity")).json()
            assert shown["status"] == "qualified"
            assert shown["ins_kind"] == InsKind.NIR.value
            reads = await (await stack.db()).fetch(
                "SELECT agent, outcome FROM audit_events WHERE subtype = 'identity.read' "
                "ORDER BY id"
            )
            assert [(r["agent"], r["outcome"]) for r in reads] == [
                ("dr-identity", 0),  # the export
                ("dr-plain", 4),  # refused
                ("dr-identity", 0),
            ]

            # CSV, from the API and from the CLI: one row per stored reading.
            api_csv = (await reader.get(f"/api/v1/patients/{PATIENT}/readings.csv")).text
            rows = list(csv.DictReader(io.StringIO(api_csv)))
            assert len(rows) == len(stored)
            assert {r["unit"] for r in rows if r["kind"] == "systolic_bp"} == {"mm[Hg]"}
            day = timedelta(days=1)
            cli_csv = await run_cli(
                stack,
                "export",
                PATIENT,
                "--from",
                (at - day).isoformat(),
                "--to",
                (at + day).isoformat(),
                "--format",
                "csv",
            )
            assert cli_csv.splitlines()[-len(rows) - 1 :] == api_csv.splitlines()

        # Round trip: the exported Bundle, re-ingested, gives the same stored readings.
        async with stack.connection() as conn:
            await conn.execute("DELETE FROM readings")
        assert await stored_readings(stack) == []
        await stack.produce([(PATIENT.encode(), json.dumps(bundle).encode())], headers=FHIR)
        await stack.wait_drained()
        assert await stored_readings(stack) == stored
