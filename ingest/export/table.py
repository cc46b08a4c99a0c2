"""A patient's readings for a period as CSV: one row per stored reading."""

from __future__ import annotations

import csv
import io

from devices.catalogue import BY_KIND
from ingest.export.fhir import instant
from ingest.export.patient import PatientExport

__all__ = ["CSV_COLUMNS", "readings_csv"]

CSV_COLUMNS = ("patient_id", "device_id", "kind", "loinc", "value", "unit", "measured_at")


def readings_csv(export: PatientExport) -> str:
    """One row per stored reading, in the catalogue's unit (UCUM), times in UTC."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in export.readings:
        vital = BY_KIND[r.kind]
        writer.writerow(
            (
                export.patient_id,
                r.device_id,
                r.kind.value,
                vital.loinc or "",
                repr(r.value),
                vital.unit,
                instant(r.measured_at),
            )
        )
    return out.getvalue()
