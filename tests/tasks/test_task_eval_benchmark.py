"""benchmarks/task_eval.py at a tiny size, run as `make bench` runs it: it checks that rewarm's and lm-eval's
values agree and ends with ``ratio_vs_lm_eval=<x>`` (no timing is asserted)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_quick_run_ends_with_the_ratio(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "task_eval.py"), "--quick", "--cache", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    name, value = lines[-1].split("=")
    assert name == "ratio_vs_lm_eval" and math.isfinite(float(value)) and float(value) > 0
    assert any(line.startswith("round 0: rewarm") for line in lines)
