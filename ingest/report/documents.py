"""`telemon report`: the evidence figures as JSON, CSV and a self-contained HTML page, in
French or English, and the reimbursement extracts (usage.csv, follow_up.csv).

The JSON is canonical (sorted keys, indented by one space, UTF-8) and its SHA-256 is
printed and shown in the page, so a report can be cited and checked. Charts are matplotlib
PNGs embedded in the page: one file to send or archive. Every table's header names every
cell of its rows.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import matplotlib
import msgspec

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt

from alerts.messages import Words
from ingest.platform import Settings
from ingest.report.extract import write_follow_up, write_usage
from ingest.report.reimbursement import Reimbursement, Tariffs

__all__ = ["FAILING_SHOWN", "ReportPage", "report_configuration", "write_report"]

# The patients who failed a check that the page names, per month of follow-up (report.json
# and follow_up.csv name them all; a page of a million rows helps no one).
FAILING_SHOWN = 100
_CANONICAL = msgspec.json.Encoder(order="sorted", enc_hook=str)
_COLOURS = {"red": "#c62828", "orange": "#ef6c00", "info": "#546e7a"}


def report_configuration(settings: Settings, tariffs: Tariffs) -> dict[str, Any]:
    """What produced the figures: where they were read, which rules raised the alerts, and
    which tariffs priced the forfaits."""
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
        "tariffs_sha256": tariffs.sha256,
    }


def write_report(
    figures: dict[str, Any],
    evidence: Reimbursement,
    configuration: dict[str, Any],
    out: Path,
    words: Words,
    ins: Mapping[str, str] | None = None,
) -> str:
    """Write report.json, report.csv, report.html, usage.csv and follow_up.csv into `out`;
    returns the JSON's SHA-256."""
    out.mkdir(parents=True, exist_ok=True)
    document = {
        **figures,
        "produced_by": {"telemon": metadata.version("telemon"), "configuration": configuration},
    }
    canonical = msgspec.json.format(_CANONICAL.encode(document), indent=1)
    digest = hashlib.sha256(canonical).hexdigest()
    (out / "report.json").write_bytes(canonical)
    with (out / "report.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["figure", "value"])
        writer.writerows(_flatten(figures))
    (out / "report.html").write_text(ReportPage(document, digest, words).html())
    write_usage(out / "usage.csv", evidence.patient_months, evidence.more_than_percent, ins)
    write_follow_up(out / "follow_up.csv", evidence.follow_up_months, evidence.more_than_percent)
    return digest


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every figure as its dotted path and value (a list of scalars as one value). The
    patients who failed a check are counted: follow_up.csv has a row for each, and a
    million of them would pass a spreadsheet's last row."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "failed":
                yield f"{prefix}{k}", len(v)
            else:
                yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}{i}.")
    elif isinstance(value, list):
        yield prefix.rstrip("."), " ".join(map(str, value))
    else:
        yield prefix.rstrip("."), value


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return (
        f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
    )


class ReportPage:
    """The report as one HTML page, in the words of one language."""

    def __init__(self, document: dict[str, Any], digest: str, words: Words) -> None:
        self.d = document
        self.digest = digest
        self.words = words
        self.say = words.section("report")

    def html(self) -> str:
        d, say = self.d, self.say
        period = d["period"]
        alerts = d["alerts"]
        sections = [
            f"<h1>{html.escape(say['title'])}</h1><p>"
            + html.escape(
                say["period"].format(
                    start=_moment(period["from"]),
                    end=_moment(period["to"]),
                    programme=self._programme(period["programme"]) or say["all_programmes"],
                )
            )
            + f"</p><p class=muted>{html.escape(say['digest'])} <code>{self.digest}</code></p>",
            f"<h2>{html.escape(say['charts'])}</h2>" + "".join(self._charts()),
            f"<h2>{html.escape(say['active_file'])}</h2>"
            + self.table(
                [{"programme": self._programme(k), **v} for k, v in d["active_file"].items()]
            ),
            self._reimbursement(),
            self._checks(),
            f"<h2>{html.escape(say['episodes'])}</h2><p>"
            + html.escape(
                say["episodes_opened"].format(
                    opened=alerts["episodes_opened"], days=self.words.number(alerts["patient_days"])
                )
            )
            + "</p>"
            + self.table(
                [
                    {"job": self.words.section("job").get(job, job), **self._severities(rates)}
                    for job, rates in alerts["episodes_per_100_patient_days"].items()
                ]
            )
            + f"<h3>{html.escape(say['handling'])}</h3>"
            + self.table(self._handling())
            + f"<h3>{html.escape(say['dispositions'])}</h3>"
            + self.table(
                [
                    {
                        "disposition": self.words.section("disposition").get(k, k),
                        "episodes": v,
                    }
                    for k, v in alerts["dispositions"].items()
                ]
            )
            + f"<h3>{html.escape(say['clinical_action'])}</h3>"
            + self.table(
                [
                    {"by": group, "of": self._name(key), **figures}
                    for group, by in alerts["clinical_action"].items()
                    for key, figures in by.items()
                ]
            )
            + f"<h3>{html.escape(say['findings_per_rule'])}</h3>"
            + self.table(
                [
                    {"rule": self.words.rule_title(r), **self._severities(v)}
                    for r, v in alerts["findings_per_100_patient_days"].items()
                ]
            ),
            self._platform(),
            f"<h2>{html.escape(say['produced_by'])}</h2><pre>"
            + html.escape(json.dumps(d["produced_by"], indent=1, sort_keys=True))
            + "</pre>",
        ]
        style = (
            "body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}"
            "table{border-collapse:collapse;margin:.5em 0}"
            "td,th{border:1px solid #ccc;padding:.2em .5em}"
            "td.red{background:#c62828;color:#fff}.muted{color:#666}"
            "img{display:block;margin:.5em 0;max-width:100%}"
        )
        return (
            f"<!doctype html><html lang={self.words.language}><head><meta charset=utf-8>"
            f"<title>telemon: {html.escape(say['title'])}</title><style>{style}</style></head>"
            f"<body>{''.join(sections)}</body></html>"
        )

    def _name(self, key: str) -> str:
        """A rule's title, or a programme's name."""
        return self.words.section("programme").get(key) or self.words.rule_title(key)

    def _programme(self, name: str | None) -> str | None:
        return self.words.section("programme").get(name, name) if name else None

    def _severities(self, values: dict[str, Any]) -> dict[str, Any]:
        return {self.words.section("severity").get(k, k): v for k, v in values.items()}

    def _reimbursement(self) -> str:
        say = self.say
        evidence = self.d["reimbursement"]
        rows = [
            {
                "month": month["month"],
                "programme": self._programme(programme),
                "mean_active_file": self.words.number(p["mean_active_file"], 2),
                "tier": p["tier"],
                "tier_share": p["tier_share"],
                "patients": p["patients"],
                "eligible": p["eligible"],
                "not_eligible": "; ".join(
                    f"{self.words.section('reason').get(r, r)}: {n}"
                    for r, n in p["not_eligible_by_reason"].items()
                ),
                "operator_eur": f"{p['operator_eur']:.2f}",
                "exploitant_eur": f"{p['exploitant_eur']:.2f}",
            }
            for month in evidence["calendar_months"]
            for programme, p in month["programmes"].items()
        ]
        body = (
            self.table(rows)
            if evidence["calendar_months"]
            else f"<p>{html.escape(say['no_whole_month'])}</p>"
        )
        return (
            f"<h2>{html.escape(say['reimbursement'])}</h2>"
            f"<p>{html.escape(say['reimbursement_intro'])}</p>{body}"
        )

    def _checks(self) -> str:
        say = self.say
        evidence = self.d["reimbursement"]
        checks = evidence["adherence_checks"]
        summary = [
            {
                "check": month.removeprefix("month_"),
                "checked": c["checked"],
                "passed": c["passed"],
                "failed": len(c["failed"]),
            }
            for month, c in checks.items()
        ]
        measure = self.words.section("measure")
        failing = [
            {
                "check": month.removeprefix("month_"),
                "patient": f["patient_id"],
                "programme": self._programme(f["programme"]),
                "measures": ", ".join(
                    f"{measure.get(m, m)} {v['received']}/{v['expected']}"
                    for m, v in f["measures"].items()
                ),
            }
            for month, c in checks.items()
            for f in c["failed"][:FAILING_SHOWN]
        ]
        more = sum(max(0, len(c["failed"]) - FAILING_SHOWN) for c in checks.values())
        intro = say["checks_intro"].format(percent=self.words.number(evidence["more_than_percent"]))
        return (
            f"<h2>{html.escape(say['adherence_checks'])}</h2><p>{html.escape(intro)}</p>"
            + self.table(summary)
            + f"<h3>{html.escape(say['failing'])}</h3>"
            + self.table(failing, red="measures")
            + (f"<p>{html.escape(say['failing_more'].format(more=more))}</p>" if more else "")
        )

    def _handling(self) -> list[dict[str, Any]]:
        return [
            {
                "severity": self.words.section("severity").get(s, s),
                **{f"ack {k}": v for k, v in h["acknowledge"].items()},
                "within target": h["acknowledged_within_target"],
                "target s": h["target_s"],
                **{f"resolve {k}": v for k, v in h["resolve"].items() if k != "count"},
            }
            for s, h in self.d["alerts"]["handling_seconds"].items()
        ]

    def _platform(self) -> str:
        technical = self.d["technical"]
        return (
            f"<h2>{html.escape(self.say['platform'])}</h2>"
            + self.table(
                [{**technical["throughput_readings_per_s"], "duplicates": technical["duplicates"]}]
            )
            + self.table([{"latency": k, **v} for k, v in technical["latency_s"].items()])
            + self.table(
                [
                    {"reason": k, "dead letters": v}
                    for k, v in technical["rejected_by_reason"].items()
                ]
            )
            + f"<h3>{html.escape(self.say['reconciliation'])}</h3>"
            + self.table(technical["reconciliation"], red="unaccounted_offsets")
            + f"<h3>{html.escape(self.say['dead_letter_replays'])}</h3>"
            + self.table([technical["dead_letter_replays"]])
        )

    def _charts(self) -> list[str]:
        say, d = self.say, self.d
        charts = []
        active = d["active_file"]
        if active:
            charts.append(
                _bars(
                    [self._programme(p) or p for p in active],
                    [v["mean_active_file"] for v in active.values()],
                    say["chart_active_file"],
                )
            )
        checks = d["reimbursement"]["adherence_checks"]
        if any(c["checked"] for c in checks.values()):
            fig, ax = plt.subplots(figsize=(7, 1.8))
            labels = [f"M{m.removeprefix('month_')}" for m in checks]
            passed = [c["passed"] for c in checks.values()]
            failed = [len(c["failed"]) for c in checks.values()]
            ax.barh(labels, passed, color="#2e7d32", label=self.words.section("column")["passed"])
            ax.barh(
                labels,
                failed,
                left=passed,
                color=_COLOURS["red"],
                label=self.words.section("column")["failed"],
            )
            ax.legend(fontsize=8)
            ax.set_title(say["chart_checks"], fontsize=10)
            charts.append(_png(fig))
        rates = d["alerts"]["findings_per_100_patient_days"]
        if rates:
            # Horizontal bars: the rules' names, however many, each on its own line.
            fig, ax = plt.subplots(figsize=(7, 0.8 + 0.28 * len(rates)))
            names = [self.words.rule_title(rule) for rule in rates]
            left = [0.0] * len(rates)
            for severity, colour in _COLOURS.items():
                widths = [rates[rule].get(severity, 0.0) for rule in rates]
                label = self.words.section("severity")[severity]
                ax.barh(names, widths, left=left, color=colour, label=label)
                left = [a + b for a, b in zip(left, widths, strict=True)]
            ax.invert_yaxis()
            ax.tick_params(axis="y", labelsize=8)
            ax.legend(fontsize=8)
            ax.set_title(say["chart_findings"], fontsize=10)
            charts.append(_png(fig))
        news2 = d["alerts"]["news2"]
        if news2["scored_sets"]:
            by_score = news2["by_score"]
            title = say["chart_news2"].format(
                sets=f"{news2['scored_sets']:,}",
                five=f"{news2['share_5_or_more']:.1%}",
                seven=f"{news2['share_7_or_more']:.1%}",
            )
            charts.append(_bars(list(by_score), list(by_score.values()), title, "#6a1b9a"))
        return charts

    def table(self, rows: list[dict[str, Any]], red: str | None = None) -> str:
        """Rows as a table whose header names every column any row has (a missing cell is
        empty), so no row has more cells than its header."""
        if not rows:
            return f"<p>{html.escape(self.say['none'])}</p>"
        columns = list(dict.fromkeys(key for row in rows for key in row))
        named = self.words.section("column")
        head = "".join(f"<th>{html.escape(named.get(k, k))}</th>" for k in columns)
        body = ""
        for row in rows:
            cells = ""
            for key in columns:
                value = row.get(key, "")
                alarm = key == red and value not in (0, None, "")
                style = ' class="red"' if alarm else ""
                text = self.words.number(value, 2) if isinstance(value, float) else str(value)
                cells += f"<td{style}>{html.escape(text)}</td>"
            body += f"<tr>{cells}</tr>"
        return f"<table><tr>{head}</tr>{body}</table>"


def _moment(iso: str) -> str:
    """An instant of the period as its date and time, with its offset."""
    moment = datetime.fromisoformat(iso)
    return f"{moment:%Y-%m-%d %H:%M} ({moment:%z})"


def _bars(labels: list[str], values: list[float], title: str, colour: str = "#1565c0") -> str:
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.bar(labels, values, color=colour)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    return _png(fig)
