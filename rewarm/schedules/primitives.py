"""Unit formulas of LR schedules: small pure functions, no state.

Interpolating shapes take the progress ``x`` in [0, 1] through a phase and the LR at its two edges
(``a`` at x=0, ``b`` at x=1). A phase of ``n`` steps starting at step ``s`` uses ``x = (t - s) / n`` at
step ``t``: it reaches ``b`` at step ``s + n``, the first step of the next phase (the convention of
GPT-NeoX and ``transformers.optimization``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

#: ``shape(x, a, b) -> lr``
Shape = Callable[[float, float, float], float]


def linear(x: float, a: float, b: float) -> float:
    """Straight line from a to b (linear warmup and linear decay): ``a + (b - a) · x``."""
    return a * (1.0 - x) + b * x  # exact at both edges; with a = 0 it is HF's warmup b · x bit for bit


def cosine(x: float, a: float, b: float) -> float:
    """Half cosine from a to b: ``b + (a - b)/2 · (1 + cos(πx))`` (today's GPT-NeoX / HF cosine)."""
    return _mix(a, b, 0.5 * (1.0 + math.cos(math.pi * x)))


def one_minus_sqrt(x: float, a: float, b: float) -> float:
    """Hägele et al.'s 1-sqrt cooldown: ``b + (a - b) · (1 - √x)``."""
    return _mix(a, b, 1.0 - math.sqrt(x))


def exponential(x: float, a: float, b: float) -> float:
    """Geometric interpolation ``a · (b/a)^x`` (Ibrahim et al.'s anneal). Needs a, b > 0."""
    return a ** (1.0 - x) * b**x  # = a · (b/a)^x, written so that both edges are exact


def constant(x: float, a: float, b: float) -> float:
    """Hold a (b is ignored)."""
    return a


def inverse_sqrt_cooldown(x: float, a: float, b: float, alpha: float) -> float:
    """Ibrahim et al.'s inverse-sqrt cooldown ``a + (b - a) · g(x)/g(1)``, ``g(x) = 1/√(1 + αx) - 1``."""
    return _mix(a, b, 1.0 - _g(x, alpha) / _g(1.0, alpha))


def _mix(a: float, b: float, f: float) -> float:
    """``a · f + b · (1 - f)``: equals the ``b + (a - b) · f`` of the papers and is exact at f = 0 and f = 1."""
    return a * f + b * (1.0 - f)


def _g(x: float, alpha: float) -> float:
    return 1.0 / math.sqrt(1.0 + alpha * x) - 1.0


def inverse_sqrt(s: int, peak: float, timescale: int) -> float:
    """``peak / √((s + timescale) / timescale)`` after s steps of decay (as transformers' inverse_sqrt)."""
    return peak / math.sqrt((s + timescale) / timescale)


def neox_cosine(t: int, warmup: int, total: int, max_lr: float, min_lr: float) -> float:
    """GPT-NeoX's cosine before its PR #1008 (Pythia, Gupta et al.), after warmup, at step t (t >= warmup).

    ``max(min_lr, max_lr/2 · (cos(π · (min(t, T - W) - W) / T) + 1))`` with W the warmup and T the total decay
    iterations (``lr_decay_iters``; warmup included). The ``min(t, T - W)`` is NeoX's own clamp; with
    min_lr = 0.1 · max_lr the floor is reached at t ≈ W + 0.795 T, before the clamp matters.
    """
    progress = min(t, total - warmup) - warmup
    return max(min_lr, max_lr / 2.0 * (math.cos(math.pi * progress / total) + 1.0))


#: Interpolating shapes by name (wsd cooldown shapes and the infinite schedule's cosine cooldown).
SHAPES: dict[str, Shape] = {
    "linear": linear,
    "cosine": cosine,
    "1-sqrt": one_minus_sqrt,
    "exponential": exponential,
    "constant": constant,
}
