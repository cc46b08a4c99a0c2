"""A short coverage-guided run of the decoder's fuzz target (loadtests/fuzz_decoder.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def test_the_decoder_survives_a_short_fuzzing_run(tmp_path: Path) -> None:
    runs = 20_000
    result = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [
            sys.executable,
            "-m",
            "loadtests.fuzz_decoder",
            f"-runs={runs}",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {runs} runs" in result.stderr
    assert not list(tmp_path.glob("crash-*"))
