"""The forecast's Python API: fit runs, predict a config's curves, refit a run's offsets in the loop, rank by the
objective. The command (``rewarm.forecast.cli``) and the study (sweep pruning) call these."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rewarm import config as rc
from rewarm.errors import ConfigError
from rewarm.forecast import inputs
from rewarm.forecast.fit import Series, fit_set, residual_warning
from rewarm.forecast.fitfile import Fit, SetFit, SetForecast
from rewarm.forecast.law import ANNEAL_FORMS, LawInput, predict

DEFAULT_ANNEAL = "momentum"
"""The annealing form ``fit`` uses without ``--anneal``: the more accurate on Luo et al.'s published curves
(benchmarks/forecast_mpl.py: worst held-out final-loss error 0.78 % against 1.20 % for multi_power)."""
LAWS = ("cpt",)
Z80 = 1.2815515655446004  # the 90th percentile of a standard normal: an 80 % two-sided interval


def fit_run_dirs(run_dirs: Sequence[Path], *, anneal: str | None = None, until_step: int | None = None,
                 until_fraction: float | None = None, intervals: bool = True) -> Fit:
    """Fit the law on rewarm run directories (refusing runs that cannot share a fit)."""
    from rewarm.forecast.runs import check_compatible, read_run_dir, truncate

    runs = [truncate(read_run_dir(Path(d)), until_step, until_fraction) for d in run_dirs]
    _unique_names([r.name for r in runs])
    check_compatible(runs)
    cfg = runs[0].cfg
    assert cfg is not None
    fit = _fit(runs, anneal or DEFAULT_ANNEAL, intervals, runs[0].roles)
    fit.base, fit.tokenizer, fit.val = inputs.base_id(cfg), inputs.tokenizer_id(cfg), inputs.val_ids(cfg)
    return fit


def fit_curves(paths: Sequence[Path], *, anneal: str | None = None, until_step: int | None = None,
               until_fraction: float | None = None, intervals: bool = True) -> Fit:
    """Fit the from-scratch law on external curves (CSV ``step,lr,loss[,set]``; each file one run)."""
    from rewarm.forecast.runs import read_curves, truncate

    runs = [truncate(read_curves(Path(p)), until_step, until_fraction) for p in paths]
    _unique_names([r.name for r in runs])
    sets = {tuple(sorted(r.observed)) for r in runs}
    if len(sets) > 1:
        raise ConfigError("", "the curves hold different sets: " + "; ".join(
            f"{r.name}: {', '.join(sorted(r.observed))}" for r in runs))
    fit = _fit(runs, anneal or DEFAULT_ANNEAL, intervals, {})
    fit.base_kind = "curves"
    return fit


def _unique_names(names: list[str]) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError("", f"two runs named {', '.join(dup)}: a fit needs distinct run names")


def _fit(runs: Sequence, anneal: str, intervals: bool, roles: Mapping[str, str]) -> Fit:
    if anneal not in ANNEAL_FORMS:
        raise ConfigError("", f"unknown --anneal {anneal!r}; known: {', '.join(ANNEAL_FORMS)}")
    scale = max(float(np.max(r.lrs)) for r in runs)
    if not scale > 0:
        raise ConfigError("", "every run's LR is 0: nothing to fit")
    kind = runs[0].base_kind
    series: dict[str, list[Series]] = {}
    for r in runs:
        law = LawInput(r.lrs / scale, r.pre_lrs / scale, r.base_kind, r.replay)
        for name, (steps, loss) in r.observed.items():
            keep = (steps <= len(r.lrs)) & (loss > 0) & ((steps > 0) | (kind != "scratch"))
            if keep.any():
                series.setdefault(name, []).append(Series(r.name, law, steps[keep], loss[keep]))
    _check_points(series, anneal, kind, runs)
    sets, warnings = {}, []
    for name, group in series.items():
        sets[name] = fit_set(group, roles.get(name, "downstream"), anneal, kind, intervals=intervals)
        warning = residual_warning(name, sets[name], np.concatenate([s.loss for s in group]))
        if warning:
            warnings.append(warning)
            print(f"warning: {warning}", file=sys.stderr)
    return Fit("cpt", anneal, scale, sets, [r.name for r in runs], base_kind=kind, warnings=warnings)


def _check_points(series: Mapping[str, list[Series]], anneal: str, kind: str, runs: Sequence) -> None:
    from rewarm.forecast.fit import param_names

    if not series:
        raise ConfigError("", f"runs {', '.join(r.name for r in runs)} hold no measured validation loss")
    points = sum(len(s.steps) for group in series.values() for s in group)
    params = sum(len(param_names(anneal, kind, len({round(s.law.replay, 6) for s in g}) > 1)) for g in series.values())
    if points < 3 * params:
        raise ConfigError("", f"too few points to fit: {points} measured losses for {params} free parameters (need at "
                              f"least 3 x {params} = {3 * params}); validate more often or fit more runs")


# ---------------------------------------------------------------- prediction


def predict_config(fit: Fit, cfg: rc.RunConfig, *, name: str | None = None) -> dict[str, SetForecast]:
    """The forecast curve and final loss (with its 80 % interval) of every validation set of ``cfg``."""
    check_predictable(fit, cfg, name or cfg.run.name)
    sched = inputs.run_schedule(cfg)
    law = LawInput(sched.lrs / fit.lr_scale, sched.pre_lrs / fit.lr_scale, sched.base, sched.replay)
    return {s: forecast_set(fit, s, law, np.array(sched.val_steps)) for s in cfg.data.val}


def predict_lrs(fit: Fit, lrs: np.ndarray, sets: Sequence[str] | None = None) -> dict[str, SetForecast]:
    """The forecast of a run given by its LR at every step (external curves: no base), at every step."""
    law = LawInput(np.asarray(lrs, dtype=np.float64) / fit.lr_scale, np.zeros(0), "scratch", 0.0)
    steps = np.arange(len(lrs))
    return {s: forecast_set(fit, s, law, steps) for s in (sets or fit.sets)}


def check_predictable(fit: Fit, cfg: rc.RunConfig, name: str) -> None:
    """Refuse a config whose base model or validation sets the fit has not seen."""
    if fit.base is None:
        raise ConfigError("", f"{name}: the fit was made on external curves (no base); predict with --lr-csv")
    base = inputs.base_id(cfg)
    if base != fit.base:
        raise ConfigError("model", f"{name} starts from {base}, the fit from {fit.base}: fit runs of that base first")
    unseen = [s for s in cfg.data.val if s not in fit.sets]
    if unseen:
        raise ConfigError("data.val", f"{name} validates on {', '.join(unseen)}, which the fit has not seen (it knows "
                                      f"{', '.join(fit.sets)})")
    ids = inputs.val_ids(cfg)
    other = [s for s in cfg.data.val if fit.val.get(s) not in (None, ids[s])]
    if other:
        raise ConfigError("data.val", f"{name}'s set {other[0]} is not the fit's ({ids[other[0]]} vs {fit.val[other[0]]})")


def forecast_set(fit: Fit, set_name: str, law: LawInput, steps: np.ndarray) -> SetForecast:
    """One set's curve at ``steps`` and its final loss with the 80 % interval (bootstrap spread and residual)."""
    sf: SetFit = fit.sets[set_name]
    offset = math.exp(fit.offsets.get(set_name, 0.0))
    curve = predict(sf.params, law, steps, fit.anneal) * offset
    final = float(curve[-1])
    finals = [float(predict(p, law, steps[-1:], fit.anneal)[0]) * offset for p in sf.samples]
    finals = [f for f in finals if math.isfinite(f)]
    spread = (np.percentile(finals, 90) - np.percentile(finals, 10)) / 2 if len(finals) > 1 else 0.0
    half = math.sqrt(spread**2 + (Z80 * sf.rmse) ** 2)
    return SetForecast(final, final - half, final + half, [(int(s), float(v)) for s, v in zip(steps, curve, strict=True)])


def refit_offsets(fit: Fit, cfg: rc.RunConfig, observed: Mapping[str, Sequence[tuple[int, float]]]) -> Fit:
    """A copy of ``fit`` whose forecasts for this run are shifted (per set, in log loss) to match its curve so far:
    the median log residual of the observed (step, loss) points. Sets without points keep offset 0."""
    check_predictable(fit, cfg, cfg.run.name)
    sched = inputs.run_schedule(cfg)
    law = LawInput(sched.lrs / fit.lr_scale, sched.pre_lrs / fit.lr_scale, sched.base, sched.replay)
    offsets = {}
    for name, points in observed.items():
        pts = [(s, v) for s, v in points if v > 0 and 0 <= s <= len(sched.lrs)]
        if name not in fit.sets or not pts:
            continue
        steps = np.array([s for s, _ in pts], dtype=np.int64)
        pred = predict(fit.sets[name].params, law, steps, fit.anneal)
        r = np.log([v for _, v in pts]) - np.log(np.where(pred > 0, pred, np.nan))
        if np.isfinite(r).any():
            offsets[name] = float(np.nanmedian(r))
    return fit.with_offsets(offsets)


def objective(forecasts: Mapping[str, SetForecast], cfg: rc.RunConfig) -> float:
    """``forecast.objective``'s weights (by each set's role) times the sets' forecast final losses, summed."""
    weights = cfg.forecast.objective
    return float(sum(weights.get(cfg.data.val[s].role, 0.0) * f.final_loss for s, f in forecasts.items()
                     if s in cfg.data.val))
