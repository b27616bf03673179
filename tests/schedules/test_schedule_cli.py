"""``rewarm schedule``: the CSV (every step, full precision), the phase table, the overlaid plot, refusals,
and no Lightning / torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rewarm import config as rc
from rewarm.cli import main as rewarm_main
from rewarm.schedules import build_lr_fn
from rewarm.schedules.cli import load_curves


def _expected(path: Path, overrides: list[str]) -> list[float]:
    cfg = rc.load(path, overrides)
    plan = rc.batch_plan(cfg)
    lr = build_lr_fn(cfg.schedule, plan.max_steps, plan.tokens_per_step)
    return [lr(t) for t in range(plan.max_steps)]


def test_csv_has_one_full_precision_row_per_step(run_yaml, capsys) -> None:  # noqa: ANN001
    path = run_yaml(max_steps=37, name="cosine", warmup_steps=4, max_lr=3e-4, min_lr=3e-5)
    assert rewarm_main(["schedule", str(path), "--csv", "schedule.zero_lr_steps=2"]) == 0  # overrides may follow
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step,lr"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(37))
    assert [float(r[1]) for r in rows] == _expected(path, ["schedule.zero_lr_steps=2"])  # exact: repr round-trips
    assert float(rows[0][1]) == float(rows[1][1]) == 0.0 and float(rows[6][1]) == 3e-4


def test_table_lists_phases_with_edges(run_yaml, capsys) -> None:  # noqa: ANN001
    path = run_yaml(max_steps=1000, name="gupta", warmup_fraction=0.01, max_lr=3e-4, min_lr=3e-5)
    assert rewarm_main(["schedule", str(path), "schedule.name=neox_cosine"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "schedule neox_cosine, 1,000 steps x 32 tokens/step" in lines[0]
    warmup = next(line.split() for line in lines if line.startswith("warmup"))
    cosine = next(line.split() for line in lines if line.startswith("cosine"))
    floor = next(line.split() for line in lines if line.startswith("constant"))
    assert warmup[1:3] == ["0", "10"] and warmup[5:7] == ["0", "0.0003"]
    assert cosine[1:3] == ["10", "806"] and cosine[5:7] == ["0.0003", "3e-05"]  # floor at W + 0.795 T
    assert floor[1:3] == ["806", "1,000"]
    assert "lr at the last step (999): 3e-05" in out


def test_several_configs_and_sets_overlay_with_labels(run_yaml, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    a = run_yaml(max_steps=50, name="a", warmup_steps=5)
    b = run_yaml(max_steps=80, name="b", warmup_steps=5)
    sets = ["schedule.name=cosine", 'schedule.name=wsd "schedule.cooldown_fraction=0.2"']
    argv = ["schedule", str(a), str(b), "schedule.max_lr=1e-3", "--set", sets[0], "--set", sets[1]]
    png = tmp_path / "lr.png"
    assert rewarm_main([*argv, "--csv", "--plot", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "step,a cosine,a wsd cooldown_fraction=0.2,b cosine,b wsd cooldown_fraction=0.2"
    assert len(out) == 1 + 80 and out[-1].startswith("79,,,")  # the 50-step runs end early: empty cells
    assert float(out[10].split(",")[3]) == _expected(b, ["schedule.max_lr=1e-3", "schedule.name=cosine"])[9]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    curves = load_curves([str(a)], [], [["schedule.name=constant"], ["schedule.name=linear"]])
    assert [c.label for c in curves] == ["constant", "linear"]


def test_invalid_config_exits_2_naming_the_key(run_yaml, capsys) -> None:  # noqa: ANN001
    path = run_yaml(max_steps=100, warmup_steps=10)
    assert rewarm_main(["schedule", str(path), "schedule.warmup_fraction=0.5"]) == 2
    assert capsys.readouterr().err.startswith("error: schedule.warmup_fraction: give only one of")
    assert rewarm_main(["schedule", str(path), "schedule.name=wsd", "schedule.cooldown_steps=95"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: schedule.cooldown_steps:") and "100 steps" in err


@pytest.mark.parametrize("flags", [["--csv"], ["--plot", "PNG"]])
def test_no_lightning_or_torch_import(run_yaml, tmp_path: Path, flags: list[str]) -> None:  # noqa: ANN001
    path = run_yaml(max_steps=20, warmup_steps=2)
    flags = [str(tmp_path / "x.png") if f == "PNG" else f for f in flags]
    code = (
        "import sys\n"
        "from rewarm.cli import main\n"
        f"assert main(['schedule', {str(path)!r}, *{flags!r}]) == 0\n"
        "heavy = [m for m in ('lightning', 'torch', 'transformers', 'deepspeed', 'wandb') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
