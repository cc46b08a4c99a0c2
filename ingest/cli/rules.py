"""The alert rules: list them, replay one over history, override a patient's threshold."""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter

from ingest.cli.common import Commands, connection_flags, instant, with_connection
from ingest.platform import Connection, Settings

__all__ = ["add_commands"]

log = logging.getLogger("telemon")


def add_commands(commands: Commands) -> None:
    rules = commands.group("rules", "The alert rules: list them, replay one over history.")
    rules.command("list", _rules_list, "Every rule: id, version, severities, source, parameters.")
    p = rules.command(
        "replay",
        _rules_replay,
        "What a rule (or a changed threshold) would have raised over stored history: its "
        "episodes, as the lifecycle groups its findings; writes nothing.",
    )
    connection_flags(p)
    p.add_argument("--rule", required=True)
    p.add_argument("--from", dest="start", required=True, type=instant, help="ISO date or time")
    p.add_argument("--to", dest="end", required=True, type=instant, help="ISO date or time")
    p.add_argument(
        "--set", action="append", default=[], type=_assignment, metavar="PARAMETER=VALUE"
    )
    p.add_argument("--programme", action="append", help="default: the programmes that run it")

    p = commands.command("override", _override, "Set or remove one patient's threshold override.")
    connection_flags(p)
    p.add_argument("--patient", required=True)
    p.add_argument("--parameter", required=True, help="<rule>.<name>, see `telemon rules list`")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--value", type=float)
    group.add_argument("--remove", action="store_true")
    p.add_argument("--by", required=True, help="who changes it")
    p.add_argument("--note")


def _assignment(text: str) -> tuple[str, float]:
    name, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not PARAMETER=VALUE")
    return name, float(value)


def _rules_list(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.catalogue import RULES

    for rule in RULES.values():
        severities = "/".join(s.label for s in rule.severities)
        fixed = "" if rule.disableable else ", cannot be disabled"
        print(f"{rule.id} v{rule.version} [{severities}{fixed}] {rule.title}")
        print(f"    source: {rule.source}")
        for name, parameter in rule.parameters.items():
            mark = "" if parameter.verified else " (design default)"
            default = "none" if math.isnan(parameter.default) else f"{parameter.default:g}"
            print(
                f"    {rule.id}.{name} = {default} {parameter.unit}  {parameter.description}{mark}"
            )
    return 0


def _rules_replay(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.programmes import load_config
    from alerts.replay import replay
    from devices.registry import Programme

    config = load_config(settings.alert_programmes_file)
    programmes = [Programme(p) for p in args.programme] if args.programme else None

    async def work(conn: Connection) -> None:
        report = await replay(
            conn,
            config,
            args.rule,
            int(args.start.timestamp() * 1e6),
            int(args.end.timestamp() * 1e6),
            parameters=dict(args.set),
            programmes=programmes,
        )
        print(
            f"{report.rule_id} from {args.start.isoformat()} to {args.end.isoformat()}: "
            f"{len(report.episodes)} episodes for {report.patients} patients "
            f"({report.readings} readings replayed, nothing written; an episode is resolved "
            "once the rule has been quiet for the cool-down of its severity)"
        )
        print(f"{'day':<12}{'severity':<10}{'episodes':>9}{'patients':>10}")
        for day, severity, episodes, patients in report.by_day():
            print(f"{day:<12}{severity:<10}{episodes:>9}{patients:>10}")
        for patient_id, count in Counter(p for p, _ in report.episodes).most_common(10):
            print(f"  {patient_id}: {count}")

    return with_connection(settings, work)


def _override(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.actions import remove_override, set_override

    async def work(conn: Connection) -> None:
        if args.remove:
            await remove_override(conn, args.patient, args.parameter, args.by, args.note)
        else:
            await set_override(conn, args.patient, args.parameter, args.value, args.by, args.note)
        log.info("override of %s for %s saved", args.parameter, args.patient)

    return with_connection(settings, work)
