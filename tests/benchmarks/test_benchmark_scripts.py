"""Smoke tests of benchmarks/*.py: each runs at a tiny size (``--quick``) and ends with its ``name=<x>`` line.

No timing is asserted (speed belongs to the benchmarks themselves; see BENCHMARKS.md). What is asserted:
the scripts run against the real stack, their last line has the format `make bench` collects, and the
contracts they check hold (the two evaluation loops agree; `rewarm check` imports no Lightning; cli_latency's
one-step `rewarm train` writes its row of step 0, read for ``train_startup_s``).
"""

from __future__ import annotations

import importlib
import math
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
LAST_LINE = re.compile(r"^(?P<name>[a-z_]+)=(?P<value>nan|[0-9]+(\.[0-9]+)?)$")


QUIETED = ("lightning", "lightning.pytorch", "lightning.fabric", "rewarm", "transformers", "datasets")


@contextmanager
def restored_process():
    """Restore what the scripts change process-wide (torch threads, logger levels, transformers' verbosity
    and progress bars): they run inside the test process, later tests must see the usual setup."""
    import logging

    import torch
    import transformers

    threads = torch.get_num_threads()
    levels = {n: logging.getLogger(n).level for n in QUIETED}
    verbosity = transformers.utils.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        transformers.utils.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()


@pytest.fixture()
def bench_modules():
    """Import benchmark scripts as modules (benchmarks/ on sys.path) inside ``restored_process``."""
    sys.path.insert(0, str(BENCH))
    with restored_process():
        yield lambda name: importlib.import_module(name)
    sys.path.remove(str(BENCH))


def last_line(text: str) -> tuple[str, float]:
    line = text.strip().splitlines()[-1]
    m = LAST_LINE.match(line)
    assert m, f"last line {line!r} is not name=<number>"
    return m["name"], float(m["value"])


@pytest.mark.parametrize("script,extra", [
    ("step_overhead", ["--workers", "0"]),
    ("eval_throughput", []),
    ("resume_latency", []),
    ("cli_latency", []),
])
def test_quick_run_prints_ratio_last(script, extra, bench_modules, tmp_path, capsys):
    value = bench_modules(script).main(["--quick", "--cache", str(tmp_path)] + extra)
    out = capsys.readouterr().out
    name, printed = last_line(out)
    assert name == script
    assert math.isfinite(value) and value > 0
    assert printed == pytest.approx(value, rel=1e-3, abs=1e-4)
    if script == "cli_latency":  # a real one-step `rewarm train`: launch to the end of its first step
        startup = re.findall(r"^train_startup_s=([0-9]+\.[0-9]+)$", out, re.M)
        assert len(startup) == 1 and float(startup[0]) > 0, out
        assert [line.split("=")[0] for line in out.splitlines() if re.match(r"^[a-z_]+=", line)] == [
            "help_s", "check_s", "python_startup_s", "train_startup_s", "cli_latency"]


def test_gpu_mfu_skips_cleanly_without_cuda(tmp_path):
    """Run as `make bench` runs it: a script with benchmarks/ as its directory (``import _common``)."""
    import torch

    proc = subprocess.run([sys.executable, str(BENCH / "gpu_mfu.py"), "--quick", "--cache", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, value = last_line(proc.stdout)
    assert name == "gpu_mfu"
    if torch.cuda.is_available():
        assert 0 < value < 1
    else:
        assert math.isnan(value)
        assert "skipped: no CUDA device" in proc.stdout


def test_common_helpers_build_a_loadable_world(bench_modules, tmp_path):
    C = bench_modules("_common")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = C.build_model_dir(tmp_path / "m", 32, 1, 2, 64)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert tok.eos_token_id == 0
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    path = C.corpus(tmp_path / "c.jsonl.zst", 10, seed=0)
    assert C.corpus(path, 10, seed=0).stat().st_mtime_ns == path.stat().st_mtime_ns  # reused, not rewritten


def test_process_settings_are_restored_after_a_script(bench_modules):
    import logging

    import torch

    C = bench_modules("_common")
    threads, level = torch.get_num_threads(), logging.getLogger("rewarm").level
    with restored_process():
        C.set_threads(threads + 1)
        C.quiet_logs()
        assert logging.getLogger("rewarm").level == logging.ERROR
        assert torch.get_num_threads() == threads + 1
    assert (torch.get_num_threads(), logging.getLogger("rewarm").level) == (threads, level)


def test_data_throughput_tiny_run_ends_with_both_ratios(tmp_path):
    """The data pipeline benchmark at a tiny size (one ~0.3 MB shard, seq 128), run as a script: both ratios
    on the last two lines, the alternated rounds printed, each run counting the corpus' tokens."""
    cmd = [sys.executable, str(BENCH / "data_throughput.py"), "--mb", "0.2", "--rss-mb", "", "--repeat", "2",
           "--seq-len", "128", "--vocab", "300", "--work", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    ratios = [LAST_LINE.match(line) for line in lines[-2:]]
    assert all(ratios), lines[-2:]
    assert [m["name"] for m in ratios] == ["ratio_vs_tokenizer", "ratio_vs_datasets_map"]
    assert all(float(m["value"]) > 0 for m in ratios)
    runs = [line for line in lines if line.startswith("[")]
    assert [line.split()[:2] for line in runs] == [[f"[{r}]", n] for r in (1, 2)
                                                   for n in ("tokenizer", "pipeline", "datasets_map")]
    tokens = {line.split()[1]: int(line.split()[2]) for line in runs}  # tokens of each run, exact
    assert tokens["datasets_map"] // 129 * 129 <= tokens["tokenizer"] < tokens["datasets_map"] + 129  # full rows
    # the pipeline: every token but the untimed first batch (8 rows) and an unfilled last batch (< 8 rows + a row)
    assert tokens["tokenizer"] - 16 * 129 < tokens["pipeline"] <= tokens["tokenizer"] - 8 * 129
