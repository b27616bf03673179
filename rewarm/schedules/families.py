"""Schedule families, composed from the primitives, registered by name.

Each family is ``build(cfg, run) -> list[Phase]`` covering ``[0, run.total_steps)``. Every family starts with
the optional LR-0 phase (``zero_lr_steps``) and a linear warmup from ``warmup_start_lr`` to ``max_lr``; a
family that ends before the run does holds its last LR (a ``constant`` tail). A length that does not fit
raises ConfigError naming the key that set it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from rewarm.errors import ConfigError
from rewarm.schedules import primitives as P
from rewarm.schedules.phases import (
    Phase,
    RunLength,
    check_fits,
    constant_phase,
    drop_empty,
    duration,
    first_step_at_or_below,
    make_phase,
    shaped_phase,
    to_steps,
)
from rewarm.schedules.section import COOLDOWN_SHAPES, FAMILY_NAMES, ScheduleConfig

Family = Callable[[ScheduleConfig, RunLength], list[Phase]]
WSD_DEFAULT_COOLDOWN_FRACTION = 0.2  # Hägele et al.: a 10-20 % cooldown matches a full cosine


def _prefix(cfg: ScheduleConfig, run: RunLength) -> tuple[list[Phase], int]:
    """The LR-0 phase and the linear warmup; returns them and the first step after warmup."""
    k = cfg.zero_lr_steps
    check_fits("zero_lr_steps", k, run, f"zero_lr_steps={k} would")
    w, key = duration(cfg, "warmup", run)
    w = w or 0
    what = f"zero_lr_steps + warmup ({k} + {w} steps) would" if k else f"warmup ({w} steps) would"
    check_fits(key or "warmup_steps", k + w, run, what)
    phases = [
        constant_phase("zero_lr", 0, k, 0.0),
        shaped_phase("warmup", k, k + w, P.linear, cfg.warmup_start_lr, cfg.max_lr, "linear"),
    ]
    return phases, k + w


def _tail(phases: list[Phase], run: RunLength) -> list[Phase]:
    """Hold the last LR until the end of the run."""
    last = phases[-1]
    phases.append(constant_phase("constant", last.end_step, run.total_steps, last.lr_end))
    return drop_empty(phases)


def _decay_length(cfg: ScheduleConfig, run: RunLength, start: int, default: int) -> int:
    d, key = duration(cfg, "decay", run)
    if d is None:
        return default
    check_fits(key or "decay_steps", start + d, run, f"decay after warmup ({start} + {d} steps) would")
    return d


def _shaped_decay(name: str, shape: P.Shape, cfg: ScheduleConfig, run: RunLength) -> list[Phase]:
    phases, start = _prefix(cfg, run)
    d = _decay_length(cfg, run, start, run.total_steps - start)
    phases.append(shaped_phase(name, start, start + d, shape, cfg.max_lr, cfg.min_lr, name))
    return _tail(phases, run)


def cosine(cfg: ScheduleConfig, run: RunLength) -> list[Phase]:
    """Warmup, then ``min + (max - min)/2 · (1 + cos(π (t - W)/D))`` over D steps (default: rest of run), then min."""
    return _shaped_decay("cosine", P.cosine, cfg, run)


def linear(cfg: ScheduleConfig, run: RunLength) -> list[Phase]:
    """Warmup, then linear from max_lr to min_lr over D steps (default: rest of run), then min."""
    return _shaped_decay("linear", P.linear, cfg, run)


def constant(cfg: ScheduleConfig, run: RunLength) -> list[Phase]:
    """Optional warmup, then max_lr to the end (Gupta et al.'s baseline: max_lr=3e-5, no warmup)."""
    phases, start = _prefix(cfg, run)
    phases.append(constant_phase("constant", start, run.total_steps, cfg.max_lr))
    return drop_empty(phases)


def neox_cosine(cfg: ScheduleConfig, run: RunLength) -> list[Phase]:
    """GPT-NeoX before PR #1008: ``max/2 · (cos(π (t - W)/T) + 1)`` clipped at min_lr; T = decay length."""
    phases, start = _prefix(cfg, run)
    k, w = cfg.zero_lr_steps, start - cfg.zero_lr_steps
    t_total, key = duration(cfg, "decay", run)
    if t_total is None:
        t_total = run.total_steps - k  # Pythia: lr_decay_iters = train_iters
    if t_total < 1:
        raise ConfigError(key or "decay_steps", "T of neox_cosine must be >= 1 step")
    check_fits(key or "decay_steps", k + t_total, run, f"the decay T ({t_total} steps after zero_lr_steps={k}) would")
    fn = partial(_shifted_neox, k, w, t_total, cfg.max_lr, cfg.min_lr)
    # The formula goes flat at the floor or at NeoX's clamp t = T - W, whichever comes first; split there for the plan.
    flat = min(first_step_at_or_below(fn, start, run.total_steps, cfg.min_lr), max(start, k + t_total - w))
    formula = f"max/2·(cos(π(t-W)/T)+1) ∨ min, T={t_total}"
    phases.append(make_phase("cosine", start, flat, fn, formula))
    phases.append(make_phase("constant", flat, run.total_steps, fn, formula))
    return drop_empty(phases)


def _shifted_neox(k: int, w: int, t_total: int, max_lr: float, min_lr: float, t: int) -> float:
    return P.neox_cosine(t - k, w, t_total, max_lr, min_lr)


def inverse_sqrt(cfg: ScheduleConfig, run: RunLength) -> list[Phase]:
    """Warmup, then ``max / √((s + τ)/τ)`` (s: steps after warmup, τ: timescale_steps) clipped at min_lr."""
    phases, start = _prefix(cfg, run)
    w = start - cfg.zero_lr_steps
    tau = cfg.timescale_steps or w or 10_000
    fn = partial(_clipped_inverse_sqrt, start, tau, cfg.max_lr, cfg.min_lr)
    floor = first_step_at_or_below(fn, start, run.total_steps, cfg.min_lr)
    phases.append(make_phase("inverse_sqrt", start, floor, fn, f"max/√((s+τ)/τ), τ={tau}"))
    phases.append(make_phase("constant", floor, run.total_steps, fn, f"{cfg.min_lr:g}"))
    return drop_empty(phases)


def _clipped_inverse_sqrt(start: int, tau: int, max_lr: float, min_lr: float, t: int) -> float:
    return max(min_lr, P.inverse_sqrt(t - start, max_lr, tau))


def wsd(cfg: ScheduleConfig, run: RunLength) -> list[Phase]:
    """Warmup, stable at max_lr, cooldown over the last C steps to min_lr with shape cooldown_shape."""
    shape = cfg.cooldown_shape or COOLDOWN_SHAPES["wsd"][0]
    _need_positive_min(cfg, shape == "exponential", "cooldown_shape=exponential")
    phases, start = _prefix(cfg, run)
    c, key = duration(cfg, "cooldown", run)
    if c is None:
        c = to_steps("cooldown_fraction", WSD_DEFAULT_COOLDOWN_FRACTION, run)
    check_fits(key or "cooldown_fraction", start + c, run, f"warmup + cooldown ({start} + {c} steps) would")
    cd = run.total_steps - c
    phases.append(constant_phase("stable", start, cd, cfg.max_lr))
    phases.append(shaped_phase("cooldown", cd, run.total_steps, P.SHAPES[shape], cfg.max_lr, cfg.min_lr, shape))
    return drop_empty(phases)


def infinite(cfg: ScheduleConfig, run: RunLength) -> list[Phase]:
    """Ibrahim et al.: warmup, cooldown to constant_lr (cosine or inverse-sqrt), constant, exponential anneal to min_lr."""
    const = _constant_lr(cfg)
    phases, start = _prefix(cfg, run)
    c, s, a = _infinite_lengths(cfg, run, start)
    e1, e2, e3 = start + c, start + c + s, start + c + s + a
    phases.append(_infinite_cooldown(cfg, start, e1, const))
    phases.append(constant_phase("constant", e1, e2, const))
    phases.append(shaped_phase("anneal", e2, e3, P.exponential, const, cfg.min_lr, "exponential"))
    return _tail(phases, run)


def _infinite_lengths(cfg: ScheduleConfig, run: RunLength, start: int) -> tuple[int, int, int]:
    """Cooldown (required), constant (default: what is left) and anneal (default 0) lengths, checked against the run."""
    c, c_key = duration(cfg, "cooldown", run)
    if c is None:
        raise ConfigError("cooldown_steps", "infinite needs a cooldown length: cooldown_steps, _fraction or _tokens")
    check_fits(c_key or "cooldown_steps", start + c, run, f"warmup + cooldown ({start} + {c} steps) would")
    a, a_key = duration(cfg, "anneal", run)
    a = a or 0
    _need_positive_min(cfg, a > 0, "an exponential anneal (anneal_* > 0)")
    what = f"warmup + cooldown + anneal ({start} + {c} + {a} steps) would"
    check_fits(a_key or "anneal_steps", start + c + a, run, what)
    s, s_key = duration(cfg, "constant", run)
    if s is None:
        s = run.total_steps - start - c - a
    what = f"all phases ({start} + {c} + {s} + {a} steps) would"
    check_fits(s_key or "constant_steps", start + c + s + a, run, what)
    return c, s, a


def _infinite_cooldown(cfg: ScheduleConfig, start: int, end: int, const: float) -> Phase:
    shape = cfg.cooldown_shape or COOLDOWN_SHAPES["infinite"][0]
    if shape == "cosine":
        return shaped_phase("cooldown", start, end, P.cosine, cfg.max_lr, const, "cosine")
    fn = partial(P.inverse_sqrt_cooldown, alpha=cfg.inv_sqrt_alpha)
    return shaped_phase("cooldown", start, end, fn, cfg.max_lr, const, f"inverse_sqrt, α={cfg.inv_sqrt_alpha:g}")


def _constant_lr(cfg: ScheduleConfig) -> float:
    if cfg.constant_lr is None:
        raise ConfigError(
            "constant_lr", "infinite needs the LR of its constant phase, e.g. schedule.constant_lr=1.5e-4"
        )
    if not cfg.min_lr <= cfg.constant_lr <= cfg.max_lr:
        raise ConfigError(
            "constant_lr", f"must be in [min_lr={cfg.min_lr}, max_lr={cfg.max_lr}], got {cfg.constant_lr}"
        )
    return cfg.constant_lr


def _need_positive_min(cfg: ScheduleConfig, needed: bool, why: str) -> None:
    if needed and cfg.min_lr <= 0:
        raise ConfigError("min_lr", f"must be > 0 for {why} (an exponential cannot reach 0)")


FAMILIES: dict[str, Family] = {
    "cosine": cosine,
    "neox_cosine": neox_cosine,
    "linear": linear,
    "constant": constant,
    "inverse_sqrt": inverse_sqrt,
    "wsd": wsd,
    "infinite": infinite,
}
assert tuple(FAMILIES) == FAMILY_NAMES, "section.FAMILY_NAMES and the registry must list the same families"


def plan_phases(cfg: ScheduleConfig, total_steps: int, tokens_per_step: int) -> list[Phase]:
    """The schedule's phases, covering steps ``[0, total_steps)`` in order. Raises ConfigError."""
    cfg.validate()
    if total_steps < 1:
        raise ConfigError("", f"the run must have at least 1 optimizer step, got {total_steps}")
    if tokens_per_step < 1:
        raise ConfigError("", f"tokens per optimizer step must be >= 1, got {tokens_per_step}")
    return FAMILIES[cfg.name](cfg, RunLength(total_steps, tokens_per_step))
