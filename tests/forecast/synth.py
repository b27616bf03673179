"""Synthetic runs for the forecast tests: run directories (config.yaml + metrics.csv) whose validation losses
are the law's own values for known constants (optionally with seeded noise), and curve CSVs."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rewarm import config as rc
from rewarm.forecast.inputs import run_schedule
from rewarm.forecast.law import LawInput, predict

LR_SCALE = 3e-3
BASE = [
    "model.name_or_path=/nonexistent/tiny-base", "data.seq_len=16",
    "data.train.down.paths=[/nonexistent/down.jsonl]",
    "data.val.up.paths=[/nonexistent/up.jsonl]", "data.val.up.role=upstream",
    "data.val.down.paths=[/nonexistent/down.jsonl]", "data.val.down.role=downstream",
    "trainer.max_steps=200", "trainer.val_every_steps=10",
    "schedule.name=cosine", "schedule.max_lr=3e-3", "schedule.min_lr=3e-4", "schedule.warmup_fraction=0.01",
]
KNOWN_BASE = ["model.pretraining.schedule=cosine", "model.pretraining.max_lr=3e-3", "model.pretraining.total_steps=600",
              "model.pretraining.warmup_steps=6"]
TRUE = {
    "up": {"L0": 2.0, "A": 1.5, "alpha": 0.4, "C": 4e-4, "B_s": 0.3, "E": 0.05, "beta_s": 0.8, "rho": 1.0},
    "down": {"L0": 1.5, "A": 2.5, "alpha": 0.4, "C": 4e-4, "B_s": -0.6, "E": 0.05, "beta_s": 0.8, "rho": 1.0},
}
RECIPES = {
    "cos-1x": [],
    "cos-half": ["schedule.max_lr=1.5e-3", "schedule.min_lr=1.5e-4"],
    "constant": ["schedule.name=constant", "schedule.max_lr=3e-4", "schedule.warmup_fraction=0"],
    "wsd": ["schedule.name=wsd", "schedule.cooldown_fraction=0.2"],
}


def config(overrides: Sequence[str] = (), known_base: bool = True) -> rc.RunConfig:
    return rc.load(None, [*BASE, *(KNOWN_BASE if known_base else []), *overrides])


def truth(cfg: rc.RunConfig, params: Mapping[str, Mapping[str, float]] = TRUE,
          anneal: str = "momentum") -> dict[str, tuple[list[int], np.ndarray]]:
    """Each set's loss at every validation step of ``cfg`` under the law with ``params``."""
    s = run_schedule(cfg)
    law = LawInput(s.lrs / LR_SCALE, s.pre_lrs / LR_SCALE, s.base, s.replay)
    p = {k: dict(v, S_W=50.0) for k, v in params.items()}
    return {name: (s.val_steps, predict(p[name], law, np.array(s.val_steps), anneal)) for name in cfg.data.val}


def write_run(root: Path, name: str, overrides: Sequence[str] = (), known_base: bool = True, noise: float = 0.0,
              seed: int = 0, anneal: str = "momentum") -> Path:
    """A run directory named ``name`` under ``root`` holding the law's curves (plus Gaussian noise in nats)."""
    cfg = config([*overrides, f"run.name={name}"], known_base)
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(rc.to_yaml(cfg))
    rng = np.random.default_rng(seed)
    curves = truth(cfg, anneal=anneal)
    steps = curves[next(iter(curves))][0]
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        sets = list(curves)
        w.writerow(["step", "tokens", "train/loss", *(f"val/{s}/loss" for s in sets)])
        for t in range(max(steps) + 1):
            vals = [repr(float(curves[s][1][steps.index(t)] + noise * rng.standard_normal())) if t in steps else ""
                    for s in sets]
            w.writerow([t, t * 16, "3.0", *vals])
    return run_dir


def write_curve(path: Path, lrs: np.ndarray, losses: Mapping[int, float]) -> Path:
    """A curve CSV: step,lr on every step, loss where given."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "lr", "loss"])
        for t, lr in enumerate(lrs):
            w.writerow([t, repr(float(lr)), repr(float(losses[t])) if t in losses else ""])
    return path
