"""Fitting the law: Huber (δ = 1e-3) on log-loss residuals, multi-start L-BFGS-B with bounds (scipy.optimize),
one set of constants per validation set shared by all runs, 80 % intervals from bootstrap refits over runs and
points. Scale constants (A, C, B, S_W, E) are fitted as log10 values."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from rewarm.forecast.fitfile import SetFit
from rewarm.forecast.law import _MIN_AREA, LAMBDA, LawInput, LdKernel, g_terms

HUBER_DELTA = 1e-3
LAMBDAS = (0.97, 0.99, 0.999)
"""momentum: the decay factors tried (the best fit's is kept as ``lam``); Tissue et al.'s 0.999 unless another
fits clearly better (its Huber objective below ``LAMBDA_GAIN`` times 0.999's): a short run's rewarm bump fades in tens
of steps, not thousands."""
LAMBDA_GAIN = 0.7
SCAN_ITER = 150
"""momentum: L-BFGS-B iterations per start while scanning the decay factors (the chosen start is then polished)."""
BOOTSTRAP = 20
"""Bootstrap refits behind each interval."""
FIT_CHUNKS = 256
"""multi_power: chunks of LR changes while fitting (prediction uses law.CHUNKS)."""
LARGE_RESIDUAL = 0.25
"""A fit whose RMSE exceeds this share of the spread (std) of the losses it fits is flagged."""

# name -> (fitted as log10, lower, upper); L0's upper bound is the set's lowest loss.
PARAMS: dict[str, tuple[bool, float, float]] = {
    "L0": (False, 1e-3, math.inf),
    "A": (True, -6.0, 4.0),
    "alpha": (False, 0.01, 1.0),
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


class Features:
    """Every measured point of one set's runs, with what the law needs of it that no constant changes: forward
    area, momentum area, continual area, replay, and the multi-power kernel rows. The law and its gradient are then
    elementwise over the points (fast enough for multi-start fits and bootstrap refits)."""

    def __init__(self, series: Sequence[Series], anneal: str, lam: float = LAMBDA) -> None:
        self.loss = np.concatenate([s.loss for s in series])
        self.run = np.concatenate([np.full(len(s.steps), i) for i, s in enumerate(series)])
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("s1", "s2", "cpt", "replay", "shift", "annealed")}
        kernels: list[tuple[np.ndarray, ...]] = []
        for s in series:
            law, n = s.law, s.steps + len(s.law.pre_lrs)
            cols["s1"].append(law.area[n])
            cols["s2"].append(law.s2_at(lam)[n])
            cols["cpt"].append(law.area[n] - law.area[len(law.pre_lrs)])
            cols["replay"].append(np.full(len(n), min(max(law.replay, 0.0), 1.0)))
            cols["shift"].append(np.full(len(n), float(law.base != "scratch")))
            cols["annealed"].append(np.full(len(n), float(law.base == "annealed")))
            if anneal == "multi_power":
                kernels.append(LdKernel(law.full, FIT_CHUNKS).rows(n))
        for k, v in cols.items():
            setattr(self, k, np.concatenate(v))
        if kernels:
            width = max(k[0].shape[1] for k in kernels)
            self.ker = tuple(np.concatenate([np.pad(k[i], ((0, 0), (0, width - k[i].shape[1]))) for k in kernels])
                             for i in range(3))

    def law(self, p: Mapping[str, float], idx: np.ndarray, grad: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Predicted losses at the points ``idx`` and, with ``grad``, their derivatives in each constant."""
        s1 = np.maximum(self.s1[idx] + p.get("S_W", 0.0) * self.annealed[idx], _MIN_AREA)
        power = p["A"] * s1 ** (-p["alpha"])
        y = p["L0"] + power
        jac: dict[str, np.ndarray] = {}
        if grad:
            jac = {"L0": np.ones(len(idx)), "A": power / p["A"], "alpha": -power * np.log(s1)}
            if "S_W" in p:
                jac["S_W"] = -p["alpha"] * power / s1 * self.annealed[idx]
        if "C" in p:
            y = y - p["C"] * self.s2[idx]
            jac["C"] = -self.s2[idx]
        if "B" in p:
            s, eta, d = (k[idx] for k in self.ker)
            g = g_terms(s, eta, p["C_mp"], p["beta"], p["gamma"], grad)
            y = y - p["B"] * (d * g[0]).sum(axis=1)
            if grad:
                jac["B"] = -(d * g[0]).sum(axis=1)
                for name, gi in zip(("C_mp", "beta", "gamma"), g[1:], strict=True):
                    jac[name] = -p["B"] * (d * gi).sum(axis=1)
        if "B_s" in p:
            y = y + self._shift(p, idx, jac if grad else None)
        return y, jac

    def _shift(self, p: Mapping[str, float], idx: np.ndarray, jac: dict[str, np.ndarray] | None) -> np.ndarray:
        c, r, on = self.cpt[idx], self.replay[idx], self.shift[idx]
        rho = p.get("rho", 1.0)
        f = np.where(r < 1, (1 - np.minimum(r, 1 - 1e-12)) ** rho, 0.0) * on
        u = 1.0 + p["E"] * c
        h = 1.0 - u ** (-p["beta_s"])
        if jac is not None:
            jac["B_s"] = f * h
            jac["E"] = p["B_s"] * f * p["beta_s"] * u ** (-p["beta_s"] - 1.0) * c
            jac["beta_s"] = p["B_s"] * f * u ** (-p["beta_s"]) * np.log(u)
            if "rho" in p:
                jac["rho"] = p["B_s"] * h * f * np.log(np.maximum(1 - r, 1e-12))
        return p["B_s"] * f * h


class _Problem:
    """One set's fit: the parameter vector's layout, its bounds, the objective and its gradient."""

    def __init__(self, series: Sequence[Series], names: list[str], role: str, anneal: str,
                 lam: float = LAMBDA) -> None:
        self.series, self.names, self.anneal, self.lam = list(series), names, anneal, lam
        self.features = Features(series, anneal, lam)
        self.all = np.arange(len(self.features.loss))
        self.lo_loss, self.hi_loss = float(self.features.loss.min()), float(self.features.loss.max())
        sign = (0.0, 5.0) if role == "upstream" else (-5.0, 0.0)
        # L0 is the hidden pre-training curve's floor: below every loss, except on a downstream set, whose loss
        # the shift term (B_s < 0) takes below that curve
        l0_hi = self.lo_loss if role == "upstream" or "B_s" not in names else self.hi_loss
        self.bounds = [(PARAMS[n][1], l0_hi if n == "L0" else PARAMS[n][2]) if n != "B_s" else sign
                       for n in names]
        self.log = [PARAMS[n][0] for n in names]

    def unpack(self, x: np.ndarray) -> dict[str, float]:
        return {n: float(10.0**v if lg else v) for n, v, lg in zip(self.names, x, self.log, strict=True)}

    def pack(self, p: Mapping[str, float]) -> np.ndarray:
        x = [math.log10(p[n]) if lg else p[n] for n, lg in zip(self.names, self.log, strict=True)]
        return np.clip(np.array(x, dtype=np.float64), [b[0] for b in self.bounds], [b[1] for b in self.bounds])

    def residuals(self, p: Mapping[str, float], idx: np.ndarray | None = None) -> np.ndarray:
        idx = self.all if idx is None else idx
        pred, _ = self.features.law(p, idx, grad=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log(self.features.loss[idx]) - np.log(np.where(pred > 1e-6, pred, np.nan))

    def objective(self, x: np.ndarray, idx: np.ndarray) -> tuple[float, np.ndarray]:
        """Huber of the log residuals at the points ``idx``, and its gradient in x."""
        p = self.unpack(x)
        pred, jac = self.features.law(p, idx, grad=True)
        if not np.all(pred > 1e-6):
            return 1e3 + float(np.sum(pred <= 1e-6)), np.zeros(len(x))
        r = np.log(self.features.loss[idx]) - np.log(pred)
        dr = np.where(np.abs(r) <= HUBER_DELTA, r, HUBER_DELTA * np.sign(r)) * (-1.0 / pred)
        grad = np.array([float(dr @ jac[n]) * (p[n] * math.log(10) if lg else 1.0)
                         for n, lg in zip(self.names, self.log, strict=True)])
        return float(huber(r).sum()), grad

    def starts(self) -> list[np.ndarray]:
        """A grid of starting points over the exponents and scales the fit is most sensitive to."""
        area = float(np.median(self.features.cpt[self.features.cpt > 0])) if np.any(self.features.cpt > 0) else 1.0
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
        return out[:8]

    def solve(self, x0: np.ndarray, idx: np.ndarray | None = None, maxiter: int = 1000):
        return minimize(self.objective, x0, args=(self.all if idx is None else idx,), jac=True, method="L-BFGS-B",
                        bounds=self.bounds, options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-9})


def fit_set(series: Sequence[Series], role: str, anneal: str, base_kind: str, *, intervals: bool = True,
            seed: int = 0) -> SetFit:
    """Fit one validation set's constants on every run's points; bootstrap refits for the intervals."""
    replay_free = len({round(s.law.replay, 6) for s in series}) > 1
    names = param_names(anneal, base_kind, replay_free)
    with threadpool_limits(1):  # L-BFGS-B's BLAS calls are tiny: threads only spin (10x slower on a busy machine)
        tried = []
        for lam in (LAMBDAS if anneal == "momentum" else (LAMBDA,)):
            problem = _Problem(series, names, role, anneal, lam)
            best = min((problem.solve(x0, maxiter=SCAN_ITER if anneal == "momentum" else 400)
                        for x0 in problem.starts()), key=lambda r: r.fun)
            tried.append((best.fun, lam, problem, best))
        _, lam, problem, best = min(tried, key=lambda t: t[0] / (1.0 if t[1] == LAMBDA else LAMBDA_GAIN))
        if anneal == "momentum":  # the scan's best start, polished
            best = min(best, problem.solve(best.x, maxiter=1000), key=lambda r: r.fun)
        samples = [dict(p, lam=lam) for p in _bootstrap(problem, best.x, seed)] if intervals else []
    params = _complete(problem.unpack(best.x))
    if anneal == "momentum":
        params["lam"] = lam
    loss = problem.features.loss
    rmse = float(np.sqrt(np.mean((loss - loss * np.exp(-problem.residuals(params))) ** 2)))
    converged = bool(best.success) or "ABNORMAL" in str(best.message) and best.fun < 1e-3 * len(loss)
    return SetFit(role, params, samples, rmse, len(loss), len(problem.names), converged)


def _complete(p: dict[str, float]) -> dict[str, float]:
    if "B_s" in p and "rho" not in p:
        p["rho"] = 1.0  # the runs share one replay fraction: the factor is 1 (or 0 at full replay)
    return p


def _bootstrap(problem: _Problem, x: np.ndarray, seed: int) -> list[dict[str, float]]:
    """Refits on resampled runs (with replacement), each run's points resampled too."""
    rng = np.random.default_rng(seed)
    runs = [np.flatnonzero(problem.features.run == i) for i in np.unique(problem.features.run)]
    out = []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([rng.choice(runs[i], len(runs[i])) for i in rng.integers(0, len(runs), len(runs))])
        out.append(_complete(problem.unpack(problem.solve(x, idx, maxiter=100).x)))
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
