"""Findings are computed from metrics.csv files against the measured seed noise (constructed run directories)."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import pytest

from rewarm.demo.corpus import CorpusPaths
from rewarm.demo.findings import Cooldown, ema_before_cooldown, read_cooldown, read_curves, render
from rewarm.demo.study import findings_of, plan_study

START = {"pile": 3.0, "slimpajama": 5.0}
# Final (upstream, downstream) losses shaped like the papers' results; each run starts at START.
PAPER_LIKE = {
    "constant": (3.05, 4.50),
    "rewarm-0.5x": (3.20, 4.20),
    "rewarm-1x": (3.30, 4.10),
    "rewarm-2x": (3.40, 4.00),
    "warmup-0": (3.301, 4.102),
    "replay-5pct": (3.15, 4.11),
    "scratch": (6.00, 5.50),
    "upstream-rewarm": (2.95, 4.90),
    "rewarm-1x-seed1": (3.302, 4.101),
}
TITLES = ["Higher max LR", "Constant LR", "Replaying", "Every rewarmed", "Rewarming on the same", "Warmup length"]


def write_run(run_dir: Path, start: tuple[float, float], mid: tuple[float, float], final: tuple[float, float]) -> Path:
    """metrics.csv with validation at steps 0, 10, 20 and a train-only row in between (empty val cells)."""
    run_dir.mkdir(parents=True)
    cols = ["step", "tokens", "train/loss", "val/pile/loss", "val/pile/ppl", "val/slimpajama/loss", "forgetting/pile"]
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for step, (up, down) in ((0, start), (10, mid), (20, final)):
            w.writerow([step, step * 100, 1.0, up, 2.718 ** up, down, up - start[0]])
            if step < 20:
                w.writerow([step + 5, step * 100 + 500, 1.0, "", "", "", ""])
    return run_dir


def make_study(root: Path, finals: dict[str, tuple[float, float]], peak_upstream: float = 3.2) -> dict[str, Path]:
    dirs = {}
    for name, final in finals.items():
        start = (8.0, 8.0) if name == "scratch" else (START["pile"], START["slimpajama"])
        mid = (peak_upstream, 4.95) if name == "upstream-rewarm" else ((start[0] + final[0]) / 2, (start[1] + final[1]) / 2)
        dirs[name] = write_run(root / name, start, mid, final)
    return dirs


def verdicts(root: Path, finals: dict[str, tuple[float, float]], **kw: float) -> dict[str, bool]:
    plan = replace(plan_study(3e-3, CorpusPaths(root / "corpus")), wsd=None)  # the wsd run's finding: below
    found, numbers = findings_of(plan, make_study(root, finals, **kw))
    assert [f.title.split()[0] for f in found] == [t.split()[0] for t in TITLES]
    text = render(found, numbers)
    assert all(f.evidence in text for f in found)
    return {t: f.reproduced for t, f in zip(TITLES, found, strict=True)}


def test_read_curves_start_final_and_peak(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", (3.0, 5.0), (3.4, 4.5), (3.1, 4.0))
    curves = read_curves(run)
    assert set(curves) == {"pile", "slimpajama"}
    assert (curves["pile"].start, curves["pile"].final, curves["pile"].peak_after_start) == (3.0, 3.1, 3.4)
    assert curves["slimpajama"].peak_after_start == 4.5


def test_paper_like_numbers_reproduce_every_finding(tmp_path: Path) -> None:
    assert all(verdicts(tmp_path, PAPER_LIKE).values())


def test_reversed_lr_order_is_not_reproduced(tmp_path: Path) -> None:
    finals = dict(PAPER_LIKE, **{"rewarm-0.5x": PAPER_LIKE["rewarm-2x"], "rewarm-2x": PAPER_LIKE["rewarm-0.5x"]})
    v = verdicts(tmp_path, finals)
    assert not v["Higher max LR"] and v["Replaying"] and v["Every rewarmed"]


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        ({"replay-5pct": (3.31, 4.11)}, "Replaying"),  # replay forgets as much as no replay
        ({"scratch": (3.25, 4.05)}, "Every rewarmed"),  # scratch as good as a rewarmed run
        ({"constant": (3.35, 4.50)}, "Constant LR"),  # constant forgets more than some rewarmed run
        ({"warmup-0": (3.40, 4.10)}, "Warmup length"),  # no warmup ends 0.1 higher upstream
    ],
)
def test_one_contrary_number_flips_one_finding(tmp_path: Path, change: dict, finding: str) -> None:
    v = verdicts(tmp_path, dict(PAPER_LIKE, **change))
    assert not v[finding]
    assert all(ok for t, ok in v.items() if t != finding)


def test_no_rise_on_upstream_rewarm_is_not_reproduced(tmp_path: Path) -> None:
    assert not verdicts(tmp_path, PAPER_LIKE, peak_upstream=2.99)["Rewarming on the same"]


def test_large_seed_noise_makes_differences_insignificant(tmp_path: Path) -> None:
    v = verdicts(tmp_path, dict(PAPER_LIKE, **{"rewarm-1x-seed1": (3.6, 4.4)}))  # noise 0.3 -> threshold 0.6
    assert not v["Higher max LR"] and not v["Replaying"] and not v["Rewarming on the same"]
    assert v["Warmup length"]  # within the noise, as the finding states


def write_wsd(run_dir: Path, raw: dict[int, float], averaged: dict[int, float], steps: int = 20, cooldown: int = 4,
              ) -> Path:
    """metrics.csv of a WSD run: the LR of every step (warmup 1 step, stable, cooldown over the last ``cooldown``),
    validation of the raw and the averaged weights at the steps given."""
    run_dir.mkdir(parents=True)
    cols = ["step", "optim/lr", "val/slimpajama/loss", "val_avg/slimpajama/loss"]
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for step in range(steps + 1):
            x = (step - (steps - cooldown)) / cooldown
            lr = 0.0 if step == 0 else 1e-3 * (1 - math.sqrt(x) if x > 0 else 1.0)
            w.writerow([step, lr if step else "", raw.get(step, ""), averaged.get(step, "")])
    return run_dir


def test_read_cooldown_takes_the_last_evaluation_at_the_peak_lr(tmp_path: Path) -> None:
    run = write_wsd(tmp_path / "wsd", {0: 5.0, 10: 4.5, 15: 4.4, 20: 4.0}, {0: 5.0, 10: 4.45, 15: 4.3, 20: 4.05})
    c = read_cooldown(run, "slimpajama")
    assert c == Cooldown(step=16 - 1, raw_before=4.4, averaged_before=4.3, raw_end=4.0, end_step=20)
    assert c.recovered == pytest.approx(0.25)
    run = write_wsd(tmp_path / "at-16", {0: 5.0, 16: 4.4, 20: 4.0}, {0: 5.0, 16: 4.2, 20: 4.05})
    assert read_cooldown(run, "slimpajama").step == 16  # the cooldown's first step still has the peak LR
    with pytest.raises(ValueError, match="no evaluation of the averaged weights before the cooldown"):
        read_cooldown(write_wsd(tmp_path / "no-avg", {0: 5.0, 20: 4.0}, {20: 4.1}), "slimpajama")


@pytest.mark.parametrize(("averaged_before", "reproduced"), [
    (4.3, True),  # recovers 25 % of the cooldown's gain
    (4.399, False),  # better than the raw weights by less than the threshold
    (4.003, False),  # level with the end of the cooldown: not "part of the gain"
    (3.9, False),  # better than the cooldown itself: not what the paper finds
])
def test_the_ema_finding(tmp_path: Path, averaged_before: float, reproduced: bool) -> None:
    from rewarm.demo.findings import MIN_NOISE, StudyNumbers

    finals = {"a": (3.2, 4.0), "b": (3.3, 4.1)}  # seed noise 0.1: it does not apply to the paired differences
    curves = {r: read_curves(write_run(tmp_path / r, (3.0, 5.0), (3.1, 4.5), f)) for r, f in finals.items()}
    n = StudyNumbers(curves, upstream="pile", downstream="slimpajama", seed_pair=("a", "b"))
    assert n.threshold > 0.1
    f = ema_before_cooldown(n, Cooldown(15, 4.4, averaged_before, 4.0, 20), "wsd")
    assert f.reproduced is reproduced
    assert f"raw 4.400, EMA {averaged_before:.3f}" in f.evidence and "after the cooldown (step 20): raw 4.000" in f.evidence
    assert f"recovers {100 * (4.4 - averaged_before) / 0.4:.0f} % of the cooldown's gain" in f.evidence
    assert f"threshold {MIN_NOISE:.3f}" in f.evidence
