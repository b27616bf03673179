"""The fitter recovers known constants from synthetic curves, forecasts held-out recipes of a continual run from
their config, and refits a run's offset in the loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rewarm.forecast import fit_curves, fit_run_dirs, objective, predict_config, predict_lrs, refit_offsets
from rewarm.forecast.law import LawInput, predict
from tests.forecast.synth import RECIPES, config, truth, write_curve, write_run

SCRATCH = {"L0": 2.0, "A": 1.0, "alpha": 0.5, "C": 2e-4, "B": 0.4, "C_mp": 2.0, "beta": 0.6, "gamma": 0.5}


def schedules(t: int = 240) -> dict[str, np.ndarray]:
    w, out = 12, {}
    ramp = np.linspace(0, 1, w)
    out["constant"] = np.concatenate([ramp, np.ones(t - w)])
    out["cosine"] = np.concatenate([ramp, 0.1 + 0.45 * (1 + np.cos(np.pi * np.arange(t - w) / (t - w)))])
    out["two-stage"] = np.concatenate([ramp, np.ones(t // 2 - w), np.full(t - t // 2, 0.3)])
    out["wsd"] = np.concatenate([ramp, np.ones(t - w - 48), np.linspace(1, 0.1, 48)])
    return {k: v * 3e-3 for k, v in out.items()}


def curves(tmp_path: Path, anneal: str, names: list[str]) -> list[Path]:
    paths = []
    for name in names:
        lrs = schedules()[name]
        steps = np.arange(8, len(lrs) + 1, 8)
        loss = predict(SCRATCH, LawInput(lrs / 3e-3, np.zeros(0)), steps, anneal)
        paths.append(write_curve(tmp_path / f"{name}.csv", lrs, dict(zip(steps.tolist(), loss, strict=True))))
    return paths


@pytest.mark.parametrize("anneal", ["momentum", "multi_power"])
def test_fit_recovers_known_constants_from_synthetic_curves(tmp_path: Path, anneal: str) -> None:
    fit = fit_curves(curves(tmp_path, anneal, ["constant", "cosine", "two-stage"]), anneal=anneal, intervals=False)
    got = fit.sets["loss"]
    assert fit.base_kind == "curves" and fit.anneal == anneal and not fit.warnings
    assert got.rmse < 2e-3
    if anneal == "momentum":  # identifiable exactly: every constant comes back
        for key in ("L0", "A", "alpha", "C"):
            assert got.params[key] == pytest.approx(SCRATCH[key], rel=2e-2)
    held_out = schedules()["wsd"]
    want = predict(SCRATCH, LawInput(held_out / 3e-3, np.zeros(0)), np.array([len(held_out) - 1]), anneal)[0]
    assert predict_lrs(fit, held_out)["loss"].final_loss == pytest.approx(want, abs=5e-3)


@pytest.fixture(scope="module")
def cpt_fit(tmp_path_factory: pytest.TempPathFactory):
    """Three continual runs from one base (pre-training known), 2 mnats of noise; fitted with intervals."""
    root = tmp_path_factory.mktemp("runs")
    dirs = [write_run(root, name, RECIPES[name], noise=0.002, seed=i) for i, name in
            enumerate(["cos-1x", "cos-half", "constant"])]
    return fit_run_dirs(dirs, anneal="momentum"), dirs


def test_cpt_fit_forecasts_a_held_out_recipe(cpt_fit) -> None:
    fit, _ = cpt_fit
    assert set(fit.sets) == {"up", "down"} and fit.base_kind == "known"
    assert fit.sets["up"].params["B_s"] > 0 > fit.sets["down"].params["B_s"]  # forgetting up, adapting down
    cfg = config([*RECIPES["wsd"], "run.name=wsd"])
    forecast = predict_config(fit, cfg)
    assert list(forecast) == ["up", "down"]
    for name, (steps, loss) in truth(cfg).items():
        f = forecast[name]
        assert [s for s, _ in f.curve] == steps
        assert f.final_loss == pytest.approx(loss[-1], abs=0.01)
        assert f.low < f.final_loss < f.high and f.high - f.low < 0.05
    assert objective(forecast, cfg) == pytest.approx(forecast["down"].final_loss)
    both = config([*RECIPES["wsd"], "forecast.objective.upstream=1"])
    assert objective(forecast, both) == pytest.approx(forecast["down"].final_loss + forecast["up"].final_loss)


def test_refit_offsets_moves_the_forecast_onto_the_runs_curve(cpt_fit) -> None:
    fit, _ = cpt_fit
    cfg = config([*RECIPES["wsd"], "run.name=wsd"])
    before = predict_config(fit, cfg)
    observed = {s: [(st, v * 1.02) for st, v in f.curve[:6]] for s, f in before.items()}  # 2 % above the forecast
    moved = refit_offsets(fit, cfg, observed)
    after = predict_config(moved, cfg)
    for s in before:
        assert moved.offsets[s] == pytest.approx(np.log(1.02), rel=1e-6)
        assert after[s].final_loss == pytest.approx(before[s].final_loss * 1.02, rel=1e-9)
    assert fit.offsets == {}  # the fit itself is unchanged
