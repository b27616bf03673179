"""Phases of a schedule: contiguous step ranges, each with its own pure formula of the optimizer step.

A schedule is a list of ``Phase``s covering ``[0, total_steps)``; the LR at step ``t`` is the formula of the
phase that contains ``t``. Durations given in steps, fractions of the run or tokens are turned into
steps here, so the families only see steps.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from rewarm.errors import ConfigError
from rewarm.schedules.primitives import Shape
from rewarm.schedules.section import ScheduleConfig, duration_keys

LrFn = Callable[[int], float]


@dataclass(frozen=True)
class Phase:
    """Steps ``[start_step, end_step)`` of a schedule. ``lr_start`` is the LR at ``start_step``; ``lr_end`` is
    the phase's formula at ``end_step`` (the edge, i.e. the next phase's first LR where the schedule is
    continuous; at the end of the run it is one step past the last applied LR)."""

    name: str
    start_step: int
    end_step: int
    lr_start: float
    lr_end: float
    formula: str
    fn: LrFn = field(repr=False, compare=False)

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step


@dataclass(frozen=True)
class RunLength:
    """What the schedule needs to know about the run: its optimizer steps and tokens per step."""

    total_steps: int
    tokens_per_step: int


def make_phase(name: str, start: int, end: int, fn: LrFn, formula: str) -> Phase:
    """A phase whose edge LRs are read off its formula."""
    return Phase(name, start, end, fn(start), fn(end), formula, fn)


def shaped_phase(name: str, start: int, end: int, shape: Shape, a: float, b: float, formula: str) -> Phase:
    """A phase going from LR ``a`` at ``start`` to ``b`` at ``end`` along ``shape(x, a, b)``.

    An empty phase (``end <= start``) never reaches ``b``: its edges are both ``a``, so what follows holds ``a``."""
    if end <= start:
        return Phase(name, start, start, a, a, formula, partial(_const, a))
    return make_phase(name, start, end, partial(_shaped, shape, start, end - start, a, b), formula)


def _shaped(shape: Shape, start: int, steps: int, a: float, b: float, t: int) -> float:
    return shape((t - start) / steps, a, b)


def constant_phase(name: str, start: int, end: int, lr: float) -> Phase:
    return make_phase(name, start, end, partial(_const, lr), f"{lr:g}")


def _const(lr: float, t: int) -> float:
    return lr


def duration(cfg: ScheduleConfig, phase: str, run: RunLength) -> tuple[int | None, str | None]:
    """Length of ``phase`` in steps and the key that set it, or ``(None, None)`` when no key is set."""
    for key in duration_keys(phase):
        value = getattr(cfg, key)
        if value is not None:
            return to_steps(key, value, run), key
    return None, None


def to_steps(key: str, value: float, run: RunLength) -> int:
    """Steps of a ``*_steps`` / ``*_fraction`` (of the run) / ``*_tokens`` value, rounded to the nearest step."""
    if key.endswith("_fraction"):
        return math.floor(value * run.total_steps + 0.5)
    if key.endswith("_tokens"):
        return math.floor(value / run.tokens_per_step + 0.5)
    return int(value)


def check_fits(key: str, end: int, run: RunLength, what: str) -> None:
    """Refuse a phase that ends after the run, naming the key that set it."""
    if end > run.total_steps:
        raise ConfigError(
            key, f"{what} end at step {end}, after the end of the run ({run.total_steps} steps); shorten it"
        )


def first_step_at_or_below(fn: LrFn, lo: int, hi: int, floor: float) -> int:
    """Smallest t in [lo, hi) with fn(t) <= floor for a non-increasing fn, else hi (binary search)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if fn(mid) <= floor:
            hi = mid
        else:
            lo = mid + 1
    return lo


def drop_empty(phases: Sequence[Phase]) -> list[Phase]:
    return [p for p in phases if p.end_step > p.start_step]


def evaluate(phases: Sequence[Phase], starts: Sequence[int], t: int) -> float:
    """LR at step t: the formula of the phase holding t; past the last phase its end LR."""
    if t >= phases[-1].end_step:
        return phases[-1].lr_end
    i = max(0, bisect.bisect_right(starts, t) - 1)
    return phases[i].fn(t)
