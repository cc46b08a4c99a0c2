"""`telemon report`: the evidence figures as JSON, CSV and a self-contained HTML page.

The JSON is canonical (sorted keys) and its SHA-256 is printed and shown in
the page, so a report can be cited and checked. Charts are matplotlib PNGs
embedded in the page: one file to send or archive.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt

from ingest.platform import Settings

__all__ = ["report_configuration", "write_report"]

_COLOURS = {"red": "#c62828", "orange": "#ef6c00", "info": "#546e7a"}


def report_configuration(settings: Settings) -> dict[str, Any]:
    """What produced the figures: where they were read, and which rules raised the alerts."""
    programmes = (
        settings.alert_programmes_file.read_bytes()
        if settings.alert_programmes_file
        else (resources.files("alerts") / "programmes.toml").read_bytes()
    )
    return {
        "database_schema": settings.database_schema,
        "consumer_group": settings.consumer_group,
        "readings_topic": settings.readings_topic,
        "alert_programmes_sha256": hashlib.sha256(programmes).hexdigest(),
    }


def write_report(figures: dict[str, Any], configuration: dict[str, Any], out: Path) -> str:
    """Write report.json, report.csv and report.html into `out`; returns the JSON's SHA-256."""
    out.mkdir(parents=True, exist_ok=True)
    document = {
        **figures,
        "produced_by": {"telemon": metadata.version("telemon"), "configuration": configuration},
    }
    text = json.dumps(document, sort_keys=True, indent=1, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    (out / "report.json").write_text(text)
    with (out / "report.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["figure", "value"])
        writer.writerows(_flatten(figures))
    (out / "report.html").write_text(_page(document, digest))
    return digest


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flatten(v, f"{prefix}{k}.")]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [row for i, v in enumerate(value) for row in _flatten(v, f"{prefix}{i}.")]
    if isinstance(value, list):
        return [(prefix.rstrip("."), " ".join(map(str, value)))]
    return [(prefix.rstrip("."), value)]


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return (
        f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
    )


def _bar(labels: list[str], values: list[float], title: str, colour: str = "#1565c0") -> str:
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.bar(labels, values, color=colour)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _png(fig)


def _charts(d: dict[str, Any]) -> list[str]:
    charts = []
    active = d["active_file"]
    if active:
        charts.append(
            _bar(
                list(active),
                [v["mean_active_file"] for v in active.values()],
                "Mean active file per programme",
            )
        )
    month_1 = d["adherence"]["month_1"]["per_patient"]
    if month_1:
        fig, ax = plt.subplots(figsize=(7, 2.8))
        ax.hist([100 * p["adherence"] for p in month_1], bins=10, range=(0, 100), color="#2e7d32")
        ax.axvline(50, color=_COLOURS["red"], linestyle="--")
        ax.set_title("Adherence, month 1 (% of days with a transmission)", fontsize=10)
        charts.append(_png(fig))
    rates = d["alerts"]["findings_per_100_patient_days"]
    if rates:
        fig, ax = plt.subplots(figsize=(7, 3))
        bottom = [0.0] * len(rates)
        for severity, colour in _COLOURS.items():
            heights = [rates[rule].get(severity, 0.0) for rule in rates]
            ax.bar(list(rates), heights, bottom=bottom, color=colour, label=severity)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.legend(fontsize=8)
        ax.set_title("Findings per 100 patient-days, by rule and severity", fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        charts.append(_png(fig))
    news2 = d["alerts"]["news2"]
    if news2["scored_sets"]:
        by_score = news2["by_score"]
        title = (
            f"NEWS2 score of every scored set ({news2['scored_sets']:,}; "
            f"{news2['share_5_or_more']:.1%} at 5 or more, {news2['share_7_or_more']:.1%} at 7 "
            "or more)"
        )
        charts.append(_bar(list(by_score), list(by_score.values()), title, "#6a1b9a"))
    return charts


def _table(rows: list[dict[str, Any]], red: str | None = None) -> str:
    """Rows as a table whose header names every column any row has (a missing cell is
    empty), so no row has more cells than its header."""
    if not rows:
        return "<p>None.</p>"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in columns)
    body = ""
    for row in rows:
        cells = ""
        for key in columns:
            value = row.get(key, "")
            alarm = key == red and value not in (0, None, "")
            style = ' class="red"' if alarm else ""
            cells += f"<td{style}>{html.escape(str(value))}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(d: dict[str, Any], digest: str) -> str:
    period = d["period"]
    technical = d["technical"]
    handling = [
        {"severity": s, **{f"ack {k}": v for k, v in h["acknowledge"].items()},
         "within target": h["acknowledged_within_target"], "target s": h["target_s"],
         **{f"resolve {k}": v for k, v in h["resolve"].items() if k != "count"}}
        for s, h in d["alerts"]["handling_seconds"].items()
    ]  # fmt: skip
    adherence = [
        {"month": m.removeprefix("month_"), "patients": a["patients"],
         "share >= 50 %": a["share_at_or_above_50pct"], "below 50 %": ", ".join(a["below_50pct"]),
         "median measures / expected": a["median_measures_adherence"]}
        for m, a in d["adherence"].items()
    ]  # fmt: skip
    sections = [
        f"<h1>telemon evidence report</h1><p>{html.escape(period['from'])} to "
        f"{html.escape(period['to'])}, programme: {html.escape(str(period['programme'] or 'all'))}"
        f"</p><p class=muted>SHA-256 of report.json: <code>{digest}</code></p>",
        "<h2>Charts</h2>" + "".join(_charts(d)),
        "<h2>Active file</h2>"
        + _table([{"programme": k, **v} for k, v in d["active_file"].items()]),
        "<h2>Adherence</h2>" + _table(adherence),
        f"<h2>Episodes</h2><p>{d['alerts']['episodes_opened']} opened over "
        f"{d['alerts']['patient_days']} patient-days.</p>"
        + _table(
            [
                {"job": job, **rates}
                for job, rates in d["alerts"]["episodes_per_100_patient_days"].items()
            ]
        )
        + "<h3>Handling times (seconds)</h3>"
        + _table(handling)
        + "<h3>Dispositions</h3>"
        + _table(
            [{"disposition": k, "episodes": v} for k, v in d["alerts"]["dispositions"].items()]
        )
        + "<h3>Episodes that led to a clinical action</h3>"
        + _table(
            [
                {"by": group, "of": key, **figures}
                for group, by in d["alerts"]["clinical_action"].items()
                for key, figures in by.items()
            ]
        )
        + "<h3>Findings per 100 patient-days, by rule</h3>"
        + _table(
            [{"rule": r, **v} for r, v in d["alerts"]["findings_per_100_patient_days"].items()]
        ),
        "<h2>Platform</h2>"
        + _table(
            [{**technical["throughput_readings_per_s"], "duplicates": technical["duplicates"]}]
        )
        + _table([{"latency": k, **v} for k, v in technical["latency_s"].items()])
        + _table(
            [{"reason": k, "dead letters": v} for k, v in technical["rejected_by_reason"].items()]
        )
        + "<h3>Zero-loss reconciliation, per partition</h3>"
        + _table(technical["reconciliation"], red="unaccounted_offsets")
        + "<h3>Dead letters replayed (moved from dead-lettered to stored)</h3>"
        + _table([technical["dead_letter_replays"]]),
        "<h2>Produced by</h2><pre>"
        + html.escape(json.dumps(d["produced_by"], indent=1, sort_keys=True))
        + "</pre>",
    ]
    style = (
        "body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .5em}"
        "td.red{background:#c62828;color:#fff}.muted{color:#666}img{display:block;margin:.5em 0}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>telemon evidence report</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )
