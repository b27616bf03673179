"""Fitting the law: Huber (δ = 1e-3) on log-loss residuals, multi-start L-BFGS-B with bounds (scipy.optimize),
one set of constants per validation set shared by all runs, 80 % intervals from bootstrap refits over runs and
points. Scale constants (A, C, B, S_W, E) are fitted as log10 values."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from rewarm.forecast.fitfile import SetFit
from rewarm.forecast.law import LawInput, predict

HUBER_DELTA = 1e-3
BOOTSTRAP = 24
"""Bootstrap refits behind each interval."""
FIT_CHUNKS = 512
"""multi_power: chunks of LR changes while fitting (prediction uses law.CHUNKS)."""
LARGE_RESIDUAL = 0.25
"""A fit whose RMSE exceeds this share of the spread (std) of the losses it fits is flagged."""

# name -> (fitted as log10, lower, upper); L0's upper bound is the set's lowest loss.
PARAMS: dict[str, tuple[bool, float, float]] = {
    "L0": (False, 1e-3, math.inf),
    "A": (True, -6.0, 4.0),
    "alpha": (False, 0.01, 3.0),
    "C": (True, -9.0, 1.0),
    "B": (True, -5.0, 2.0),
    "C_mp": (True, -4.0, 4.0),
    "beta": (False, 0.01, 3.0),
    "gamma": (False, 0.0, 2.0),
    "S_W": (True, -2.0, 9.0),
    "B_s": (False, -5.0, 5.0),
    "E": (True, -4.0, 4.0),
    "beta_s": (False, 0.01, 3.0),
    "rho": (False, 0.05, 20.0),
}


@dataclass(frozen=True)
class Series:
    """One run's measured losses on one validation set."""

    run: str
    law: LawInput
    steps: np.ndarray
    loss: np.ndarray


def param_names(anneal: str, base_kind: str, replay_free: bool) -> list[str]:
    """The free constants of one set's law."""
    names = ["L0", "A", "alpha"] + (["C"] if anneal == "momentum" else ["B", "C_mp", "beta", "gamma"])
    if base_kind == "annealed":
        names.append("S_W")
    if base_kind in ("annealed", "known"):
        names += ["B_s", "E", "beta_s"] + (["rho"] if replay_free else [])
    return names


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


class _Problem:
    """One set's fit: the parameter vector's layout, its bounds and the objective."""

    def __init__(self, series: Sequence[Series], names: list[str], role: str, anneal: str) -> None:
        self.series, self.names, self.anneal = list(series), names, anneal
        losses = np.concatenate([s.loss for s in self.series])
        self.lo_loss, self.hi_loss = float(losses.min()), float(losses.max())
        sign = (0.0, 5.0) if role == "upstream" else (-5.0, 0.0)
        self.bounds = [(PARAMS[n][1], self.lo_loss if n == "L0" else PARAMS[n][2]) if n != "B_s" else sign
                       for n in names]
        self.log = [PARAMS[n][0] for n in names]

    def unpack(self, x: np.ndarray) -> dict[str, float]:
        return {n: float(10.0**v if lg else v) for n, v, lg in zip(self.names, x, self.log, strict=True)}

    def pack(self, p: dict[str, float]) -> np.ndarray:
        x = [math.log10(p[n]) if lg else p[n] for n, lg in zip(self.names, self.log, strict=True)]
        return np.clip(np.array(x, dtype=np.float64), [b[0] for b in self.bounds], [b[1] for b in self.bounds])

    def residuals(self, p: dict[str, float], series: Sequence[Series] | None = None) -> np.ndarray:
        out = []
        for s in series if series is not None else self.series:
            pred = predict(p, s.law, s.steps, self.anneal, FIT_CHUNKS)
            out.append(np.log(s.loss) - np.log(np.where(pred > 1e-6, pred, np.nan)))
        return np.concatenate(out)

    def objective(self, x: np.ndarray, series: Sequence[Series] | None = None) -> float:
        r = self.residuals(self.unpack(x), series)
        if not np.all(np.isfinite(r)):
            return 1e3 + float(np.sum(~np.isfinite(r)))
        return float(huber(r).sum())

    def starts(self) -> list[np.ndarray]:
        """A grid of starting points over the exponents and scales the fit is most sensitive to."""
        area = float(np.median([s.law.area[-1] - s.law.area[len(s.law.pre_lrs)] for s in self.series])) or 1.0
        upstream = "B_s" in self.names and self.bounds[self.names.index("B_s")][0] >= 0
        base = {"L0": 0.7 * self.lo_loss, "A": max(self.hi_loss - 0.7 * self.lo_loss, 0.05) * area**0.5,
                "alpha": 0.5, "C": 1e-3, "B": 0.3, "C_mp": 2.0, "beta": 0.6, "gamma": 0.6, "S_W": 10 * area,
                "B_s": 0.05 if upstream else -0.05, "E": 1.0, "beta_s": 0.5, "rho": 1.0}
        grid = {"alpha": (0.3, 0.8), "L0": (0.5 * self.lo_loss, 0.85 * self.lo_loss)}
        if "S_W" in self.names:
            grid["S_W"] = (area, 100 * area)
        if "E" in self.names:
            grid["E"] = (0.1, 10.0)
        keys = list(grid)
        out = []
        for values in itertools.product(*(grid[k] for k in keys)):
            p = dict(base, **dict(zip(keys, values, strict=True)))
            out.append(self.pack({n: p[n] for n in self.names}))
        return out[:8] if "C" in self.names else out[:4]

    def solve(self, x0: np.ndarray, series: Sequence[Series] | None = None, maxiter: int = 500):
        return minimize(self.objective, x0, args=(series,), method="L-BFGS-B", bounds=self.bounds,
                        options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-10})


def fit_set(series: Sequence[Series], role: str, anneal: str, base_kind: str, *, intervals: bool = True,
            seed: int = 0) -> SetFit:
    """Fit one validation set's constants on every run's points; bootstrap refits for the intervals."""
    replay_free = len({round(s.law.replay, 6) for s in series}) > 1
    problem = _Problem(series, param_names(anneal, base_kind, replay_free), role, anneal)
    best = min((problem.solve(x0) for x0 in problem.starts()), key=lambda r: r.fun)
    params = problem.unpack(best.x)
    if "B_s" in params and "rho" not in params:
        params["rho"] = 1.0
    r = problem.residuals(params)
    pred = np.exp(-r) * np.concatenate([s.loss for s in series])
    rmse = float(np.sqrt(np.mean((np.concatenate([s.loss for s in series]) - pred) ** 2)))
    samples = _bootstrap(problem, best.x, seed) if intervals else []
    n_points = sum(len(s.steps) for s in series)
    return SetFit(role, params, samples, rmse, n_points, len(problem.names), bool(best.success))


def _bootstrap(problem: _Problem, x: np.ndarray, seed: int) -> list[dict[str, float]]:
    """Refits on resampled runs (with replacement), each run's points resampled too."""
    rng = np.random.default_rng(seed)
    runs = sorted({s.run for s in problem.series})
    by_run = {r: [s for s in problem.series if s.run == r] for r in runs}
    out = []
    for _ in range(BOOTSTRAP):
        picked = [by_run[runs[i]] for i in rng.integers(0, len(runs), len(runs))]
        series = []
        for group in picked:
            for s in group:
                idx = np.sort(rng.integers(0, len(s.steps), len(s.steps)))
                series.append(Series(s.run, s.law, s.steps[idx], s.loss[idx]))
        res = problem.solve(x, series, maxiter=60)
        p = problem.unpack(res.x)
        if "B_s" in p and "rho" not in p:
            p["rho"] = 1.0
        out.append(p)
    return out


def residual_warning(name: str, fit: SetFit, losses: np.ndarray) -> str | None:
    """The warning a set's fit earns (not converged, or residual large against the losses' spread), else None."""
    spread = float(np.std(losses))
    if not fit.converged:
        return f"{name}: the fit did not converge (RMSE {fit.rmse:.4f} nats); its forecasts are doubtful"
    if fit.rmse > LARGE_RESIDUAL * spread:
        return (f"{name}: large residual, RMSE {fit.rmse:.4f} nats against a spread of {spread:.4f} nats of the "
                "losses fitted; its forecasts are doubtful")
    return None
