"""The law's math against hand-computed values: forward and momentum areas, the multi-power loss drop (its O(T)
memory form against the O(T²) definition), the continual-pre-training terms and the from-scratch reduction."""

from __future__ import annotations

import numpy as np
import pytest

from rewarm.forecast.law import LawInput, forward_area, momentum_area, multi_power_ld, predict


def naive_ld(lrs: np.ndarray, steps: list[int], C: float, beta: float, gamma: float) -> np.ndarray:
    """Luo et al.'s LD(n) = Σ_{1≤k<n} (η_{k-1} - η_k)·(1 - (C·η_k^(-γ)·Σ_{k≤τ<n} η_τ + 1)^(-β)), term by term."""
    out = []
    for n in steps:
        total = 0.0
        for k in range(1, n):
            s = float(np.sum(lrs[k:n]))
            total += (lrs[k - 1] - lrs[k]) * (1.0 - (C * lrs[k] ** (-gamma) * s + 1.0) ** (-beta))
        out.append(total)
    return np.array(out)


def test_forward_and_momentum_areas_by_hand() -> None:
    lrs = np.array([1.0, 1.0, 0.5, 0.5])
    assert forward_area(lrs).tolist() == [0.0, 1.0, 2.0, 2.5, 3.0]
    # d = [0, 0, 0.5, 0]; m_i = 0.5 m_{i-1} + d_i = [0, 0, 0.5, 0.25]; S2 after n steps = Σ_{i<n} m_i
    assert momentum_area(lrs, lam=0.5).tolist() == [0.0, 0.0, 0.0, 0.5, 0.75]
    # a rewarm (LR rising) makes the momentum negative: S2 falls
    assert momentum_area(np.array([0.1, 0.5, 1.0]), lam=0.999)[-1] < 0


def test_multi_power_ld_by_hand() -> None:
    lrs = np.array([1.0, 0.5, 0.5])
    # n=2: k=1, d=0.5, S_1(2)=η_1=0.5, γ=0: x=0.5, G=1-(1·0.5+1)^-1=1/3 -> 0.5/3; n=3: S=1.0, G=1/2 -> 0.25
    got = multi_power_ld(lrs, np.array([0, 1, 2, 3]), C=1.0, beta=1.0, gamma=0.0)
    assert got == pytest.approx([0.0, 0.0, 0.5 / 3, 0.25])


def test_multi_power_ld_equals_the_quadratic_definition() -> None:
    t = 300
    lrs = np.concatenate([np.linspace(0.01, 1.0, 30), 0.1 + 0.45 * (1 + np.cos(np.pi * np.arange(t - 30) / (t - 30)))])
    lrs[200:230] = 0.05  # a step down and back up
    steps = list(range(0, t + 1, 7))
    want = naive_ld(lrs, steps, 2.0, 0.6, 0.5)
    exact = multi_power_ld(lrs, np.array(steps), 2.0, 0.6, 0.5)  # fewer changes than CHUNKS: exact
    assert np.max(np.abs(exact - want)) < 1e-12
    chunked = multi_power_ld(lrs, np.array(steps), 2.0, 0.6, 0.5, chunks=40)  # ~8 changes per chunk
    assert np.max(np.abs(chunked - want)) < 2e-3 * np.max(np.abs(want))


def test_multi_power_ld_memory_is_linear_in_steps() -> None:
    """A 72k-step cosine evaluated every 128 steps: the chunked form never builds a T x T matrix."""
    import tracemalloc

    t = 72_000
    lrs = 0.1 + 0.45 * (1 + np.cos(np.pi * np.arange(t) / t))
    tracemalloc.start()
    out = multi_power_ld(lrs, np.arange(128, t + 1, 128), 2.0, 0.6, 0.6, chunks=256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.all(np.isfinite(out)) and out[-1] > 0
    assert peak < 64 * 2**20  # T x T float64 would be 41 GB


PARAMS = {"L0": 2.0, "A": 1.0, "alpha": 0.5, "C": 0.01, "B_s": 0.3, "E": 0.1, "beta_s": 1.0, "rho": 2.0, "S_W": 4.0}


def test_from_scratch_law_by_hand() -> None:
    lrs = np.array([1.0, 1.0, 0.5, 0.5])
    run = LawInput(lrs, np.zeros(0), "scratch", replay=0.5)
    # after 4 steps: S1 = 3, S2 (λ=0.999) = 0.5 + 0.4995 = 0.9995; no shift term without a base
    want = 2.0 + 3.0**-0.5 - 0.01 * 0.9995
    assert predict(PARAMS, run, np.array([4]), "momentum")[0] == pytest.approx(want, rel=1e-12)


def test_cpt_terms_by_hand() -> None:
    lrs = np.array([1.0, 1.0, 0.5, 0.5])
    annealed = LawInput(lrs, np.zeros(0), "annealed", replay=0.5)
    shift = 0.3 * 0.5**2 * (1 - (1 + 0.1 * 3.0) ** -1.0)  # B_s (1-r)^ρ (1 - (1 + E S1_cpt)^-β_s)
    want = 2.0 + (3.0 + 4.0) ** -0.5 - 0.01 * 0.9995 + shift  # S_W = 4 joins the forward area
    assert predict(PARAMS, annealed, np.array([4]), "momentum")[0] == pytest.approx(want, rel=1e-12)
    full_replay = LawInput(lrs, np.zeros(0), "annealed", replay=1.0)
    assert predict(PARAMS, full_replay, np.array([4]), "momentum")[0] == pytest.approx(want - shift, rel=1e-12)
    down = dict(PARAMS, B_s=-0.3)
    assert predict(down, annealed, np.array([4]), "momentum")[0] == pytest.approx(want - 2 * shift, rel=1e-12)


def test_known_pretraining_continues_the_base_areas() -> None:
    """With the base's LRs known, the run's loss is the law over base + run LRs, shifted by the continual area."""
    pre = np.array([0.2, 1.0, 0.8, 0.1])
    lrs = np.array([0.5, 1.0, 0.5])
    known = LawInput(lrs, pre, "known", replay=0.0)
    whole = LawInput(np.concatenate([pre, lrs]), np.zeros(0), "scratch")
    for anneal, p in (("momentum", PARAMS), ("multi_power", dict(PARAMS, B=0.5, C_mp=2.0, beta=0.5, gamma=0.5))):
        got = predict(p, known, np.array([0, 2, 3]), anneal)
        base = predict(p, whole, np.array([4, 6, 7]), anneal)
        cpt = np.array([0.0, 1.5, 2.0])
        assert got == pytest.approx(base + 0.3 * (1 - (1 + 0.1 * cpt) ** -1.0), rel=1e-12)
