"""Smoke test of benchmarks/pretokenized_throughput.py at a tiny size: it runs on the real stack and ends with
its three ratio lines (no timing is asserted; figures are in BENCHMARKS.md)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pretokenized_throughput.py"


def test_quick_run_ends_with_the_three_ratios(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--cache", str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()
    names = [line.split("=", 1)[0] for line in out[-3:]]
    assert names == ["ratio_vs_memmap", "ratio_vs_text", "ratio_tokenize_vs_tokenizer"]
    for line in out[-3:]:
        assert re.fullmatch(r"[a-z_]+=[0-9]+\.[0-9]{3}", line) and math.isfinite(float(line.split("=")[1]))
    assert any(line.startswith("resume latency: row 0") for line in out)
    assert any(line.startswith("rss_growth_mb=") for line in out)
