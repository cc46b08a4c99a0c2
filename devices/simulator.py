"""A cohort of simulated patients and the messages their device gateways send.

Pure and deterministic for a given seed: no clock, no I/O. `Simulation`
yields `SimMessage`s in send-time order. Shaped like Covidom by default:
mostly stable patients, about 4% worsening (Yordanov et al. 2021: 4.1%
worsened, 4.0% hospitalised), and honest about what real home measurements
look like (docs/alerts.md, "The simulated cohort"):

- personal baselines: each patient's usual value of every vital is drawn
  around the cohort's, and some stable COVID-19 patients' usual SpO2 is
  94-95 %;
- measurement noise on every reading, and artefacts: a cold finger reads the
  SpO2 several points low, a moving hand reads the pulse far too high;
- sparse sessions: COVID-19 patients measure twice a day; when a session's
  value is abnormal the app asks for a re-measure, which the patient takes a
  few minutes later with some probability (so confirmation can happen);
- a worsening lasts one to three days, from a known onset to a known
  hospitalisation, where the patient's follow-up (and their messages) end.
  Each vital moves from the patient's baseline towards their own value at
  hospitalisation, slowly at first then faster (severity ** shape).
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from devices.catalogue import BY_KIND, ValueType
from devices.catalogue import VitalKind as K
from devices.registry import DeviceType as D
from devices.registry import Enrollment, Programme

__all__ = [
    "COVIDOM_MIX",
    "VITAL_MODELS",
    "Artefacts",
    "CohortConfig",
    "Faults",
    "SimMessage",
    "SimPatient",
    "Simulation",
    "build_cohort",
]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

COVIDOM_MIX: Mapping[Programme, float] = {
    Programme.COVID: 0.70,
    Programme.HEART_FAILURE: 0.15,
    Programme.RESPIRATORY: 0.08,
    Programme.DIABETES: 0.07,
}


@dataclass(frozen=True, slots=True)
class VitalModel:
    """How one vital behaves: cohort mean and spread, noise, value at worst, rounding."""

    mean: float
    between_sd: float  # spread of baselines across patients
    noise_sd: float  # reading-to-reading noise
    worst: float  # typical value at hospitalisation (a delta for body weight)
    decimals: int = 0
    low: float = float("-inf")
    high: float = float("inf")
    # A share of patients whose usual value lies in [usual_low[0], usual_low[1]] instead
    # (COVID-19 SpO2: stable patients whose normal is 94-95 %).
    usual_low_share: float = 0.0
    usual_low: tuple[float, float] = (0.0, 0.0)


# Per programme: vital models, and devices with their daily times (hours) and kinds.
VITAL_MODELS: Mapping[Programme, Mapping[K, VitalModel]] = {
    Programme.COVID: {
        K.SPO2: VitalModel(
            97.3, 0.8, 0.7, 89.5, high=100, usual_low_share=0.1, usual_low=(94.5, 95.5)
        ),
        K.HEART_RATE: VitalModel(74, 8, 5, 108),
        K.RESPIRATORY_RATE: VitalModel(15, 1.2, 1.0, 25),
        K.BODY_TEMPERATURE: VitalModel(36.9, 0.25, 0.25, 38.9, decimals=1),
        K.DYSPNOEA: VitalModel(0.2, 0.2, 0.3, 3.2, low=0, high=4),
        K.COUGH: VitalModel(0.6, 0.4, 0.3, 2.8, low=0, high=4),
        K.FATIGUE: VitalModel(0.6, 0.4, 0.3, 2.8, low=0, high=4),
        K.CHILLS: VitalModel(0.1, 0.1, 0.2, 2.2, low=0, high=4),
    },
    Programme.HEART_FAILURE: {
        K.BODY_WEIGHT: VitalModel(80, 14, 0.2, 3.5, decimals=1, low=35),
        K.SYSTOLIC_BP: VitalModel(128, 10, 5, 112, low=95),
        K.DIASTOLIC_BP: VitalModel(78, 7, 4, 70),
        K.HEART_RATE: VitalModel(70, 7, 4, 102),
        K.DYSPNOEA: VitalModel(0.3, 0.2, 0.25, 3.2, low=0, high=4),
    },
    Programme.RESPIRATORY: {
        K.SPO2: VitalModel(90.5, 0.6, 0.8, 83, high=100),
        K.RESPIRATORY_RATE: VitalModel(17, 1.2, 1.0, 27),
        K.HEART_RATE: VitalModel(80, 6, 4, 112),
        K.VENTILATOR_USAGE: VitalModel(7, 1, 0.6, 9, decimals=1, low=0, high=24),
        K.VENTILATOR_LEAK: VitalModel(10, 3, 2.5, 42, decimals=1, low=0),
        K.DYSPNOEA: VitalModel(0.5, 0.2, 0.25, 3.2, low=0, high=4),
    },
    Programme.DIABETES: {
        K.GLUCOSE: VitalModel(140, 15, 18, 48, low=20, high=600),
        K.GLUCOSE_CGM: VitalModel(140, 15, 15, 48, low=40, high=400),
    },
}


@dataclass(frozen=True, slots=True)
class DeviceModel:
    device_type: D
    kinds: tuple[K, ...]
    hours: tuple[float, ...] = ()  # daily measurement times, local hours
    every_ms: int = 0  # or a fixed period (CGM uploads, wearables)
    readings_per_upload: int = 1  # consecutive measurements per message (CGM: 3 per upload)


_DEVICES: Mapping[Programme, tuple[DeviceModel, ...]] = {
    Programme.COVID: (  # two sessions a day
        DeviceModel(D.PULSE_OXIMETER, (K.SPO2, K.HEART_RATE), (8, 20)),
        DeviceModel(D.THERMOMETER, (K.BODY_TEMPERATURE,), (8, 20)),
        DeviceModel(
            D.QUESTIONNAIRE_APP,
            (
                K.DYSPNOEA,
                K.COUGH,
                K.FATIGUE,
                K.CHILLS,
                K.RESPIRATORY_RATE,
                K.BREATHLESS_AT_REST,
                K.NEW_CONFUSION,
                K.CALLBACK_REQUESTED,
            ),
            (9, 19),
        ),
    ),
    Programme.HEART_FAILURE: (
        DeviceModel(D.SCALE, (K.BODY_WEIGHT,), (7.5,)),
        DeviceModel(
            D.BLOOD_PRESSURE_MONITOR, (K.SYSTOLIC_BP, K.DIASTOLIC_BP, K.HEART_RATE), (7.75,)
        ),
        DeviceModel(D.QUESTIONNAIRE_APP, (K.DYSPNOEA, K.CALLBACK_REQUESTED), (9,)),
    ),
    Programme.RESPIRATORY: (
        DeviceModel(D.VENTILATOR, (K.VENTILATOR_USAGE, K.VENTILATOR_LEAK), (8,)),
        DeviceModel(D.PULSE_OXIMETER, (K.SPO2, K.HEART_RATE), (8.5, 20)),
        DeviceModel(
            D.QUESTIONNAIRE_APP,
            (K.DYSPNOEA, K.RESPIRATORY_RATE, K.ON_OXYGEN, K.CALLBACK_REQUESTED),
            (9,),
        ),
    ),
    Programme.DIABETES: (DeviceModel(D.GLUCOMETER, (K.GLUCOSE,), (7, 12, 19, 22)),),
}
_CGM = DeviceModel(D.CGM, (K.GLUCOSE_CGM,), every_ms=15 * 60_000, readings_per_upload=3)
_WEARABLE = DeviceModel(D.WEARABLE, (K.SPO2, K.HEART_RATE), every_ms=60_000)


@dataclass(frozen=True, slots=True)
class Worsening:
    """A deterioration from `onset_ms` to a hospitalisation at `hospitalised_ms`, where the
    patient's follow-up ends. At severity 1 each vital is at the patient's `peak` value."""

    onset_ms: int
    hospitalised_ms: int
    peak: Mapping[K, float] = field(default_factory=dict)  # value at hospitalisation, per vital
    shape: float = 1.0  # severity = (elapsed share) ** shape: > 1 starts slowly
    direction: int = -1  # diabetes: -1 hypoglycaemia, +1 hyperglycaemia

    @property
    def hours(self) -> float:
        return (self.hospitalised_ms - self.onset_ms) / HOUR_MS

    def severity(self, t_ms: int) -> float:
        if t_ms <= self.onset_ms:
            return 0.0
        share = min(1.0, (t_ms - self.onset_ms) / (self.hospitalised_ms - self.onset_ms))
        return float(share**self.shape)


@dataclass(frozen=True, slots=True)
class SimDevice:
    device_id: str
    model: DeviceModel
    units: Mapping[K, str] = field(default_factory=dict)  # non-canonical units it reports in

    def unit(self, kind: K) -> str:
        return self.units.get(kind) or BY_KIND[kind].unit


@dataclass(frozen=True, slots=True)
class SimPatient:
    patient_id: str
    programme: Programme
    devices: tuple[SimDevice, ...]
    baseline: Mapping[K, float]
    worsening: Worsening | None
    adherence: float  # probability that a scheduled measurement is sent
    remeasure: float = 0.0  # probability of re-measuring when the app asks

    def followed_at(self, t_ms: int) -> bool:
        """Still followed at `t_ms` (a hospitalisation ends the follow-up)."""
        return self.worsening is None or t_ms < self.worsening.hospitalised_ms

    def enrollments(self) -> list[Enrollment]:
        return [
            Enrollment(
                patient_id=self.patient_id,
                programme=self.programme,
                device_id=d.device_id,
                device_type=d.model.device_type,
            )
            for d in self.devices
        ]


@dataclass(frozen=True, slots=True)
class CohortConfig:
    patients: int = 2000
    programme_mix: Mapping[Programme, float] = field(default_factory=lambda: dict(COVIDOM_MIX))
    worsening_share: float = 0.04
    start_ms: int = 1_795_000_000_000
    days: float = 14.0  # the period worsening episodes are placed in
    adherence: float = 0.98
    worsening_hours: tuple[float, float] = (24, 72)  # onset to hospitalisation
    worsening_shape: float = 2.0  # severity = (elapsed share) ** shape
    remeasure: float = 0.75  # probability that a patient re-measures when the app asks
    cgm_share: float = 0.5  # of diabetes patients
    wearable_share: float = 0.0  # of all patients: a pulse oximeter every minute
    id_prefix: str = "p"
    seed: int = 1


def build_cohort(config: CohortConfig) -> list[SimPatient]:
    rng = random.Random(config.seed)
    programmes = list(config.programme_mix)
    weights = [config.programme_mix[p] for p in programmes]
    worsening_count = round(config.patients * config.worsening_share)
    worsening_ids = set(rng.sample(range(config.patients), worsening_count))
    cohort = []
    for n in range(config.patients):
        programme = rng.choices(programmes, weights)[0]
        patient_id = f"{config.id_prefix}-{n:07d}"
        models = list(_DEVICES[programme])
        if programme is Programme.DIABETES and rng.random() < config.cgm_share:
            models.append(_CGM)
        if rng.random() < config.wearable_share:
            models.append(_WEARABLE)
        devices = tuple(
            SimDevice(
                f"{m.device_type.value[:4]}-{config.id_prefix}{n:07d}-{i}",
                m,
                _foreign_units(rng, m),
            )
            for i, m in enumerate(models)
        )
        baseline = {kind: _usual(rng, model) for kind, model in VITAL_MODELS[programme].items()}
        worsening = _worsening(rng, config, programme, baseline) if n in worsening_ids else None
        cohort.append(
            SimPatient(
                patient_id,
                programme,
                devices,
                baseline,
                worsening,
                config.adherence,
                config.remeasure,
            )
        )
    return cohort


def _usual(rng: random.Random, model: VitalModel) -> float:
    """A patient's usual value of a vital."""
    if model.usual_low_share and rng.random() < model.usual_low_share:
        return rng.uniform(*model.usual_low)
    return min(model.high - 0.5, max(model.low, rng.gauss(model.mean, model.between_sd)))


# Some devices report in other units than the canonical one: (kind, unit, share of devices).
_FOREIGN_UNITS = (
    (K.BODY_TEMPERATURE, "[degF]", 0.1),
    (K.BODY_WEIGHT, "[lb_av]", 0.1),
    (K.GLUCOSE, "mmol/L", 0.5),
    (K.GLUCOSE_CGM, "mmol/L", 0.3),
)


def _foreign_units(rng: random.Random, model: DeviceModel) -> dict[K, str]:
    return {
        kind: unit
        for kind, unit, share in _FOREIGN_UNITS
        if kind in model.kinds and rng.random() < share
    }


def _worsening(
    rng: random.Random, config: CohortConfig, programme: Programme, baseline: Mapping[K, float]
) -> Worsening:
    """Onset after the first day, hospitalisation 1-3 days later, within the period. Each
    vital moves from the patient's usual value by the cohort's typical change, scaled by
    0.5-1.3 per vital (some patients worsen mostly in SpO2, others in fever or pulse)."""
    low, high = config.worsening_hours
    length = int(rng.uniform(low, high) * HOUR_MS)
    span = int(config.days * DAY_MS)
    onset = config.start_ms + rng.randint(DAY_MS, max(DAY_MS + 1, span - length))
    direction = rng.choice((-1, 1))
    peak = {}
    for kind, model in VITAL_MODELS[programme].items():
        usual = baseline[kind]
        if kind is K.BODY_WEIGHT:
            change = model.worst
        elif kind in (K.GLUCOSE, K.GLUCOSE_CGM):
            change = (model.worst if direction < 0 else 330.0) - model.mean
        else:
            change = model.worst - model.mean
        peak[kind] = usual + change * rng.uniform(0.5, 1.3)
    return Worsening(onset, onset + length, peak, config.worsening_shape, direction)


@dataclass(frozen=True, slots=True)
class Artefacts:
    """Shares of oximeter readings that are measurement artefacts."""

    cold_finger: float = 0.015  # SpO2 read 4-10 points low
    motion: float = 0.01  # pulse read 30-60 /min high


# What makes the app ask for a re-measure [U]: a value a clinician would want confirmed.
_ASK_AGAIN: Mapping[str, tuple[float, float]] = {
    K.SPO2.value: (95, float("inf")),  # (at or above, below): normal range
    K.HEART_RATE.value: (0, 111),
}


def _asks_again(reading: Mapping[str, object]) -> bool:
    bounds = _ASK_AGAIN.get(str(reading["kind"]))
    if bounds is None:
        return False
    value = reading["value"]
    assert isinstance(value, float | int)
    return not bounds[0] <= value < bounds[1]


@dataclass(frozen=True, slots=True)
class Faults:
    """Shares of messages turned bad, sent twice, or uploaded late."""

    malformed: float = 0.0
    duplicate: float = 0.0
    late: float = 0.0
    late_delay_ms: tuple[int, int] = (HOUR_MS, 12 * HOUR_MS)


@dataclass(frozen=True, slots=True)
class SimMessage:
    key: bytes
    value: bytes
    timestamp_ms: int  # when the gateway sends it: the Kafka record timestamp
    patient_id: str
    device_id: str
    sequence: int  # strictly increasing per device (repeated by a duplicate)
    readings: int  # readings in the message (0 if malformed beyond parsing)
    fault: str | None = None  # "malformed:<reason>", "duplicate", "late"


class Simulation:
    """Messages of a cohort from `start_ms` on, in send-time order, forever."""

    def __init__(
        self,
        cohort: list[SimPatient],
        *,
        start_ms: int,
        seed: int = 1,
        faults: Faults | None = None,
        readings_per_message: int | None = None,
        artefacts: Artefacts | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        self._artefacts = artefacts or Artefacts()
        self._faults = faults or Faults()
        self._per_message = readings_per_message
        self._sequence: dict[str, int] = {}
        # (measured at, tiebreak, patient, device, a re-measure the app asked for)
        self._queue: list[tuple[int, int, SimPatient, SimDevice, bool]] = []
        self._outbox: list[tuple[int, int, SimMessage]] = []  # by send time
        self._tiebreak = 0
        for patient in cohort:
            for device in patient.devices:
                self._schedule(patient, device, start_ms)

    def __iter__(self) -> Iterator[SimMessage]:
        return self

    def __next__(self) -> SimMessage:
        # Messages wait in a heap by send time; one may leave once no measurement still to be
        # taken could be sent before it (every send follows its measurement).
        while True:
            if self._outbox and (not self._queue or self._outbox[0][0] <= self._queue[0][0]):
                return heapq.heappop(self._outbox)[2]
            if not self._queue:
                raise StopIteration  # every patient's follow-up has ended
            at, _, patient, device, again = heapq.heappop(self._queue)
            if not patient.followed_at(at):
                continue  # hospitalised: the follow-up ends, nothing more is scheduled
            if not again:
                self._schedule(patient, device, at + 1)
                if self._rng.random() >= patient.adherence:
                    continue  # a missed measurement: the schedule keeps going
            message, abnormal = self._measure(patient, device, at)
            self._send(message)
            if abnormal and not again and self._rng.random() < patient.remeasure:
                # The app asked for a re-measure; the patient takes it a few minutes later.
                self._tiebreak += 1
                later = at + self._rng.randint(2 * 60_000, 10 * 60_000)
                heapq.heappush(self._queue, (later, self._tiebreak, patient, device, True))

    # -- scheduling ----------------------------------------------------------------------------

    def _schedule(self, patient: SimPatient, device: SimDevice, after_ms: int) -> None:
        model = device.model
        if model.every_ms:
            at = after_ms + model.every_ms - 1
        else:
            day = after_ms - after_ms % DAY_MS
            slots = [day + d * DAY_MS + int(h * HOUR_MS) for d in (0, 1) for h in model.hours]
            at = min(s for s in slots if s >= after_ms)
            at += self._rng.randint(0, 20 * 60_000)  # people do not measure on the minute
        self._tiebreak += 1
        heapq.heappush(self._queue, (at, self._tiebreak, patient, device, False))

    # -- measuring -----------------------------------------------------------------------------

    def _measure(
        self, patient: SimPatient, device: SimDevice, at_ms: int
    ) -> tuple[SimMessage, bool]:
        """The device's message, and whether the app would ask for a re-measure."""
        model = device.model
        spacing = model.every_ms // model.readings_per_upload if model.every_ms else 0
        readings = [
            self._reading(patient, device, kind, t)
            for step in range(model.readings_per_upload)
            for t in [at_ms - (model.readings_per_upload - 1 - step) * spacing]
            for kind in model.kinds
        ]
        if self._per_message:
            readings = self._resized(patient, device, readings, at_ms)
        sequence = self._sequence[device.device_id] = self._sequence.get(device.device_id, 0) + 1
        body = {
            "schema_version": 1,
            "message_id": f"{device.device_id}/{sequence}",
            "device_id": device.device_id,
            "patient_id": patient.patient_id,
            "readings": readings,
        }
        sent = at_ms + self._rng.randint(1_000, 30_000)
        message = SimMessage(
            patient.patient_id.encode(),
            json.dumps(body).encode(),
            sent,
            patient.patient_id,
            device.device_id,
            sequence,
            len(readings),
        )
        return message, any(_asks_again(r) for r in readings)

    def _resized(
        self,
        patient: SimPatient,
        device: SimDevice,
        readings: list[dict[str, object]],
        at_ms: int,
    ) -> list[dict[str, object]]:
        """Exactly `readings_per_message` readings: a gateway uploading buffered measurements."""
        wanted = self._per_message or len(readings)
        while len(readings) < wanted:
            back = at_ms - (len(readings) // max(1, len(device.model.kinds))) * 60_000
            kind = device.model.kinds[len(readings) % len(device.model.kinds)]
            readings.insert(0, self._reading(patient, device, kind, back))
        return readings[-wanted:]

    def _reading(
        self, patient: SimPatient, device: SimDevice, kind: K, t_ms: int
    ) -> dict[str, object]:
        value = self._value(patient, kind, t_ms)
        if device.model.device_type in (D.PULSE_OXIMETER, D.WEARABLE):
            value = self._artefact(kind, value)
        unit = device.unit(kind)
        if unit != BY_KIND[kind].unit and not isinstance(value, bool):
            conversion = BY_KIND[kind].units[unit]  # canonical -> device unit
            value = round((value - conversion.offset) / conversion.scale, 1)
        return {"kind": kind.value, "value": value, "unit": unit, "measured_at": _iso(t_ms)}

    def _value(self, patient: SimPatient, kind: K, t_ms: int) -> float | bool:
        severity = patient.worsening.severity(t_ms) if patient.worsening else 0.0
        value_type = BY_KIND[kind].value_type
        if value_type is ValueType.BOOLEAN:
            return self._answer(kind, severity)
        models = VITAL_MODELS[patient.programme]
        model = models.get(kind) or VITAL_MODELS[Programme.COVID][kind]
        base = patient.baseline.get(kind, model.mean)
        worst = patient.worsening.peak.get(kind, base) if patient.worsening else base
        value = base + severity * (worst - base) + self._rng.gauss(0, model.noise_sd)
        value = min(model.high, max(model.low, value))
        if value_type is ValueType.GRADE:
            return min(4, max(0, round(value)))
        return round(value, model.decimals) if model.decimals else float(round(value))

    def _artefact(self, kind: K, value: float | bool) -> float | bool:
        """A cold finger reads the SpO2 low; a moving hand reads the pulse high."""
        rng, artefacts = self._rng, self._artefacts
        if kind is K.SPO2 and rng.random() < artefacts.cold_finger:
            return float(max(70, round(float(value) - rng.uniform(4, 10))))
        if kind is K.HEART_RATE and rng.random() < artefacts.motion:
            return float(min(200, round(float(value) + rng.uniform(30, 60))))
        return value

    def _answer(self, kind: K, severity: float) -> bool:
        if kind is K.ON_OXYGEN:
            return True
        if kind is K.BREATHLESS_AT_REST:
            return severity > 0.85
        if kind is K.NEW_CONFUSION:
            return severity > 0.95 and self._rng.random() < 0.3
        return self._rng.random() < (0.002 + 0.3 * max(0.0, severity - 0.5))  # callback

    # -- faults --------------------------------------------------------------------------------

    def _send(self, message: SimMessage) -> None:
        """Queue `message` for sending, after applying at most one fault to it."""
        faults, rng = self._faults, self._rng
        roll = rng.random()
        if roll < faults.malformed:
            message = _malformed(message, rng)
        elif roll < faults.malformed + faults.late:
            delay = rng.randint(*faults.late_delay_ms)
            message = replace(message, timestamp_ms=message.timestamp_ms + delay, fault="late")
        elif roll < faults.malformed + faults.late + faults.duplicate:
            again = rng.randint(1_000, 60_000)
            self._enqueue(
                replace(message, timestamp_ms=message.timestamp_ms + again, fault="duplicate")
            )
        self._enqueue(message)

    def _enqueue(self, message: SimMessage) -> None:
        self._tiebreak += 1
        heapq.heappush(self._outbox, (message.timestamp_ms, self._tiebreak, message))


_MALFORMATIONS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "unknown_kind",
    "out_of_range",
    "naive_timestamp",
    "not_available",
    "wrong_type",
)


def _malformed(message: SimMessage, rng: random.Random) -> SimMessage:
    """The message with one defect; `fault` names the reason the pipeline must give."""
    reason = rng.choice(_MALFORMATIONS)
    body = json.loads(message.value)
    first = body["readings"][0]
    readings = 1
    if reason == "invalid_json":
        value, readings = message.value[: len(message.value) // 2], 0
    elif reason == "not_an_object":
        value, readings = json.dumps(body["readings"]).encode(), 0
    elif reason == "missing_field":
        del body["device_id"]
        value, readings = json.dumps(body).encode(), 0
    else:
        body["readings"] = [first]
        if reason == "unknown_kind":
            first["kind"] = "blood_alcohol"
        elif reason == "out_of_range":
            first["value"] = 100_000
        elif reason == "naive_timestamp":
            first["measured_at"] = first["measured_at"][:19]
        elif reason == "not_available":
            first["value"] = 8_388_607
        else:
            first["value"] = "high"
        value = json.dumps(body).encode()
    return replace(message, value=value, readings=readings, fault=f"malformed:{reason}")


def _iso(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).isoformat(timespec="seconds")
