"""The forecast in the loop: with ``forecast.fit`` a real tiny run logs ``forecast/<set>/final_loss`` (``_low``,
``_high``) at every validation, and trains exactly as without it (same losses, same data, same RNG draws)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rewarm.forecast import fit_run_dirs, save_fit
from rewarm.training.forecast import earlier_losses, forecast_columns
from rewarm.training.metrics import read_metrics
from tests.conftest import tiny_overrides
from tests.in_process import run_cli

STEPS = 24  # validated at every step: 25 points x 2 sets, enough for the law's 16 constants


@pytest.fixture(scope="module")
def runs(tiny_world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run without forecast, the law fitted on it, then the same run with ``forecast.fit``."""
    root = tmp_path_factory.mktemp("fc")
    config = root / "empty.yaml"
    config.write_text("{}\n")
    base = tiny_overrides(tiny_world, root / "runs", trainer__max_steps=STEPS, trainer__val_every_steps=1,
                          logging__wandb__mode="disabled")
    plain = run_cli(["train", str(config), *base, "run.name=plain"])
    assert plain.returncode == 0, plain.stderr[-2000:]
    fit_path = root / "fit.json"
    save_fit(fit_run_dirs([root / "runs" / "plain"], intervals=False), fit_path)
    with_fc = run_cli(["train", str(config), *base, "run.name=forecast", f"forecast.fit={fit_path}"])
    assert with_fc.returncode == 0, with_fc.stderr[-2000:]
    return root / "runs" / "plain", root / "runs" / "forecast"


def test_every_validation_row_has_the_forecast(runs: tuple[Path, Path]) -> None:
    _, with_fc = runs
    rows = read_metrics(with_fc / "metrics.csv")
    val_rows = [r for r in rows if r.get("val/pile/loss")]
    assert len(val_rows) == STEPS + 1
    for row in val_rows:
        for s in ("pile", "slimpajama"):
            final, low, high = (float(row[f"forecast/{s}/final_loss{x}"]) for x in ("", "_low", "_high"))
            assert math.isfinite(final) and low <= final <= high
    # refitting the offset on the run's own curve: at the end the forecast of the final is the fitted curve's
    # final corrected by the run's own residuals, close to what it measured
    last = val_rows[-1]
    assert abs(float(last["forecast/slimpajama/final_loss"]) - float(last["val/slimpajama/loss"])) < 0.1


def test_the_forecast_changes_nothing_of_the_training(runs: tuple[Path, Path]) -> None:
    plain, with_fc = runs
    a, b = read_metrics(plain / "metrics.csv"), read_metrics(with_fc / "metrics.csv")
    keys = ["step", "train/loss", "optim/lr", "optim/grad_norm", "val/pile/loss", "val/slimpajama/loss",
            "data/tokens_seen"]
    assert [[r.get(k) for k in keys] for r in a] == [[r.get(k) for k in keys] for r in b]
    assert not any(k.startswith("forecast/") and v for r in a for k, v in r.items())


def test_a_resumed_run_reads_its_earlier_points(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,tokens,val/a/loss,train/loss\n0,0,5.0,\n1,32,,4.9\n2,64,4.5,4.4\n4,128,4.1,4.0\n")
    assert earlier_losses(path, ["a", "b"], before=4) == {"a": {0: 5.0, 2: 4.5}, "b": {}}
    assert forecast_columns(["a"]) == ["forecast/a/final_loss", "forecast/a/final_loss_low", "forecast/a/final_loss_high"]
