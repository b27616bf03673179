"""Each family against values computed by hand from its formula (DESIGN.md §2), continuity and bounds.

Tables use max_lr=1, min_lr=0.1 so the hand values stay readable; step t is 0-based and the LR is the one
applied at optimizer step t.
"""

from __future__ import annotations

import math

import pytest

from rewarm.errors import ConfigError
from rewarm.schedules import build_lr_fn, plan_phases, validate_schedule
from rewarm.schedules.config import ScheduleConfig

TPS = 1000  # tokens per optimizer step in these tables
COS = math.cos
PI = math.pi


def sc(**kw: object) -> ScheduleConfig:
    kw.setdefault("max_lr", 1.0)
    kw.setdefault("min_lr", 0.1)
    return ScheduleConfig(**kw)  # type: ignore[arg-type]


def g(x: float, alpha: float = 10.0) -> float:
    return 1 / math.sqrt(1 + alpha * x) - 1


# (config, total steps, {step: hand value})
TABLES = {
    "cosine": (
        sc(name="cosine", warmup_steps=10),
        110,
        {0: 0.0, 5: 0.5, 10: 1.0, 35: 0.1 + 0.45 * (1 + COS(PI / 4)), 60: 0.55, 109: 0.1 + 0.45 * (1 + COS(0.99 * PI))},
    ),
    "cosine_short_decay_warmup_start": (
        sc(name="cosine", warmup_steps=10, warmup_start_lr=0.2, decay_steps=50),
        110,
        {0: 0.2, 5: 0.6, 10: 1.0, 35: 0.55, 59: 0.1 + 0.45 * (1 + COS(0.98 * PI)), 60: 0.1, 109: 0.1},
    ),
    "neox_cosine": (  # T = 100 (the run), W = 10: floor where 0.5·(cos(πx)+1) <= 0.1, x >= 0.795 -> t = 90
        sc(name="neox_cosine", warmup_fraction=0.1),
        100,
        {
            0: 0.0,
            5: 0.5,
            10: 1.0,
            20: 0.5 * (COS(0.1 * PI) + 1),
            60: 0.5,
            89: 0.5 * (COS(0.79 * PI) + 1),
            90: 0.1,
            99: 0.1,
        },
    ),
    "neox_cosine_clamp": (  # min_lr = 0: NeoX clamps t at T - W = 70, so the LR freezes at 0.5·(cos(0.4π)+1)
        sc(name="neox_cosine", warmup_steps=30, min_lr=0.0),
        100,
        {30: 1.0, 69: 0.5 * (COS(0.39 * PI) + 1), 70: 0.5 * (COS(0.4 * PI) + 1), 99: 0.5 * (COS(0.4 * PI) + 1)},
    ),
    "linear": (
        sc(name="linear", warmup_steps=10),
        110,
        {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.55, 109: 0.1 + 0.9 / 100},
    ),
    "linear_short_decay": (
        sc(name="linear", warmup_steps=10, decay_tokens=50 * TPS),
        110,
        {10: 1.0, 35: 0.55, 60: 0.1, 109: 0.1},
    ),
    "constant_gupta_baseline": (sc(name="constant", max_lr=3e-5), 50, {0: 3e-5, 25: 3e-5, 49: 3e-5}),
    "constant_warmup": (sc(name="constant", warmup_steps=10), 50, {0: 0.0, 5: 0.5, 10: 1.0, 49: 1.0}),
    "inverse_sqrt": (  # timescale = warmup = 10; min_lr=0.4 clips from 1/sqrt(100/10) = 0.316 on
        sc(name="inverse_sqrt", warmup_steps=10, min_lr=0.4),
        120,
        {0: 0.0, 10: 1.0, 40: 1 / math.sqrt(40 / 10), 50: 1 / math.sqrt(5), 100: 0.4, 119: 0.4},
    ),
    "inverse_sqrt_timescale": (
        sc(name="inverse_sqrt", warmup_steps=10, min_lr=0.0, timescale_steps=40),
        200,
        {10: 1.0, 130: 0.5, 199: 1 / math.sqrt((189 + 40) / 40)},
    ),
    "wsd_linear": (
        sc(name="wsd", warmup_steps=10, cooldown_steps=20, cooldown_shape="linear"),
        100,
        {0: 0.0, 10: 1.0, 50: 1.0, 79: 1.0, 80: 1.0, 90: 0.55, 99: 0.1 + 0.9 / 20},
    ),
    "wsd_cosine": (
        sc(name="wsd", warmup_steps=10, cooldown_fraction=0.2, cooldown_shape="cosine"),
        100,
        {79: 1.0, 80: 1.0, 85: 0.1 + 0.45 * (1 + COS(PI / 4)), 90: 0.55, 99: 0.1 + 0.45 * (1 + COS(0.95 * PI))},
    ),
    "wsd_1sqrt_default_cooldown": (  # default shape 1-sqrt, default cooldown 20 % of the run
        sc(name="wsd", warmup_steps=10),
        100,
        {79: 1.0, 80: 1.0, 90: 0.1 + 0.9 * (1 - math.sqrt(0.5)), 99: 0.1 + 0.9 * (1 - math.sqrt(0.95))},
    ),
    "wsd_exponential": (
        sc(name="wsd", warmup_steps=10, cooldown_steps=20, cooldown_shape="exponential"),
        100,
        {80: 1.0, 90: 0.1**0.5, 99: 0.1**0.95},
    ),
    "infinite_cosine": (
        sc(name="infinite", warmup_steps=10, cooldown_steps=20, constant_lr=0.5, anneal_steps=20),
        100,
        {0: 0.0, 10: 1.0, 20: 0.75, 30: 0.5, 50: 0.5, 79: 0.5, 80: 0.5, 90: 0.5 * 0.2**0.5, 99: 0.5 * 0.2**0.95},
    ),
    "infinite_inverse_sqrt": (
        sc(
            name="infinite",
            warmup_steps=10,
            cooldown_steps=20,
            cooldown_shape="inverse_sqrt",
            constant_lr=0.5,
            constant_steps=40,
            anneal_steps=20,
        ),
        100,
        {
            10: 1.0,
            20: 1 + (0.5 - 1) * g(0.5) / g(1),
            29: 1 + (0.5 - 1) * g(0.95) / g(1),
            30: 0.5,
            69: 0.5,
            70: 0.5,
            80: 0.5 * 0.2**0.5,
            89: 0.5 * 0.2**0.95,
            90: 0.1,
            99: 0.1,
        },
    ),
    "zero_lr_then_cosine": (  # 5 LR-0 steps, then the cosine table above shifted by 5
        sc(name="cosine", warmup_steps=10, zero_lr_steps=5),
        115,
        {0: 0.0, 4: 0.0, 5: 0.0, 10: 0.5, 15: 1.0, 65: 0.55, 114: 0.1 + 0.45 * (1 + COS(0.99 * PI))},
    ),
}


@pytest.mark.parametrize("case", sorted(TABLES))
def test_hand_values(case: str) -> None:
    c, total, table = TABLES[case]
    lr = build_lr_fn(c, total, TPS)
    for t, want in table.items():
        assert lr(t) == pytest.approx(want, rel=1e-12, abs=1e-15), f"{case}: step {t}"


@pytest.mark.parametrize("case", sorted(TABLES))
def test_phases_cover_the_run_and_meet_at_their_edges(case: str) -> None:
    c, total, _ = TABLES[case]
    phases = plan_phases(c, total, TPS)
    assert phases[0].start_step == 0 and phases[-1].end_step == total
    lr = build_lr_fn(c, total, TPS)
    for prev, nxt in zip(phases, phases[1:], strict=False):
        assert prev.end_step == nxt.start_step and prev.steps > 0
        assert nxt.lr_start == lr(nxt.start_step)
        # every family is continuous at its phase edges (the LR-0 phase meets a warmup from 0)
        assert prev.lr_end == pytest.approx(nxt.lr_start, rel=1e-12, abs=1e-15), f"{prev.name} -> {nxt.name}"


@pytest.mark.parametrize("case", sorted(TABLES))
def test_lr_within_min_and_max_after_warmup(case: str) -> None:
    c, total, _ = TABLES[case]
    lr = build_lr_fn(c, total, TPS)
    phases = plan_phases(c, total, TPS)
    after = max((p.end_step for p in phases if p.name in ("zero_lr", "warmup")), default=0)
    lo = 0.0 if c.name == "constant" else c.min_lr
    for t in range(after, total):
        assert lo * (1 - 1e-12) <= lr(t) <= c.max_lr * (1 + 1e-12), f"{case}: step {t}"


def test_small_steps_between_neighbours() -> None:
    """Continuity in the discrete sense: no jump larger than the phase slope allows (cosine, 1000 steps)."""
    lr = build_lr_fn(sc(name="wsd", warmup_steps=100, cooldown_fraction=0.1, cooldown_shape="cosine"), 1000, TPS)
    jumps = [abs(lr(t + 1) - lr(t)) for t in range(999)]
    # steepest: the cosine cooldown's middle, (max - min)·π/2 per 100 steps (warmup: 1 per 100 steps)
    assert max(jumps) <= 0.9 * math.pi / 2 / 100 + 1e-12
    assert max(jumps[95:105]) <= 0.01 + 1e-12  # warmup -> stable: no jump at the edge
    assert max(jumps[895:905]) <= 0.9 * math.pi / 2 / 100 * math.sin(math.pi * 5 / 100) + 1e-12  # stable -> cooldown


def test_gupta_neox_cosine_hits_the_floor_at_240b_of_297b_tokens() -> None:
    """Pythia's 2M-token steps, 297B tokens, 1 % warmup, min = 0.1 max: the decay ends near 240B tokens."""
    tps = 1024 * 2048
    total = math.ceil(297e9 / tps)
    c = ScheduleConfig(name="neox_cosine", max_lr=3e-4, min_lr=3e-5, warmup_fraction=0.01)
    decay = [p for p in plan_phases(c, total, tps) if p.name == "cosine"][0]
    floor_x = math.acos(2 * 0.1 - 1) / math.pi  # 0.7952
    assert decay.end_step == pytest.approx(round(0.01 * total) + floor_x * total, abs=1)
    assert decay.end_step * tps / 1e9 == pytest.approx(239.2, abs=0.5)
    lr = build_lr_fn(c, total, tps)
    assert lr(decay.end_step - 1) > 3e-5 and lr(decay.end_step) == 3e-5 == lr(total - 1)


def test_zero_lr_phase_shifts_the_whole_schedule() -> None:
    for name, extra in [("cosine", {}), ("wsd", {"cooldown_steps": 30}), ("neox_cosine", {}), ("linear", {})]:
        base = build_lr_fn(sc(name=name, warmup_steps=10, **extra), 200, TPS)
        shifted = build_lr_fn(sc(name=name, warmup_steps=10, zero_lr_steps=7, **extra), 207, TPS)
        assert [shifted(t) for t in range(7)] == [0.0] * 7
        assert [shifted(t + 7) for t in range(200)] == [base(t) for t in range(200)], name


@pytest.mark.parametrize(
    "key, value, steps",
    [
        ("warmup_steps", 10, 10),
        ("warmup_fraction", 0.1, 10),
        ("warmup_tokens", 10 * TPS, 10),
        ("warmup_fraction", 0.105, 11),
        ("warmup_tokens", 10 * TPS + TPS // 2, 11),
        ("warmup_tokens", 10 * TPS + 499, 10),
    ],
)
def test_durations_in_steps_fraction_or_tokens(key: str, value: float, steps: int) -> None:
    phases = plan_phases(sc(name="cosine", **{key: value}), 100, TPS)
    assert phases[0].name == "warmup" and phases[0].end_step == steps


def test_lr_past_the_run_holds_the_last_phase_end() -> None:
    """LambdaLR evaluates step total_steps after the last optimizer step; it must not raise or turn back up."""
    lr = build_lr_fn(sc(name="cosine", warmup_steps=10), 110, TPS)
    assert lr(110) == lr(10_000) == 0.1


@pytest.mark.parametrize(
    "kw, total, key",
    [
        ({"name": "cosine", "warmup_steps": 101}, 100, "warmup_steps"),
        ({"name": "cosine", "warmup_tokens": 101 * TPS}, 100, "warmup_tokens"),
        ({"name": "cosine", "zero_lr_steps": 50, "warmup_fraction": 0.6}, 100, "warmup_fraction"),
        ({"name": "cosine", "zero_lr_steps": 101}, 100, "zero_lr_steps"),
        ({"name": "cosine", "warmup_steps": 10, "decay_steps": 91}, 100, "decay_steps"),
        ({"name": "linear", "warmup_steps": 10, "decay_fraction": 0.95}, 100, "decay_fraction"),
        ({"name": "neox_cosine", "decay_steps": 101}, 100, "decay_steps"),
        ({"name": "wsd", "warmup_steps": 50, "cooldown_steps": 51}, 100, "cooldown_steps"),
        ({"name": "wsd", "cooldown_shape": "exponential", "min_lr": 0.0}, 100, "min_lr"),
        ({"name": "infinite", "cooldown_steps": 10}, 100, "constant_lr"),
        ({"name": "infinite", "constant_lr": 0.5}, 100, "cooldown_steps"),
        ({"name": "infinite", "constant_lr": 2.0, "cooldown_steps": 10}, 100, "constant_lr"),
        ({"name": "infinite", "constant_lr": 0.5, "cooldown_steps": 10, "anneal_steps": 91}, 100, "anneal_steps"),
        (
            {"name": "infinite", "constant_lr": 0.5, "cooldown_steps": 10, "constant_fraction": 0.95},
            100,
            "constant_fraction",
        ),
        (
            {"name": "infinite", "constant_lr": 0.5, "cooldown_steps": 10, "anneal_steps": 5, "min_lr": 0.0},
            100,
            "min_lr",
        ),
    ],
)
def test_run_dependent_refusals_name_the_key(kw: dict, total: int, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate_schedule(sc(**kw), total, TPS)
    assert e.value.key == key
