"""Our families against transformers' schedulers on the cases they share, stepped on a real torch optimizer.

transformers scales the optimizer's LR by a factor; we compute the absolute LR, so values agree to float
rounding (rel 1e-12), not bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from transformers import optimization as hf

from rewarm.schedules import build_lr_fn, build_scheduler
from rewarm.schedules.config import ScheduleConfig

MAX, MIN = 6e-4, 6e-5
TPS = 2048


def _optimizer(lr: float = MAX) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _hf_lrs(make, total: int) -> list[float]:  # noqa: ANN001 - a transformers factory taking the optimizer
    opt = _optimizer()
    sched = make(opt)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _ours(cfg: ScheduleConfig, total: int) -> list[float]:
    """The LR our adapter sets on a real optimizer at each step (and it equals build_lr_fn exactly)."""
    opt = _optimizer(lr=123.0)
    sched = build_scheduler(opt, cfg, total, TPS)
    lr_fn = build_lr_fn(cfg, total, TPS)
    out = []
    for t in range(total):
        assert opt.param_groups[0]["lr"] == lr_fn(t)
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _assert_close(ours: list[float], theirs: list[float]) -> None:
    assert len(ours) == len(theirs)
    for t, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-18), f"step {t}: ours {a!r} transformers {b!r}"


@pytest.mark.parametrize("warmup", [0, 1, 20, 199])
@pytest.mark.parametrize("by_rate", [False, True])
def test_cosine_equals_get_cosine_with_min_lr_schedule_with_warmup(warmup: int, by_rate: bool) -> None:
    total = 200
    kw = {"min_lr_rate": MIN / MAX} if by_rate else {"min_lr": MIN}
    theirs = _hf_lrs(lambda o: hf.get_cosine_with_min_lr_schedule_with_warmup(o, warmup, total, **kw), total)
    ours = _ours(ScheduleConfig(name="cosine", max_lr=MAX, min_lr=MIN, warmup_steps=warmup), total)
    _assert_close(ours, theirs)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("warmup, decay", [(10, 40), (0, 200), (25, 1), (1, 100)])
def test_wsd_equals_get_wsd_schedule(shape: str, warmup: int, decay: int) -> None:
    """transformers' WSD warms up from min_lr_ratio·max, so the shared case has warmup_start_lr = min_lr."""
    total = 200
    theirs = _hf_lrs(
        lambda o: hf.get_wsd_schedule(
            o, warmup, decay, num_training_steps=total, decay_type=shape, min_lr_ratio=MIN / MAX
        ),
        total,
    )
    c = ScheduleConfig(
        name="wsd",
        max_lr=MAX,
        min_lr=MIN,
        warmup_start_lr=MIN,
        warmup_steps=warmup,
        cooldown_steps=decay,
        cooldown_shape=shape,
    )
    _assert_close(_ours(c, total), theirs)


def test_wsd_without_floor_equals_get_wsd_schedule() -> None:
    total, warmup, decay = 120, 12, 30
    theirs = _hf_lrs(lambda o: hf.get_wsd_schedule(o, warmup, decay, num_training_steps=total), total)  # cosine, to 0
    c = ScheduleConfig(
        name="wsd", max_lr=MAX, min_lr=0.0, warmup_steps=warmup, cooldown_steps=decay, cooldown_shape="cosine"
    )
    _assert_close(_ours(c, total), theirs)


@pytest.mark.parametrize("warmup", [0, 10])
def test_linear_to_zero_equals_get_linear_schedule_with_warmup(warmup: int) -> None:
    total = 150
    theirs = _hf_lrs(lambda o: hf.get_linear_schedule_with_warmup(o, warmup, total), total)
    _assert_close(_ours(ScheduleConfig(name="linear", max_lr=MAX, min_lr=0.0, warmup_steps=warmup), total), theirs)


@pytest.mark.parametrize("warmup, timescale", [(10, None), (0, None), (10, 50)])
def test_inverse_sqrt_equals_get_inverse_sqrt_schedule(warmup: int, timescale: int | None) -> None:
    total = 300
    theirs = _hf_lrs(lambda o: hf.get_inverse_sqrt_schedule(o, warmup, timescale=timescale), total)
    c = ScheduleConfig(name="inverse_sqrt", max_lr=MAX, min_lr=0.0, warmup_steps=warmup, timescale_steps=timescale)
    _assert_close(_ours(c, total), theirs)


@pytest.mark.parametrize("warmup", [0, 10])
def test_constant_equals_get_constant_schedule_with_warmup(warmup: int) -> None:
    total = 50
    theirs = _hf_lrs(lambda o: hf.get_constant_schedule_with_warmup(o, warmup), total)
    _assert_close(_ours(ScheduleConfig(name="constant", max_lr=MAX, warmup_steps=warmup), total), theirs)
