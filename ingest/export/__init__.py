"""A patient's data out: a FHIR R4 Bundle or CSV, for the API and `telemon export`."""

from ingest.export.fhir import fhir_bundle, fhir_id
from ingest.export.patient import (
    ExportedEpisode,
    ExportedFinding,
    ExportedReading,
    PatientExport,
    load_export,
)
from ingest.export.table import CSV_COLUMNS, readings_csv

__all__ = [
    "CSV_COLUMNS",
    "ExportedEpisode",
    "ExportedFinding",
    "ExportedReading",
    "PatientExport",
    "fhir_bundle",
    "fhir_id",
    "load_export",
    "readings_csv",
]
