"""Dead letters: list them, show one, replay them (or say what a replay would do)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import getpass
import json
import logging
import sys
from collections import Counter
from typing import Any

from devices.contract import RejectReason
from ingest.cli.common import Commands, connection_flags, instant, require_connections
from ingest.platform import Connection, Settings, TelemonError, connect

__all__ = ["add_commands"]

log = logging.getLogger("telemon")


def add_commands(commands: Commands) -> None:
    group = commands.group(
        "dead-letters", "Rejected records: list them, show one, replay them (docs/operations.md)."
    )
    p = group.command("list", _list, "Dead letters matching the filters, and a count by reason.")
    connection_flags(p)
    _filters(p)
    p.add_argument("--state", choices=_states(), default="any")
    p.add_argument("--limit", type=_positive, default=100, help="rows shown (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = group.command(
        "show", _show, "One dead letter: the original record, its headers, what became of it."
    )
    connection_flags(p)
    p.add_argument("id", type=_positive)
    p.add_argument("--json", action="store_true")

    p = group.command(
        "replay",
        _replay,
        "Send dead letters back through the pipeline (by ids, or by filters: the ones not "
        "replayed yet); each is marked stored, duplicate or rejected again.",
    )
    connection_flags(p)
    p.add_argument("ids", nargs="*", type=_positive, help="dead-letter ids")
    _filters(p)
    p.add_argument("--limit", type=_positive, default=1000, help="at most this many (1000)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be stored, duplicate or rejected again; change nothing",
    )
    p.add_argument("--no-wait", action="store_true", help="do not wait for the outcomes")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the outcomes (60)"
    )


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", choices=[r.value for r in RejectReason], metavar="REASON")
    p.add_argument("--patient")
    p.add_argument("--device")
    p.add_argument("--from", dest="since", type=instant, help="rejected at or after (ISO)")
    p.add_argument("--to", dest="until", type=instant, help="rejected before (ISO)")
    p.add_argument("--topic", help="of the original record")
    p.add_argument("--partition", type=int)
    p.add_argument("--from-offset", type=int)
    p.add_argument("--to-offset", type=int, help="inclusive")


def _states() -> list[str]:
    from ingest.pipeline.dead_letter_search import State

    return [s.value for s in State]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _selection(args: argparse.Namespace, state: str, ids: list[int] | None = None) -> Any:
    from ingest.pipeline.dead_letter_search import Selection, State

    return Selection(
        ids=ids or (),
        reason=args.reason,
        patient=args.patient,
        device=args.device,
        since=args.since,
        until=args.until,
        topic=args.topic,
        partition=args.partition,
        from_offset=args.from_offset,
        to_offset=args.to_offset,
        state=State(state),
        limit=args.limit,
    )


def _run(settings: Settings, work: Any, *, kafka: bool = False) -> int:
    """`work(conn)` on one connection; its return value is the exit code."""
    require_connections(settings, kafka=kafka)

    async def run() -> int:
        assert settings.database_url is not None
        conn = await connect(settings.database_url, settings.database_schema)
        try:
            code: int = await work(conn)
            return code
        finally:
            await conn.close()

    return asyncio.run(run())


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline.dead_letter_search import count_by_reason, find

    selection = _selection(args, args.state)

    async def work(conn: Connection) -> int:
        letters = await find(conn, selection)
        counts = await count_by_reason(conn, selection)
        if args.json:
            for letter in letters:
                print(json.dumps(_summary(letter), default=str))
            return 0
        print(
            f"{'id':>8}  {'rejected at (UTC)':<20} {'reason':<22}{'patient':<14}{'device':<14}"
            f"{'source':<18}{'state'}"
        )
        for d in letters:
            where = f"{d.partition}/{d.offset}" + (
                f"#{d.reading_index}" if d.reading_index is not None else ""
            )
            print(
                f"{d.id:>8}  {d.rejected_at:%Y-%m-%d %H:%M:%S}  {d.reason:<22}"
                f"{d.patient_id or '-':<14}{d.device_id or '-':<14}{where:<18}{_state(d)}"
            )
        total = sum(counts.values())
        if total > len(letters):
            print(f"(the first {len(letters)} of {total}; --limit shows more)")
        by_reason = ", ".join(f"{reason} {n}" for reason, n in counts.items()) or "none"
        print(f"{total} dead letters by reason: {by_reason}")
        return 0

    return _run(settings, work)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline.dead_letter_search import history

    async def work(conn: Connection) -> int:
        found = await history(conn, args.id)
        if found is None:
            raise TelemonError(f"no dead letter {args.id}")
        d = found.letter
        shown = {
            **_summary(d),
            "record": {
                "topic": d.topic,
                "partition": d.partition,
                "offset": d.offset,
                "timestamp_ms": d.timestamp_ms,
                "key": _text(d.key),
                "value": _text(d.value),
                "headers": {name: _text(value) for name, value in d.headers},
            },
            "replays_rejected_again": [_summary(b) for b in found.born],
            "readings_stored_by_replay": found.stored,
        }
        if args.json:
            print(json.dumps(shown, default=str))
            return 0
        print(f"dead letter {d.id}: {d.reason} ({_state(d)})")
        print(f"  detail      {d.detail}")
        print(f"  source      {d.topic} partition {d.partition} offset {d.offset}", end="")
        print(f", reading {d.reading_index}" if d.reading_index is not None else ", whole message")
        print(f"  patient     {d.patient_id or '-'}   device {d.device_id or '-'}")
        print(f"  message id  {d.message_id or '-'}")
        print(f"  rejected at {d.rejected_at.isoformat()}")
        if d.parked_until is not None:
            print(f"  parked      until {d.parked_until.isoformat()}", end="")
            expired = d.park_expired_at
            print(f", expired at {expired.isoformat()}" if expired is not None else "")
        if d.replay_of is not None:
            print(f"  born of     the replay of dead letter {d.replay_of}")
        if d.replayed_at is not None:
            print(
                f"  replayed    {d.replayed_at.isoformat()} by {d.replayed_by}: "
                f"{_outcome(d)} (record {d.replay_partition}/{d.replay_offset})"
            )
        print(f"  key         {_text(d.key)}")
        print(f"  value       {_text(d.value)}")
        for name, value in d.headers:
            print(f"  header      {name}: {_text(value)}")
        for b in found.born:
            print(f"  rejected again as dead letter {b.id}: {b.reason}: {b.detail}")
        for r in found.stored:
            print(f"  stored      {r['kind']} {r['value']:g} {r['unit']} at {r['measured_at']}")
        return 0

    return _run(settings, work)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from devices.decode import Decoder
    from ingest.pipeline.dead_letter_search import find, outcomes
    from ingest.pipeline.replay_requests import audit_replays, dry_run, send_replays
    from ingest.platform import SystemClock, make_producer

    ids = sorted(set(args.ids))
    selection = _selection(args, "any" if ids else "open", ids)
    if not selection.narrowed:
        print(
            "telemon dead-letters replay: name dead-letter ids or at least one filter "
            "(--reason, --patient, --device, --from, --to, --topic, --partition, --*-offset)",
            file=sys.stderr,
        )
        return 2
    clock = SystemClock()
    agent = f"operator:{getpass.getuser()}"

    async def work(conn: Connection) -> int:
        letters = await find(conn, selection)
        missing = set(ids) - {d.id for d in letters}
        if missing:
            raise TelemonError(f"no dead letter {', '.join(map(str, sorted(missing)))}")
        for d in letters:
            if d.replayed_at is not None:
                print(f"{d.id:>8}  skipped: already replayed ({_outcome(d)})")
        letters = [d for d in letters if d.replayed_at is None]
        if not letters:
            print("nothing to replay")
            return 0
        if args.dry_run:
            decoder = Decoder(
                max_message_bytes=settings.max_message_bytes,
                future_tolerance_s=settings.future_tolerance_s,
            )
            results = await dry_run(conn, letters, decoder, clock.now_ms())
            for d, result in results:
                why = f": {result.reason}" if result.reason else ""
                print(f"{d.id:>8}  would be {result.outcome.value}{why} ({result.detail})")
            counts = Counter(result.outcome.value for _, result in results)
            print(f"dry run, nothing changed: {_counts(counts)}")
            return 0
        producer = make_producer(settings)
        await producer.start()
        try:
            sent = await send_replays(
                producer, settings.readings_topic, letters, agent, clock.now_ms()
            )
        finally:
            await producer.stop()
        await audit_replays(conn, letters, agent, "telemon-cli")
        print(f"sent {len(sent)} records replaying {len(letters)} dead letters")
        if args.no_wait:
            return 0
        wanted = [d.id for d in letters]
        deadline = clock.monotonic() + args.timeout
        done = await outcomes(conn, wanted)
        while len(done) < len(wanted) and clock.monotonic() < deadline:
            await asyncio.sleep(0.5)
            done = await outcomes(conn, wanted)
        for letter_id in wanted:
            if letter_id in done:
                print(f"{letter_id:>8}  {_outcome(done[letter_id])}")
        print(f"replayed: {_counts(Counter(d.replay_outcome for d in done.values()))}")
        if len(done) < len(wanted):
            print(
                f"{len(wanted) - len(done)} not consumed within {args.timeout:g} s: is "
                "`telemon ingest` running? Their outcomes will be recorded when it consumes "
                "them (`telemon dead-letters list --state replayed`).",
                file=sys.stderr,
            )
            return 1
        return 0

    return _run(settings, work, kafka=not args.dry_run)


def _summary(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "rejected_at": d.rejected_at,
        "reason": d.reason,
        "detail": d.detail,
        "patient_id": d.patient_id,
        "device_id": d.device_id,
        "message_id": d.message_id,
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
        "reading_index": d.reading_index,
        "state": d.state.value,
        "parked_until": d.parked_until,
        "park_expired_at": d.park_expired_at,
        "replay_of": d.replay_of,
        "replayed_at": d.replayed_at,
        "replayed_by": d.replayed_by,
        "replay_outcome": d.replay_outcome,
        "replay_reason": d.replay_reason,
        "replay_detail": d.replay_detail,
        "replay_record": None
        if d.replay_partition is None
        else {"partition": d.replay_partition, "offset": d.replay_offset},
    }


def _state(d: Any) -> str:
    """In short: open, parked, expired, or replayed and its outcome."""
    return f"replayed: {d.replay_outcome}" if d.replayed_at is not None else str(d.state.value)


def _outcome(d: Any) -> str:
    if d.replay_outcome == "rejected":
        return f"replayed: rejected again ({d.replay_reason or 'see detail'}): {d.replay_detail}"
    return f"replayed: {d.replay_outcome}"


def _counts(counts: Counter[Any]) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "none"


def _text(data: bytes | None) -> str | None:
    """UTF-8 text as is; anything else as base64, said so."""
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()
