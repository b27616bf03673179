"""The LambdaLR adapter on a real AdamW: every group's LR is the schedule's, exactly; weight decay untouched;
resuming from state dicts continues the same LRs; importing the package does not import torch."""

from __future__ import annotations

import io
import subprocess
import sys

import torch

from rewarm.schedules import build_lr_fn, build_scheduler
from rewarm.schedules.config import ScheduleConfig

CFG = ScheduleConfig(name="wsd", max_lr=3e-4, min_lr=3e-5, warmup_steps=5, cooldown_steps=10, zero_lr_steps=2)
TOTAL, TPS = 40, 512


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() == 2)]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0, "lr": 7.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    opt.param_groups[0]["initial_lr"] = 5.0  # a stale value left by an earlier scheduler must not scale ours
    return model, opt


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    model(torch.randn(3, 4)).pow(2).mean().backward()
    opt.step()


def test_every_group_follows_the_schedule_exactly_and_weight_decay_is_untouched() -> None:
    model, opt = _model_and_optimizer()
    sched = build_scheduler(opt, CFG, TOTAL, TPS)
    lr_fn = build_lr_fn(CFG, TOTAL, TPS)
    for t in range(TOTAL):
        assert [g["lr"] for g in opt.param_groups] == [lr_fn(t)] * 2, f"step {t}"
        assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
        assert sched.get_last_lr() == [lr_fn(t)] * 2
        _train_step(model, opt)
        sched.step()
    assert lr_fn(0) == 0.0 and max(lr_fn(t) for t in range(TOTAL)) == 3e-4


def test_zero_lr_steps_leave_the_weights_unchanged_but_fill_adam_moments() -> None:
    model, opt = _model_and_optimizer()
    sched = build_scheduler(opt, CFG, TOTAL, TPS)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(CFG.zero_lr_steps):
        _train_step(model, opt)
        sched.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(opt.state[p]["exp_avg_sq"].abs().sum() > 0 for p in model.parameters())


def test_resume_from_state_dicts_continues_the_same_lrs() -> None:
    model, opt = _model_and_optimizer()
    sched = build_scheduler(opt, CFG, TOTAL, TPS)
    for _ in range(17):
        _train_step(model, opt)
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    buf = io.BytesIO()
    torch.save(sched_state, buf)  # the state holds only plain values: loads with weights_only (as Lightning does)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["last_epoch"] == 17

    model2, opt2 = _model_and_optimizer()
    model2.load_state_dict(model.state_dict())
    sched2 = build_scheduler(opt2, CFG, TOTAL, TPS)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    lr_fn = build_lr_fn(CFG, TOTAL, TPS)
    for t in range(17, TOTAL):
        assert [g["lr"] for g in opt2.param_groups] == [lr_fn(t)] * 2, f"step {t}"
        _train_step(model2, opt2)
        sched2.step()


def test_importing_the_package_and_planning_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from rewarm.schedules import ScheduleConfig, build_lr_fn, plan_phases\n"
        "c = ScheduleConfig(name='infinite', constant_lr=1e-4, cooldown_steps=10, anneal_steps=10)\n"
        "plan_phases(c, 100, 10); build_lr_fn(c, 100, 10)(50)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
