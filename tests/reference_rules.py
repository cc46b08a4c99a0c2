"""A per-reading, scalar implementation of every alert rule: the parity oracle.

Written from docs/clinical.md and the rule definitions, with plain Python loops and
dictionaries, sharing nothing with the numpy engine but its configuration. The
parity tests require identical candidates from both on the same input.

Semantics both follow (documented in docs/alerts.md):
- a batch is first taken into the history, then evaluated;
- rings keep the last N readings inserted per (patient, kind), a reading whose
  time is already there is not added again;
- CGM readings count once, if newer than the latest counted before the batch;
- a rule's candidate for a patient is its most severe firing, then the latest.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alerts.catalogue import PATIENT_PARAMETERS, RULES
from alerts.engine import PatientProfile
from alerts.history import RING_SIZES
from alerts.missing import DEVICE_PERIOD_HOURS, QUESTIONNAIRE_KINDS
from alerts.programmes import ENABLED, AlertConfig
from devices.catalogue import BY_CODE, BY_KIND, ValueType
from devices.catalogue import VitalKind as K

HOUR = 3_600_000_000
DAY = 24 * HOUR
# baseline_deviation's vitals: the parameter of its step, and the direction of worse.
DEVIATIONS = {
    K.SPO2: ("spo2_step", -1.0),
    K.HEART_RATE: ("pulse_step", 1.0),
    K.RESPIRATORY_RATE: ("respiration_step", 1.0),
    K.BODY_TEMPERATURE: ("temperature_step", 1.0),
    K.DYSPNOEA: ("dyspnoea_step", 1.0),
}


@dataclass
class Patient:
    profile: PatientProfile
    params: dict[str, dict[str, float]]
    active: bool = True
    latest: dict[K, tuple[int, float]] = field(default_factory=dict)  # kind -> (time, value)
    rings: dict[K, deque[tuple[int, float]]] = field(default_factory=dict)
    cgm_last: int | None = None
    cgm_days: dict[int, list[int]] = field(default_factory=dict)  # day -> [below, total]
    days: set[int] = field(default_factory=set)  # days since enrollment with data
    devices: dict[int, tuple[str, int]] = field(default_factory=dict)  # key -> (type, last)


@dataclass(frozen=True)
class Fired:
    patient_key: int
    rule_id: str
    severity: int
    at: int
    values: Mapping[str, float | None]


class ReferenceEngine:
    def __init__(self, config: AlertConfig) -> None:
        self.config = config
        self.patients: dict[int, Patient] = {}
        # every NEWS2 score computed: (partition, day, programme, score) -> sets
        self.scored: Counter[tuple[int, int, str, int]] = Counter()

    def add_patients(self, profiles: Sequence[PatientProfile]) -> None:
        for profile in profiles:
            programme = self.config.programmes[profile.programme]
            params: dict[str, dict[str, float]] = {}
            for rule in RULES.values():
                values: dict[str, float] = {}
                for name, parameter in {**rule.parameters, **PATIENT_PARAMETERS}.items():
                    key = f"patient.{name}" if name in PATIENT_PARAMETERS else f"{rule.id}.{name}"
                    values[name] = profile.overrides.get(
                        key, programme.parameters.get(key, parameter.default)
                    )
                switch = profile.overrides.get(
                    f"{rule.id}.{ENABLED}", programme.parameters.get(f"{rule.id}.{ENABLED}", 1)
                )
                runs = rule.id in programme.rules and (switch == 1 or not rule.disableable)
                values[ENABLED] = 1.0 if runs else 0.0
                params[rule.id] = values
            patient = Patient(profile, params)
            for device_key, device_type in profile.devices:
                patient.devices[device_key] = (device_type.value, profile.enrolled_us)
            self.patients[profile.patient_key] = patient

    # -- history --------------------------------------------------------------------------

    def _take(self, rows: list[tuple[int, int, float, int, int | None]]) -> None:
        """Readings (patient, code, value, time, device) in arrival order into the history."""
        newest: dict[tuple[int, K], tuple[int, float]] = {}
        cgm_before = {p: self.patients[p].cgm_last for p, *_ in rows}
        ring_before = {
            (p, kind): {t for t, _ in ring}
            for p in {r[0] for r in rows}
            for kind, ring in self.patients[p].rings.items()
        }
        inserted: set[tuple[int, K, int]] = set()
        counted: set[tuple[int, int]] = set()
        for patient_key, code, value, time, device in rows:
            patient = self.patients[patient_key]
            kind = BY_CODE[code].kind
            seen = newest.get((patient_key, kind))
            if seen is None or time >= seen[0]:
                newest[(patient_key, kind)] = (time, value)
            if kind in RING_SIZES:
                ring = patient.rings.setdefault(kind, deque(maxlen=RING_SIZES[kind]))
                known = ring_before.get((patient_key, kind), set())
                if time not in known and (patient_key, kind, time) not in inserted:
                    inserted.add((patient_key, kind, time))
                    ring.append((time, value))
            if kind is K.GLUCOSE_CGM:
                before = cgm_before[patient_key]
                if (before is None or time > before) and (patient_key, time) not in counted:
                    counted.add((patient_key, time))
                    below_total = patient.cgm_days.setdefault(time // DAY, [0, 0])
                    below_total[0] += value < 70
                    below_total[1] += 1
                    patient.cgm_last = max(patient.cgm_last or time, time)
            day = (time - patient.profile.enrolled_us) // DAY
            if 0 <= day < 64:
                patient.days.add(day)
            if device is not None and device in patient.devices:
                device_type, last = patient.devices[device]
                patient.devices[device] = (device_type, max(last, time))
        for (patient_key, kind), (time, value) in newest.items():
            latest = self.patients[patient_key].latest
            if kind not in latest or time > latest[kind][0]:
                latest[kind] = (time, value)

    # -- reading rules --------------------------------------------------------------------

    def evaluate(self, rows: list[tuple[int, int, float, int, int, int | None]]) -> list[Fired]:
        """Rows: (patient, code, value, measured_at, reference, device), arrival order."""
        rows = [r for r in rows if r[0] in self.patients]
        self._take([(p, c, v, t, d) for p, c, v, t, _, d in rows])
        fired: list[Fired] = []
        window = self.config.current_window_us
        current = [r for r in rows if r[3] >= r[4] - window and self.patients[r[0]].active]
        for p, code, value, time, _, _ in current:
            fired.extend(self._on_reading(p, BY_CODE[code].kind, value, time))
        news2_at: dict[int, int] = {}
        inputs = {
            K.RESPIRATORY_RATE,
            K.SPO2,
            K.ON_OXYGEN,
            K.OXYGEN_FLOW,
            K.SYSTOLIC_BP,
            K.HEART_RATE,
            K.NEW_CONFUSION,
            K.BODY_TEMPERATURE,
        }
        for p, code, _, time, _, _ in current:
            if BY_CODE[code].kind in inputs:
                news2_at[p] = max(news2_at.get(p, time), time)
        for p, at in news2_at.items():
            fired.extend(f for f in (self._news2(p, at), self._news2_rising(p, at)) if f)
        deviation_at: dict[int, int] = {}
        for p, code, _, time, _, _ in current:
            if BY_CODE[code].kind in DEVIATIONS:
                deviation_at[p] = max(deviation_at.get(p, time), time)
        for p, at in deviation_at.items():
            result = self._baseline_deviation(p, at)
            if result:
                fired.append(result)
        return self._collapse(fired)

    def _on_reading(self, p: int, kind: K, v: float, t: int) -> list[Fired]:
        patient = self.patients[p]
        out = []

        def add(rule: str, severity: int, **values: float | None) -> None:
            if severity:
                out.append(Fired(p, rule, severity, t, {"value": v, **values}))

        def param(rule: str, name: str) -> float:
            return patient.params[rule][name]

        def le(x: float, bound: float) -> bool:
            return not math.isnan(bound) and x <= bound

        def ge(x: float, bound: float) -> bool:
            return not math.isnan(bound) and x >= bound

        if kind is K.SPO2:
            if param("spo2_scale1", "spo2_scale") == 1:
                red, orange = (
                    param("spo2_scale1", n) for n in ("red_at_or_below", ("orange_at_or_below"))
                )
                severity, values = self._spo2_confirmed(
                    p, "spo2_scale1", v, t, lambda x: 3 if x <= red else 2 if x <= orange else 0
                )
                add("spo2_scale1", severity, **values)
            if param("spo2_scale2", "spo2_scale") == 2:
                oxygen = self._on_oxygen(p)

                def band2(x: float) -> int:
                    red = x <= param("spo2_scale2", "red_at_or_below") or (
                        oxygen and x >= param("spo2_scale2", "red_on_o2_at_or_above")
                    )
                    orange = x <= param("spo2_scale2", "orange_at_or_below") or (
                        oxygen and x >= param("spo2_scale2", "orange_on_o2_at_or_above")
                    )
                    return 3 if red else 2 if orange else 0

                severity, values = self._spo2_confirmed(p, "spo2_scale2", v, t, band2, False)
                del values["usual"]
                add("spo2_scale2", severity, on_oxygen=float(oxygen), **values)
            day = (t - patient.profile.enrolled_us) / DAY
            if day < param("spo2_covid", "first_days"):
                below = param("spo2_covid", "red_below")
                severity, values = self._spo2_confirmed(
                    p, "spo2_covid", v, t, lambda x: 3 if x < below else 0
                )
                add("spo2_covid", severity, day_of_follow_up=float(math.floor(day)), **values)
            rule = "spo2_drop_baseline"
            recent_start = t - int(param(rule, "recent_hours") * HOUR)
            start = recent_start - int(param(rule, "baseline_days") * 24 * HOUR)
            ring = patient.rings.get(K.SPO2, ())
            baseline = [vv for tt, vv in ring if start <= tt < recent_start]
            recent = [vv for tt, vv in ring if recent_start <= tt <= t]
            if len(baseline) >= param(rule, "min_readings") and recent:
                median = statistics.median(baseline)
                recent_median = statistics.median(recent)
                add(
                    rule,
                    2 if median - recent_median >= param(rule, "drop_points") else 0,
                    baseline_median=median,
                    recent_median=recent_median,
                )
        banded = {
            K.RESPIRATORY_RATE: "respiratory_rate",
            K.HEART_RATE: "heart_rate",
            K.SYSTOLIC_BP: "systolic_bp",
            K.BODY_TEMPERATURE: "body_temperature",
        }
        if kind in banded:
            rule = banded[kind]

            def band(x: float) -> int:
                red = le(x, param(rule, "red_at_or_below")) or ge(x, param(rule, "red_at_or_above"))
                orange = le(x, param(rule, "orange_at_or_below")) or ge(
                    x, param(rule, "orange_at_or_above")
                )
                return 3 if red else 2 if orange else 0

            severity = band(v)
            if rule != "heart_rate":
                add(rule, severity)
            elif severity:
                previous = self._previous(p, kind, t)
                isolated = (
                    param(rule, "confirm") == 1 and previous is not None and band(previous) == 0
                )
                add(
                    rule,
                    1 if isolated else severity,
                    previous=math.nan if previous is None else previous,
                    confirmed=0.0 if isolated else 1.0,
                )
        if kind in (K.GLUCOSE, K.GLUCOSE_CGM):
            add(
                "glucose",
                3
                if v < param("glucose", "red_below")
                else 2
                if v < param("glucose", "orange_below") or v > param("glucose", "orange_above")
                else 0,
            )
        if BY_KIND[kind].value_type is ValueType.GRADE:
            earlier = [(tt, vv) for tt, vv in patient.rings.get(kind, ()) if tt < t]
            previous = max(earlier)[1] if earlier else math.nan
            high = v >= param("symptom_grade", "orange_at_or_above")
            rise = previous == 0 and v >= param("symptom_grade", "rise_from_0_to")
            add(
                "symptom_grade",
                2 if high or rise else 0,
                previous=previous,
                kind=float(BY_KIND[kind].code),
            )
        for yes_no, rule, severity in (
            (K.BREATHLESS_AT_REST, "breathless_at_rest", 3),
            (K.NEW_CONFUSION, "new_confusion", 3),
            (K.CALLBACK_REQUESTED, "callback_requested", 2),
        ):
            if kind is yes_no:
                add(rule, severity if v == 1 else 0)
        if kind is K.BODY_WEIGHT:
            for rule, severity in (("hf_weight_gain_3d", 2), ("weight_gain_24h", 1)):
                weights = [
                    vv
                    for tt, vv in patient.rings.get(K.BODY_WEIGHT, ())
                    if t - param(rule, "window_hours") * HOUR <= tt < t
                ]
                lowest = min(weights) if weights else math.nan
                add(
                    rule,
                    severity if weights and v - lowest > param(rule, "gain_kg") else 0,
                    minimum_before=lowest,
                )
        if kind is K.VENTILATOR_LEAK:
            run_days = int(param("ventilator_leak_3d", "days"))
            threshold = param("ventilator_leak_3d", "threshold_l_min")
            over_days = {tt // DAY for tt, vv in patient.rings.get(kind, ()) if vv > threshold}
            run = [t // DAY - back in over_days for back in range(run_days)]
            add(
                "ventilator_leak_3d",
                2 if run_days > 0 and all(run) else 0,
                days_over=float(sum(run)),
            )
        if kind is K.GLUCOSE_CGM:
            days = min(param("cgm_time_below_range", "days"), 16)
            today = t // DAY
            counts = [c for d, c in patient.cgm_days.items() if today - days < d <= today]
            below, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
            share = below / total if total else 0.0
            fires = total >= param("cgm_time_below_range", "min_readings") and share * 100 > param(
                "cgm_time_below_range", "below_percent"
            )
            add(
                "cgm_time_below_range",
                2 if fires else 0,
                percent_below=share * 100,
                readings=float(total),
            )
        return out

    def _previous(self, p: int, kind: K, t: int) -> float | None:
        """The patient's reading of `kind` just before `t` (None: none in the ring)."""
        earlier = [(tt, vv) for tt, vv in self.patients[p].rings.get(kind, ()) if tt < t]
        return max(earlier)[1] if earlier else None

    def _usual_spo2(self, p: int, rule: str, t: int) -> float:
        params = self.patients[p].params[rule]
        start = t - int(params["usual_days"] * 24 * HOUR)
        values = [vv for tt, vv in self.patients[p].rings.get(K.SPO2, ()) if start <= tt < t]
        if len(values) < params["usual_min_readings"]:
            return math.nan
        return float(statistics.median(values))

    def _spo2_confirmed(
        self,
        p: int,
        rule: str,
        v: float,
        t: int,
        band: Callable[[float], int],
        personal: bool = True,
    ) -> tuple[int, dict[str, float]]:
        params = self.patients[p].params[rule]
        margin = params["below_usual_points"] if personal else math.nan
        usual = math.nan
        if band(v) and not math.isnan(margin):
            usual = self._usual_spo2(p, rule, t)

        def is_low(x: float) -> bool:
            return bool(band(x)) and (math.isnan(usual) or x <= usual - margin)

        severity = band(v) if is_low(v) else 0
        previous = self._previous(p, K.SPO2, t) if severity else None
        isolated = params["confirm"] == 1 and previous is not None and not is_low(previous)
        return (1 if isolated and severity else severity), {
            "previous": math.nan if previous is None else previous,
            "usual": usual,
            "confirmed": 0.0 if isolated else 1.0,
        }

    def _on_oxygen(self, p: int) -> bool:
        latest = self.patients[p].latest
        return (K.ON_OXYGEN in latest and latest[K.ON_OXYGEN][1] == 1) or (
            K.OXYGEN_FLOW in latest and latest[K.OXYGEN_FLOW][1] > 0
        )

    def _scores(self, p: int, at: int, rule: str) -> tuple[dict[str, float | None], bool]:
        """Each NEWS2 component's score from the latest values within the rule's window (None:
        no value), and whether the patient is on oxygen."""
        patient = self.patients[p]
        params = patient.params[rule]
        since = at - int(params["window_hours"] * 3.6e9)

        def recent(kind: K) -> float | None:
            found = patient.latest.get(kind)
            return found[1] if found and found[0] > since else None

        rr, spo2, answer = recent(K.RESPIRATORY_RATE), recent(K.SPO2), recent(K.ON_OXYGEN)
        flow, sbp, hr = recent(K.OXYGEN_FLOW), recent(K.SYSTOLIC_BP), recent(K.HEART_RATE)
        confused, temp = recent(K.NEW_CONFUSION), recent(K.BODY_TEMPERATURE)
        oxygen = answer == 1 or (flow is not None and flow > 0)
        scale = params["spo2_scale"]
        return {
            "respiration": None if rr is None else news2_respiration(rr),
            "spo2": None if spo2 is None else news2_spo2(spo2, scale, oxygen),
            "oxygen": None if answer is None and flow is None else (2.0 if oxygen else 0.0),
            "systolic_bp": None if sbp is None else news2_systolic(sbp),
            "pulse": None if hr is None else news2_pulse(hr),
            "consciousness": None if confused is None else (3.0 if confused == 1 else 0.0),
            "temperature": None if temp is None else news2_temperature(temp),
        }, oxygen

    def _confirmed(
        self, p: int, scores: dict[str, float | None], scale: float, oxygen: bool
    ) -> dict[str, float | None]:
        """An isolated SpO2 or pulse (scoring 2 or more after a reading scoring less) scored
        as the reading before it."""
        confirmed = dict(scores)
        latest = self.patients[p].latest
        for name, kind in (("spo2", K.SPO2), ("pulse", K.HEART_RATE)):
            now = scores[name]
            if now is None or now < 2:
                continue
            previous = self._previous(p, kind, latest[kind][0])
            if previous is None:
                continue
            before = (
                news2_spo2(previous, scale, oxygen) if name == "spo2" else news2_pulse(previous)
            )
            if before < 2:
                confirmed[name] = before
        return confirmed

    @staticmethod
    def _news2_severity(scores: dict[str, float | None], params: Mapping[str, float]) -> int:
        present = [s for s in scores.values() if s is not None]
        total = float(sum(present))
        if total >= params["red_at_or_above"]:
            return 3
        if total >= params["orange_at_or_above"] or (
            params["single_3_is_orange"] == 1 and 3.0 in present
        ):
            return 2
        if total >= 1 and params["low_band_is_info"] == 1:
            return 1
        return 0

    def _news2(self, p: int, at: int) -> Fired | None:
        patient = self.patients[p]
        params = patient.params["news2"]
        scores, oxygen = self._scores(p, at, "news2")
        present = [s for s in scores.values() if s is not None]
        total = float(sum(present))
        if params[ENABLED] == 1:
            day = at // 86_400_000_000
            profile = patient.profile
            self.scored[(profile.partition, day, profile.programme.value, int(total))] += 1
        severity = self._news2_severity(scores, params)
        confirmed_total = total
        if params["confirm"] == 1:
            confirmed = self._confirmed(p, scores, params["spo2_scale"], oxygen)
            confirmed_total = float(sum(s for s in confirmed.values() if s is not None))
            as_confirmed = self._news2_severity(confirmed, params)
            if severity > as_confirmed:
                severity = max(as_confirmed, 1)
        if not severity:
            return None
        values: dict[str, float | None] = {
            "score": total,
            "confirmed_score": confirmed_total,
            "complete": float(len(present) == 7),
            "parameters_present": float(len(present)),
            **{f"component_{k}": v for k, v in scores.items()},
        }
        return Fired(p, "news2", severity, at, values)

    def _news2_rising(self, p: int, at: int) -> Fired | None:
        patient = self.patients[p]
        params = patient.params["news2_rising"]
        scale = params["spo2_scale"]
        scores, oxygen = self._scores(p, at, "news2_rising")
        if params["confirm"] == 1:
            scores = self._confirmed(p, scores, scale, oxygen)
        start = at - int(params["baseline_hours"] * HOUR)
        end = at - int(params["after_hours"] * HOUR)
        now = before = compared = 0.0
        for name, kind, score in (
            ("spo2", K.SPO2, lambda x: news2_spo2(x, scale, oxygen)),
            ("respiration", K.RESPIRATORY_RATE, news2_respiration),
            ("pulse", K.HEART_RATE, news2_pulse),
            ("temperature", K.BODY_TEMPERATURE, news2_temperature),
        ):
            then = [score(vv) for tt, vv in patient.rings.get(kind, ()) if start <= tt < end]
            current = scores[name]
            if current is None or not then:
                continue
            now += current
            before += min(then)
            compared += 1
        if not compared or now - before < params["rise_points"]:
            return None
        values = {
            "rise": now - before,
            "score_now": now,
            "score_before": before,
            "parameters_compared": compared,
        }
        return Fired(p, "news2_rising", 2, at, values)

    def _baseline_deviation(self, p: int, at: int) -> Fired | None:
        patient = self.patients[p]
        params = patient.params["baseline_deviation"]
        session = at - int(params["session_hours"] * HOUR)
        start = at - int(params["baseline_days"] * 24 * HOUR)
        end = at - int(params["after_hours"] * HOUR)
        points = 0.0
        values: dict[str, float | None] = {}
        for kind, (step_name, worse) in DEVIATIONS.items():
            ring = patient.rings.get(kind, ())
            now = [worse * vv for tt, vv in ring if session <= tt <= at]
            then = [vv for tt, vv in ring if start <= tt < end]
            deviation = math.nan
            if now and len(then) >= params["min_readings"]:
                deviation = min(now) - worse * statistics.median(then)
                step = params[step_name]
                points += (deviation >= step) + (deviation >= 2 * step)
            values[f"{kind.value}_deviation"] = deviation
        if points < params["orange_at_or_above"]:
            return None
        return Fired(p, "baseline_deviation", 2, at, {"points": points, **values})

    # -- sweep ----------------------------------------------------------------------------

    def sweep(self, now_by_partition: Mapping[int, int]) -> list[Fired]:
        fired: list[Fired] = []
        for p, patient in self.patients.items():
            if not patient.active:
                continue
            now = now_by_partition.get(patient.profile.partition, 0)
            offset = self._offset(now)
            fired.extend(
                f
                for f in (
                    self._questionnaire(p, now, offset),
                    self._weight_missing(p, now, offset),
                    self._glucose_missing(p, now),
                    self._device_silent(p, now),
                    self._adherence(p, now, 1),
                    self._adherence(p, now, 2),
                    self._spo2_unconfirmed(p, now),
                )
                if f is not None
            )
        return self._collapse(fired)

    def _offset(self, now: int) -> float:
        moment = datetime.fromtimestamp(now / 1e6, self.config.timezone).utcoffset()
        return moment.total_seconds() / 3600 if moment else 0.0

    @staticmethod
    def _day_start(t: int, offset: float) -> int:
        shift = int(offset * HOUR)
        return ((t + shift) // DAY) * DAY - shift

    def _deadline(self, now: int, offset: float, hour: float) -> int:
        today = self._day_start(now, offset) + int(hour * HOUR)
        return today if today <= now else today - DAY

    def _last(self, p: int, *kinds: K) -> int:
        times = [self.patients[p].latest[k][0] for k in kinds if k in self.patients[p].latest]
        return max(times, default=-(2**63))

    def _questionnaire(self, p: int, now: int, offset: float) -> Fired | None:
        params = self.patients[p].params["questionnaire_missed"]
        grace = int(params["grace_hours"] * HOUR)
        due = None
        for hour in (params["first_hour"], params["second_hour"]):
            if not math.isnan(hour):
                deadline = self._deadline(now - grace, offset, hour)
                due = deadline if due is None else max(due, deadline)
        if due is None or due < self.patients[p].profile.enrolled_us:
            return None
        opens = due - int(params["window_before_hours"] * HOUR)
        if self._last(p, *QUESTIONNAIRE_KINDS) >= opens:
            return None
        return Fired(
            p,
            "questionnaire_missed",
            2,
            due + grace,
            {"scheduled_at_s": due / 1e6, "data_since_s": opens / 1e6},
        )

    def _weight_missing(self, p: int, now: int, offset: float) -> Fired | None:
        params = self.patients[p].params["hf_weight_missing"]
        enrolled = self.patients[p].profile.enrolled_us
        deadline = self._deadline(now, offset, params["deadline_hour"])
        day_start = self._day_start(deadline, offset)
        weighed = self._last(p, K.BODY_WEIGHT)
        if weighed >= day_start or enrolled >= day_start:
            return None
        since = max(weighed, enrolled - DAY)
        days = (day_start - self._day_start(since, offset)) // DAY
        severity = 3 if days >= params["red_after_days"] else 2
        return Fired(
            p,
            "hf_weight_missing",
            severity,
            deadline,
            {"days_without_weight": float(days), "data_since_s": day_start / 1e6},
        )

    def _glucose_missing(self, p: int, now: int) -> Fired | None:
        params = self.patients[p].params["glucose_missing"]
        last = max(self._last(p, K.GLUCOSE, K.GLUCOSE_CGM), self.patients[p].profile.enrolled_us)
        limit = int(params["days"] * DAY)
        if now - last < limit:
            return None
        return Fired(
            p,
            "glucose_missing",
            2,
            last + limit,
            {"last_reading_s": last / 1e6, "data_since_s": (last + 1) / 1e6},
        )

    def _device_silent(self, p: int, now: int) -> Fired | None:
        periods = self.patients[p].params["device_silent"]["periods"]
        silent = []
        for key, (device_type, last) in self.patients[p].devices.items():
            hours = next(h for t, h in DEVICE_PERIOD_HOURS.items() if t.value == device_type)
            since = last + int(hours * HOUR * periods)
            if now >= since:
                silent.append((since, key))
        if not silent:
            return None
        since, key = min(silent)
        last = self.patients[p].devices[key][1]
        return Fired(
            p,
            "device_silent",
            1,
            since,
            {"device_key": float(key), "data_since_s": (last + 1) / 1e6},
        )

    def _spo2_unconfirmed(self, p: int, now: int) -> Fired | None:
        patient = self.patients[p]
        params = patient.params["spo2_unconfirmed"]
        if K.SPO2 not in patient.latest:
            return None
        t, v = patient.latest[K.SPO2]
        deadline = t + int(params["within_minutes"] * 60e6)
        day = (t - patient.profile.enrolled_us) / DAY
        if now < deadline or not v < params["red_below"] or not day < params["first_days"]:
            return None
        margin = params["below_usual_points"]
        usual = math.nan if math.isnan(margin) else self._usual_spo2(p, "spo2_unconfirmed", t)

        def is_low(x: float) -> bool:
            return x < params["red_below"] and (math.isnan(usual) or x <= usual - margin)

        previous = self._previous(p, K.SPO2, t)
        if not is_low(v) or previous is None or is_low(previous):
            return None
        return Fired(
            p,
            "spo2_unconfirmed",
            3,
            deadline,
            {"value": v, "previous": previous, "usual": usual, "measured_at_s": t / 1e6},
        )

    def _adherence(self, p: int, now: int, month: int) -> Fired | None:
        patient = self.patients[p]
        first = 30 * (month - 1)
        end = patient.profile.enrolled_us + (first + 30) * DAY
        days = sum(1 for d in patient.days if first <= d < first + 30)
        percent = days / 30 * 100
        rule = f"adherence_m{month}"
        if now < end or percent > patient.params[rule]["at_most_percent"]:
            return None
        return Fired(p, rule, 2, end, {"days_with_data": float(days), "percent": percent})

    # -- candidates -----------------------------------------------------------------------

    def _collapse(self, fired: list[Fired]) -> list[Fired]:
        best: dict[tuple[int, str], Fired] = {}
        for f in fired:
            if self.patients[f.patient_key].params[f.rule_id][ENABLED] != 1:
                continue
            key = (f.patient_key, f.rule_id)
            if key not in best or (f.severity, f.at) >= (best[key].severity, best[key].at):
                best[key] = f
        return list(best.values())


def news2_respiration(v: float) -> float:
    return 3 if v <= 8 else 1 if v <= 11 else 0 if v <= 20 else 2 if v <= 24 else 3


def news2_spo2(v: float, scale: float, oxygen: bool) -> float:
    if scale != 2:
        return 3 if v <= 91 else 2 if v <= 93 else 1 if v <= 95 else 0
    if v <= 83:
        return 3
    if v <= 85:
        return 2
    if v <= 87:
        return 1
    if v <= 92 or not oxygen:
        return 0
    return 1 if v <= 94 else 2 if v <= 96 else 3


def news2_systolic(v: float) -> float:
    return 3 if v <= 90 else 2 if v <= 100 else 1 if v <= 110 else 0 if v <= 219 else 3


def news2_pulse(v: float) -> float:
    return (
        3
        if v <= 40
        else 1
        if v <= 50
        else 0
        if v <= 90
        else 1
        if v <= 110
        else (2 if v <= 130 else 3)
    )


def news2_temperature(v: float) -> float:
    return 3 if v <= 35.0 else 1 if v <= 36.0 else 0 if v <= 38.0 else 1 if v <= 39.0 else 2


def as_fired(candidates: Sequence[Any]) -> list[Fired]:
    """The engine's candidates in the reference's terms, for comparison."""
    return [
        Fired(c.patient_key, c.rule_id, int(c.severity), c.fired_at_us, c.explanation["values"])
        for c in candidates
    ]


def key(fired: list[Fired]) -> list[tuple[Any, ...]]:
    def clean(v: Any) -> Any:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 9)

    return sorted(
        (
            f.patient_key,
            f.rule_id,
            f.severity,
            f.at,
            tuple(sorted((k, clean(v)) for k, v in f.values.items())),
        )
        for f in fired
    )
