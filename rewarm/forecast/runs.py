"""The runs a fit reads: rewarm run directories (``config.yaml`` + ``metrics.csv`` ``val/<set>/loss`` rows) or
external curves (CSV ``step,lr,loss[,set]``), and the refusals of runs that cannot share a fit."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rewarm import config as rc
from rewarm.errors import ConfigError
from rewarm.forecast import inputs


@dataclass
class RunCurves:
    """One run: its LRs, start, and measured losses per validation set (steps = optimizer steps done)."""

    name: str
    lrs: np.ndarray
    pre_lrs: np.ndarray
    base_kind: str
    replay: float
    observed: dict[str, tuple[np.ndarray, np.ndarray]]
    cfg: rc.RunConfig | None = None
    roles: dict[str, str] = field(default_factory=dict)


def read_run_dir(run_dir: Path) -> RunCurves:
    """A run directory's config (its ``config.yaml``) and validation losses (``metrics.csv``)."""
    config, metrics = run_dir / "config.yaml", run_dir / "metrics.csv"
    for path in (config, metrics):
        if not path.is_file():
            raise ConfigError("", f"{run_dir} is not a run directory: it has no {path.name}")
    try:
        cfg = rc.load(config)
    except ConfigError as e:
        raise ConfigError(e.key, f"{e.message} (in {config})") from None
    sched = inputs.run_schedule(cfg)
    observed = _val_losses(metrics, list(cfg.data.val))
    return RunCurves(run_dir.name, sched.lrs, sched.pre_lrs, sched.base, sched.replay, observed, cfg,
                     inputs.val_roles(cfg))


def _val_losses(path: Path, sets: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for name in sets:
        points = {int(float(r["step"])): float(r[f"val/{name}/loss"]) for r in rows if r.get(f"val/{name}/loss")}
        steps = np.array(sorted(points), dtype=np.int64)
        out[name] = (steps, np.array([points[s] for s in steps]))
    return out


def read_curves(path: Path) -> RunCurves:
    """An external curve: ``step,lr,loss`` with lr on every step from 0 and loss where measured, optionally ``set``."""
    lrs, observed = read_curve_csv(path, need_loss=True)
    return RunCurves(path.stem, lrs, np.zeros(0), "scratch", 0.0, observed)


def read_curve_csv(path: Path, need_loss: bool) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The LR of every step and the losses by set (set ``loss`` without a ``set`` column) of a curve CSV."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e}") from None
    cols = set(rows[0]) if rows else set()
    need = {"step", "lr"} | ({"loss"} if need_loss else set())
    if not rows or not need <= cols:
        raise ConfigError("", f"{path}: needs the columns {', '.join(sorted(need))} (has {', '.join(sorted(cols)) or 'none'})")
    lr: dict[int, float] = {}
    points: dict[str, dict[int, float]] = {}
    for line, r in enumerate(rows, start=2):
        try:
            step = int(float(r["step"]))
            lr.setdefault(step, float(r["lr"]))
            if r.get("loss"):
                points.setdefault(r.get("set") or "loss", {})[step] = float(r["loss"])
        except (TypeError, ValueError) as e:
            raise ConfigError("", f"{path}, line {line}: not a number ({e})") from None
    steps = sorted(lr)
    if steps != list(range(len(steps))):
        missing = next(i for i, s in enumerate([*steps, -1]) if s != i)
        raise ConfigError("", f"{path}: the lr column must hold every step from 0; step {missing} is missing")
    observed = {name: (np.array(sorted(p), dtype=np.int64), np.array([p[s] for s in sorted(p)]))
                for name, p in points.items()}
    return np.array([lr[s] for s in steps]), observed


def truncate(run: RunCurves, until_step: int | None, until_fraction: float | None) -> RunCurves:
    """Keep only the points measured up to a step (``--until-step``) or a fraction of the run (``--until-fraction``)."""
    if until_step is None and until_fraction is None:
        return run
    limit = until_step if until_step is not None else int(round(float(until_fraction or 0) * len(run.lrs)))
    observed = {k: (s[s <= limit], v[s <= limit]) for k, (s, v) in run.observed.items()}
    return RunCurves(run.name, run.lrs, run.pre_lrs, run.base_kind, run.replay, observed, run.cfg, run.roles)


def check_compatible(runs: Sequence[RunCurves]) -> None:
    """Refuse runs that cannot share a fit: other tokenizers, validation sets or base models (naming them)."""
    configs = [r for r in runs if r.cfg is not None]
    if not configs:
        return
    first = configs[0]
    assert first.cfg is not None
    for key, fn in (("tokenizer", inputs.tokenizer_id), ("base model", inputs.base_id), ("validation sets", inputs.val_ids)):
        for other in configs[1:]:
            assert other.cfg is not None
            a, b = fn(first.cfg), fn(other.cfg)
            if a != b:
                raise ConfigError("", f"runs {first.name} and {other.name} cannot share a fit: different {key} "
                                      f"({_diff(a, b)})")
    kinds = {r.base_kind for r in runs}
    if len(kinds) > 1:
        raise ConfigError("", f"runs {', '.join(r.name for r in runs)} start differently ({', '.join(sorted(kinds))}): "
                              "describe every base's pre-training with model.pretraining, or fit them apart")


def _diff(a: object, b: object) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        diffs = [f"{k}: {a.get(k, 'absent')} vs {b.get(k, 'absent')}" for k in keys if a.get(k) != b.get(k)]
        return "; ".join(diffs)
    return f"{a} vs {b}"
