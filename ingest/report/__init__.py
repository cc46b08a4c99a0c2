"""The evidence report: a period's figures from PostgreSQL (figures), written as JSON with
its SHA-256, CSV and a self-contained HTML page (documents)."""

from ingest.report.documents import report_configuration, write_report
from ingest.report.figures import ACK_TARGET_S, Period, gather_figures

__all__ = ["ACK_TARGET_S", "Period", "gather_figures", "report_configuration", "write_report"]
