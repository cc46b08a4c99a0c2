"""The evidence report: a period's figures from PostgreSQL (figures, reimbursement),
written as JSON with its SHA-256, CSV, a self-contained HTML page and the reimbursement
extracts (documents, extract)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alerts.messages import Language, words
from alerts.programmes import load_config
from devices.identity import read_ins_as_operator
from ingest.platform import Connection, Settings
from ingest.report.documents import report_configuration, write_report
from ingest.report.figures import ACK_TARGET_S, Period, gather_figures
from ingest.report.reimbursement import load_tariffs

__all__ = ["ACK_TARGET_S", "Period", "gather_figures", "make_report", "write_report"]


async def make_report(
    conn: Connection,
    settings: Settings,
    period: Period,
    out: Path,
    *,
    now_us: int,
    language: Language | None = None,
    with_identity: bool = False,
) -> str:
    """The report of a period into `out`, in `language` (default: the deployment's); the
    usage extract names patients by their INS too when `with_identity` (each read
    audited). Returns the SHA-256 of report.json."""
    config = load_config(settings.alert_programmes_file)
    tariffs = load_tariffs(settings.tariffs_file)
    with _collector_paused():
        figures, evidence = await gather_figures(conn, period, config, tariffs, now_us)
        ins = None
        if with_identity:
            ins = await read_ins_as_operator(
                conn, sorted({r.patient_id for r in evidence.patient_months})
            )
        return write_report(
            figures,
            evidence,
            report_configuration(settings, tariffs),
            out,
            words(language or settings.language),
            ins,
        )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while the report is built: a million patients'
    months are millions of small objects, none in a cycle, and each collection of the
    oldest generation walks all of them again."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
