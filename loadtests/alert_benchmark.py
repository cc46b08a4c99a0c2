"""The alert engine alone against the per-reading scalar reference, in the same run.

Readings of mixed kinds for a Covidom-like cohort (the simulator's programme
mix and vital models; 3 % of values drawn at the worsening extreme so rules
fire), measured within the last hour, fed in pipeline-sized batches in
arrival order. Both engines see the same batches; their candidates are
compared on the reference's share, so the speed-up is between two
implementations that agree.

    python -m loadtests.alert_benchmark                      # 1M readings, 100k patients
    python -m loadtests.alert_benchmark --readings 100000 --patients 10000 --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerts.engine import Candidate, Engine, PatientProfile
from alerts.programmes import load_config
from devices.catalogue import BY_KIND
from devices.registry import DeviceType, Programme
from devices.simulator import COVIDOM_MIX, VITAL_MODELS
from tests.reference_rules import ReferenceEngine, as_fired, key

HOUR_US = 3_600_000_000
NOW_US = 1_795_000_000_000_000  # 2026-11-18
BATCH = 20_000
# The rules themselves, as the reference computes them: every firing emitted.
RULES_ONLY = dataclasses.replace(load_config(), repeat_window_us=0)
DEVICE = {
    Programme.COVID: DeviceType.PULSE_OXIMETER,
    Programme.HEART_FAILURE: DeviceType.SCALE,
    Programme.RESPIRATORY: DeviceType.PULSE_OXIMETER,
    Programme.DIABETES: DeviceType.GLUCOMETER,
}


@dataclass(frozen=True, slots=True)
class Readings:
    patient: npt.NDArray[np.int32]
    kind: npt.NDArray[np.int16]
    value: npt.NDArray[np.float64]
    at: npt.NDArray[np.int64]
    device: npt.NDArray[np.int32]

    def batch(self, start: int, stop: int) -> Readings:
        s = slice(start, stop)
        return Readings(self.patient[s], self.kind[s], self.value[s], self.at[s], self.device[s])

    def rows(self) -> list[tuple[int, int, float, int, int, int | None]]:
        return [
            (p, k, v, t, NOW_US, d)
            for p, k, v, t, d in zip(
                self.patient.tolist(),
                self.kind.tolist(),
                self.value.tolist(),
                self.at.tolist(),
                self.device.tolist(),
                strict=True,
            )
        ]


def cohort(patients: int, rng: np.random.Generator) -> tuple[list[PatientProfile], list[Programme]]:
    programmes = list(COVIDOM_MIX)
    chosen = rng.choice(len(programmes), patients, p=list(COVIDOM_MIX.values()))
    profiles, of_patient = [], []
    for patient_key, index in enumerate(chosen.tolist(), start=1):
        programme = programmes[index]
        of_patient.append(programme)
        profiles.append(
            PatientProfile(
                patient_key,
                programme,
                NOW_US - 5 * 24 * HOUR_US,
                0,
                [(patient_key, DEVICE[programme])],
            )
        )
    return profiles, of_patient


def readings(count: int, programmes: list[Programme], rng: np.random.Generator) -> Readings:
    patient = rng.integers(1, len(programmes) + 1, count).astype(np.int32)
    kind = np.empty(count, np.int16)
    value = np.empty(count)
    for programme, models in VITAL_MODELS.items():
        mine = np.flatnonzero([programmes[p - 1] is programme for p in patient.tolist()])
        kinds = list(models)
        which = rng.integers(0, len(kinds), len(mine))
        for i, vital in enumerate(kinds):
            rows = mine[which == i]
            model = models[vital]
            spread = (model.between_sd**2 + model.noise_sd**2) ** 0.5
            drawn = rng.normal(model.mean, spread, len(rows))
            worst = model.mean + model.worst if vital.value == "body_weight" else model.worst
            drawn = np.where(rng.random(len(rows)) < 0.03, worst, drawn)
            kind[rows] = BY_KIND[vital].code
            value[rows] = np.clip(np.round(drawn, model.decimals), model.low, model.high)
    at = np.sort(rng.integers(NOW_US - HOUR_US, NOW_US, count))
    return Readings(patient, kind, value, at, patient.copy())


def run_engine(
    profiles: list[PatientProfile], data: Readings, stop: int
) -> tuple[float, list[Candidate]]:
    engine = Engine(RULES_ONLY)
    engine.add_patients(profiles)
    reference = np.full(BATCH, NOW_US, np.int64)
    candidates: list[Candidate] = []
    started = time.perf_counter()
    for start in range(0, stop, BATCH):
        b = data.batch(start, min(start + BATCH, stop))
        candidates.extend(
            engine.evaluate(b.patient, b.kind, b.value, b.at, reference[: len(b.patient)], b.device)
        )
    return time.perf_counter() - started, candidates


def run_reference(profiles: list[PatientProfile], data: Readings, stop: int) -> tuple[float, list]:  # type: ignore[type-arg]
    reference = ReferenceEngine(RULES_ONLY)
    reference.add_patients(profiles)
    fired = []
    started = time.perf_counter()
    for start in range(0, stop, BATCH):
        fired.extend(reference.evaluate(data.batch(start, min(start + BATCH, stop)).rows()))
    return time.perf_counter() - started, fired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument(
        "--reference-readings", type=int, default=200_000, help="the reference's share"
    )
    parser.add_argument("--repeat", type=int, default=3, help="paired runs of both engines")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.reference_readings = 1, min(args.reference_readings, 20_000)
    rng = np.random.default_rng(7)
    profiles, programmes = cohort(args.patients, rng)
    data = readings(args.readings, programmes, rng)
    shared = min(args.reference_readings, args.readings)

    reference_fired = run_reference(profiles, data, shared)[1]
    _, ours_on_shared = run_engine(profiles, data, shared)
    assert key(as_fired(ours_on_shared)) == key(reference_fired), "engines disagree"
    # Alternate the two so that a slow spell of this noisy machine hits both alike.
    reference_rates, engine_rates, ratios = [], [], []
    fired = 0
    for _ in range(args.repeat):
        reference_rates.append(shared / run_reference(profiles, data, shared)[0])
        engine_s, candidates = run_engine(profiles, data, args.readings)
        engine_rates.append(args.readings / engine_s)
        ratios.append(engine_rates[-1] / reference_rates[-1])
        fired = len(candidates)

    median = statistics.median
    print(f"readings {args.readings:,} for {args.patients:,} patients, batches of {BATCH:,}")
    print(f"engine     {median(engine_rates):>12,.0f} readings/s  (median of {args.repeat})")
    print(
        f"reference  {median(reference_rates):>12,.0f} readings/s  (median of {args.repeat}, "
        f"{shared:,} readings each)"
    )
    print(f"candidates {fired:,}; identical to the reference on its {shared:,} readings")
    ratio = median(ratios)
    verdict = "met" if ratio >= 50 else "MISSED"
    print(
        f"speed-up   {ratio:.0f}x  (median of the {args.repeat} paired runs: "
        f"{', '.join(f'{r:.0f}x' for r in ratios)}; target >= 50x: {verdict})"
    )


if __name__ == "__main__":
    main()
