"""The loss law, pure numpy: forward area, the two annealing terms and the continual-pre-training law.

Conventions. ``lrs[i]`` is the LR applied at optimizer step i (0-based); the loss measured after ``n`` steps has
seen ``lrs[0..n-1]``. All LRs are divided by one scale (the largest LR of the fitted runs, kept in FIT.json) so
that the constants are of order one; areas are then in "steps at the peak LR".

- Forward area (Tissue et al. 2024, arXiv 2408.11029): ``S1(n) = Σ_{i<n} η_i``.
- Momentum annealing area (same paper): ``m_i = λ·m_{i-1} + (η_{i-1} - η_i)``, ``S2(n) = Σ_{i<n} m_i``, λ = 0.999
  (the paper's) or the fit's ``lam`` (``fit.LAMBDAS``); the law subtracts ``C·S2``. A rewarm (η rising) makes the
  differences negative: S2 falls, the loss bumps. With λ = 0.999 the momentum of a few hundred steps of decay hardly
  fades, so a rewarm back to the peak only brings m to about 0 and S2 stops growing: no bump. Short runs (the demo's
  60-step rewarms) need a faster fade (λ 0.97-0.99: the bump and its recovery within tens of steps).
- Multi-power loss drop (Luo et al. 2025, arXiv 2503.12811): ``LD(n) = Σ_{1≤k<n} (η_{k-1} - η_k)·G(η_k^(-γ)·S_k(n))``
  with ``S_k(n) = Σ_{k≤τ<n} η_τ`` and ``G(x) = 1 - (C·x + 1)^(-β)``; the law subtracts ``B·LD``. Computed in O(T)
  memory: only the steps whose LR changes count, the far ones grouped in chunks (``multi_power_ld``).
- Continual pre-training (Wang et al. 2025, arXiv 2505.07796): the same law over the base's pre-training LRs
  followed by the run's (``S1 = S1_pt + S1_cpt``, the annealing terms run through both), plus a distribution-shift
  term ``B_s·f(r)·(1 - (1 + E·S1_cpt)^(-β_s))``, a saturating power law in the continual area alone: ``B_s > 0``
  on an upstream set (the loss rises), ``< 0`` on a downstream one. ``f(r) = (1 - r)^ρ`` scales it by the run's
  replay fraction r (ρ fitted when the runs' replay fractions differ, else 1).
  Where the base's pre-training is unknown (no ``model.pretraining``) the base is taken as fully annealed: its
  area is a fitted constant ``S_W`` and its annealing gain is inside ``L0``. Without a base (``init: scratch``,
  external curves) there is no pre-training area and no shift term: the from-scratch law.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.signal import lfilter

LAMBDA = 0.999
"""Decay factor of the momentum annealing term (Tissue et al.'s λ)."""
ANNEAL_FORMS = ("momentum", "multi_power")
BASES = ("scratch", "annealed", "known")
"""How a run starts: from scratch (no base), from a base of unknown schedule (fully annealed), or known."""
CHUNKS = 2048
"""multi_power: steps with an LR change beyond this many are grouped in chunks (far from the evaluated step)."""
NEAR = 4  # multi_power: the chunks nearest the evaluated step are counted step by step
_BLOCK = 1 << 22  # matrix entries per block of evaluated steps (memory bound of multi_power_ld)
_MIN_AREA = 1e-3  # S1 is floored here (the loss of an untrained model is outside the law)


@dataclass(frozen=True)
class LawInput:
    """What the law needs of one run: its LRs (already divided by the fit's LR scale) and how it starts."""

    lrs: np.ndarray
    """The run's LR at every step 0..T-1."""
    pre_lrs: np.ndarray
    """The base's own pre-training LRs (``base == "known"``), else empty."""
    base: str = "scratch"
    replay: float = 0.0
    """Share of the training rows that replay the upstream data (0..1)."""

    @cached_property
    def full(self) -> np.ndarray:
        """The base's LRs followed by the run's."""
        return np.concatenate([self.pre_lrs, self.lrs]) if len(self.pre_lrs) else np.asarray(self.lrs)

    @cached_property
    def area(self) -> np.ndarray:
        return forward_area(self.full)

    @cached_property
    def s2(self) -> np.ndarray:
        return self.s2_at(LAMBDA)

    def s2_at(self, lam: float) -> np.ndarray:
        """``S2`` of ``full`` with the decay factor ``lam`` (cached per factor)."""
        cache = self.__dict__.setdefault("_s2", {})
        if lam not in cache:
            cache[lam] = momentum_area(self.full, lam)
        return cache[lam]


def forward_area(lrs: np.ndarray) -> np.ndarray:
    """``S1`` after n steps for n = 0..T (length T + 1)."""
    return np.concatenate([[0.0], np.cumsum(lrs, dtype=np.float64)])


def momentum_area(lrs: np.ndarray, lam: float = LAMBDA) -> np.ndarray:
    """``S2`` after n steps for n = 0..T (length T + 1); the first step has no previous LR (no jump)."""
    d = np.zeros(len(lrs))
    d[1:] = lrs[:-1] - lrs[1:]
    m = lfilter([1.0], [1.0, -lam], d)  # m_i = lam m_{i-1} + d_i, O(T)
    return np.concatenate([[0.0], np.cumsum(m)])


def multi_power_ld(lrs: np.ndarray, steps: np.ndarray, C: float, beta: float, gamma: float,
                   chunks: int = CHUNKS) -> np.ndarray:
    """``LD(n)`` (without its factor B) for every n in ``steps``, in O(T + len(steps)·chunks) memory.

    Exact when at most ``chunks`` steps change the LR; otherwise those changes are grouped in ``chunks`` runs of
    consecutive changes, each counted at its largest change, except the last ``NEAR`` chunks before n, counted exactly.
    """
    steps = np.asarray(steps, dtype=np.int64)
    kernel = LdKernel(lrs, chunks)
    out = np.empty(len(steps))
    for lo, hi in _blocks(len(steps), kernel.width):
        s, eta, d = kernel.rows(steps[lo:hi])
        out[lo:hi] = (d * g_terms(s, eta, C, beta, gamma)[0]).sum(axis=1)
    return out


class LdKernel:
    """The multi-power sum's terms for one LR sequence: for each evaluated n, the pairs (S_k(n), η_k) and weights
    d_k = η_{k-1} - η_k of the steps that change the LR. Beyond ``chunks`` changes, the small ones are grouped in
    chunks of consecutive changes counted at their middle, except the last ``NEAR`` chunks before n; the large
    ones (a rewarm's jump, a step schedule's drops: up to chunks/4 of them) always count exactly. Padding has
    weight 0."""

    def __init__(self, lrs: np.ndarray, chunks: int = CHUNKS) -> None:
        self.lrs = np.asarray(lrs, dtype=np.float64)
        self.area = forward_area(self.lrs)  # area[n] = Σ_{τ<n} η_τ
        k = np.flatnonzero(np.diff(self.lrs)) + 1  # steps whose LR differs from the previous one
        d = self.lrs[k - 1] - self.lrs[k]
        self.chunked = len(k) > chunks
        if not self.chunked:
            self.k, self.d, self.width = k, d, max(len(k), 1)
            return
        big = np.zeros(len(k), dtype=bool)
        big[np.argsort(-np.abs(d))[: chunks // 4]] = True
        big &= np.abs(d) > 20 * np.median(np.abs(d))
        self.kb, self.db = k[big], d[big]
        self.k, self.d = k[~big], d[~big]
        self.size = -(-len(self.k) // chunks)
        self.edges = np.arange(0, len(self.k), self.size)
        self.kc = self.k[np.minimum(self.edges + self.size // 2, len(self.k) - 1)]
        self.dc = np.add.reduceat(self.d, self.edges)
        self.width = len(self.edges) + NEAR * self.size + len(self.kb)

    def rows(self, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(S, η, d) of shape (len(n), width) for the evaluated step counts ``n``."""
        n = np.asarray(n, dtype=np.int64)
        if not self.chunked:
            k = np.broadcast_to(self.k[None, :], (len(n), len(self.k)))
            return self._terms(k, n, np.where(k < n[:, None], self.d[None, :], 0.0))
        last = np.searchsorted(self.k, n, "left") - 1  # the last small change before n
        exact_from = np.maximum(last // self.size - (NEAR - 1), 0) * self.size  # the last NEAR chunks: exactly
        far = self.edges[None, :] + self.size <= exact_from[:, None]
        j = exact_from[:, None] + np.arange(NEAR * self.size)[None, :]
        jj = np.minimum(j, len(self.k) - 1)
        near = (j < len(self.k)) & (self.k[jj] < n[:, None])
        kb = np.broadcast_to(self.kb[None, :], (len(n), len(self.kb)))
        k = np.concatenate([np.broadcast_to(self.kc[None, :], far.shape), self.k[jj], kb], axis=1)
        d = np.concatenate([np.where(far, self.dc[None, :], 0.0), np.where(near, self.d[jj], 0.0),
                            np.where(kb < n[:, None], self.db[None, :], 0.0)], axis=1)
        return self._terms(k, n, d)

    def _terms(self, k: np.ndarray, n: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.clip(self.area[np.minimum(n, len(self.area) - 1)][:, None] - self.area[k], 0.0, None)
        return s, self.lrs[k], np.where(s > 0, d, 0.0)


def g_terms(s: np.ndarray, eta: np.ndarray, C: float, beta: float, gamma: float,
            grad: bool = False) -> tuple[np.ndarray, ...]:
    """``G(η^(-γ)·S)`` and, with ``grad``, its derivatives in C, β and γ (0 where S = 0; G = 1 where η = 0)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pos = (s > 0) & (eta > 0)
        x = np.where(pos, np.where(eta > 0, eta, 1.0) ** (-gamma) * s, 0.0)
        u = 1.0 + C * x
        g = np.where((s > 0) & (eta <= 0), 1.0, 1.0 - u ** (-beta))
        if not grad:
            return (g,)
        du = beta * u ** (-beta - 1.0)
        d_c = np.where(pos, du * x, 0.0)
        d_beta = np.where(pos, u ** (-beta) * np.log(u), 0.0)
        d_gamma = np.where(pos, du * C * -np.log(np.where(pos, eta, 1.0)) * x, 0.0)
        return g, d_c, d_beta, d_gamma


def _blocks(n: int, width: int) -> list[tuple[int, int]]:
    rows = max(1, _BLOCK // max(width, 1))
    return [(lo, min(n, lo + rows)) for lo in range(0, n, rows)]


def predict(params: Mapping[str, float], run: LawInput, steps: np.ndarray, anneal: str,
            chunks: int = CHUNKS) -> np.ndarray:
    """The law's loss after each number of steps in ``steps`` (steps of the run, 0 = its start)."""
    n = np.asarray(steps, dtype=np.int64) + len(run.pre_lrs)
    area = run.area
    s1 = area[n] + (params.get("S_W", 0.0) if run.base == "annealed" else 0.0)
    loss = params["L0"] + params["A"] * np.maximum(s1, _MIN_AREA) ** (-params["alpha"])
    loss = loss - annealing(params, run, n, anneal, chunks)
    if run.base != "scratch" and "B_s" in params:
        loss = loss + shift(params, area[n] - area[len(run.pre_lrs)], run.replay)
    return loss


def annealing(params: Mapping[str, float], run: LawInput, n: np.ndarray, anneal: str,
              chunks: int = CHUNKS) -> np.ndarray:
    """The annealing term subtracted from the power law (``C·S2`` or ``B·LD``) after n steps of ``run.full``."""
    if anneal == "momentum":
        return params["C"] * run.s2_at(params.get("lam", LAMBDA))[n]
    if anneal == "multi_power":
        return params["B"] * multi_power_ld(run.full, n, params["C_mp"], params["beta"], params["gamma"], chunks)
    raise ValueError(f"unknown anneal form {anneal!r}; known: {', '.join(ANNEAL_FORMS)}")


def shift(params: Mapping[str, float], cpt_area: np.ndarray, replay: float) -> np.ndarray:
    """The distribution-shift term after a continual forward area ``cpt_area`` at replay fraction ``replay``."""
    scale = (1.0 - min(max(replay, 0.0), 1.0)) ** params.get("rho", 1.0)
    return params["B_s"] * scale * (1.0 - (1.0 + params["E"] * cpt_area) ** (-params["beta_s"]))
