"""``rewarm sweep CONFIG SWEEP.yaml --prune-after F --keep K``: a sweep pruned by forecast.

1. Every member trains to its *stop step*: the first validation step at or after fraction F of its steps
   (``rewarm train --stop-at-step``: a checkpoint, no summary.json; the run is unfinished).
2. The loss law (``rewarm.forecast``) is fitted on all those partial curves together, each member's final losses
   are forecast from its own config, and members are ranked by ``forecast.objective`` (lower is better).
3. The K best continue to the end (``resume.mode=auto`` resumes them); the others stay stopped.

Each member's run directory gets ``forecast.json`` (``rewarm.study.runs.FORECAST_FILE``: its forecast, its
rank, whether it was pruned) and the sweep's directory ``prune.json`` (the decision) and ``forecast_fit.json``
(the fit, usable by ``rewarm forecast predict``). The decision is taken once: the same command run again reads
``prune.json`` and only continues what is unfinished (idempotent; a changed F or K is refused). A plain
``rewarm sweep`` of the same sweep later resumes the pruned members to their end.

Ranking by forecast, not by the loss at the stop step: a run still at a high LR looks worse mid-run than one
already decaying (short-horizon bias, arXiv 1803.02021); the law knows each member's schedule.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewarm.checkpoints.store import write_atomic
from rewarm.errors import ConfigError
from rewarm.study.runs import FORECAST_FILE
from rewarm.study.sweep import (
    FINISHED_MARKER,
    PREEMPTED,
    PlannedRun,
    SweepFailed,
    _run_in_process,
    _run_subprocess,
    plan_sweep,
    write_manifest,
)

log = logging.getLogger(__name__)

PRUNE_FILE = "prune.json"
FIT_FILE = "forecast_fit.json"


@dataclass(frozen=True)
class Member:
    """A sweep member as pruning sees it: its plan, its config, its length and its stop step."""

    planned: PlannedRun
    cfg: Any
    max_steps: int
    stop_step: int

    @property
    def name(self) -> str:
        return self.planned.name

    @property
    def run_dir(self) -> Path:
        return self.planned.run_dir


def check_prune_args(fraction: float, keep: int) -> None:
    """Refuse (ConfigError naming the option) a fraction outside (0, 1) or a keep below 1."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError("--prune-after", f"must be a fraction of each run's steps in (0, 1), got {fraction:g}")
    if keep < 1:
        raise ConfigError("--keep", f"must keep at least 1 run, got {keep}")


def stop_step(max_steps: int, val_every: int, fraction: float) -> int:
    """The first validation step at or after ``fraction`` of ``max_steps`` (the partial curve ends on a
    measured point), at least 1, at most ``max_steps``."""
    step = max(1, math.ceil(fraction * max_steps - 1e-9))
    if val_every > 0:
        step = math.ceil(step / val_every) * val_every
    return min(step, max_steps)


def members_of(plan: Sequence[PlannedRun], config_path: str | Path, fraction: float) -> list[Member]:
    from rewarm.config import batch_plan, load

    out = []
    for p in plan:
        cfg = load(config_path, p.overrides)
        steps = batch_plan(cfg).max_steps
        out.append(Member(p, cfg, steps, stop_step(steps, cfg.trainer.val_every_steps, fraction)))
    return out


def reached(run_dir: Path, step: int) -> bool:
    """Finished, or holding a valid checkpoint at ``step`` or later (no need to train to the stop step)."""
    from rewarm.checkpoints.store import list_checkpoints, read_valid_manifest

    if (run_dir / FINISHED_MARKER).is_file():
        return True
    for ckpt in list_checkpoints(run_dir / "checkpoints"):
        manifest = read_valid_manifest(ckpt)
        if manifest is not None:
            return int(manifest["step"]) >= step
    return False


def run_pruned_sweep(config_path: str | Path, runs: list[Any], *, group: str, fraction: float, keep: int,
                     extra_overrides: Sequence[str] = (), in_process: bool = False, stop_on_error: bool = False,
                     ) -> tuple[list[Path], dict[str, Any]]:
    """Run the sweep pruned by forecast; return every member's directory and the decision (``prune.json``).
    Raises ConfigError before anything runs, SweepFailed when a member failed (the decision waits for all)."""
    check_prune_args(fraction, keep)
    plan = plan_sweep(config_path, runs, group=group, extra_overrides=extra_overrides)
    if not plan:
        raise ConfigError("runs", "the sweep has no runs")
    members = members_of(plan, config_path, fraction)
    group_dir = plan[0].run_dir.parent
    write_manifest(plan, group_dir / "sweep.json", config_path, plan[0].run_dir.parent.name)
    decision = read_decision(group_dir, fraction, keep, [m.name for m in members])
    if decision is None:
        todo = [m for m in members if not reached(m.run_dir, m.stop_step)]
        run_members(config_path, todo, len(members), stop=True, in_process=in_process, stop_on_error=stop_on_error)
        decision = decide(members, fraction, keep, group_dir)
    kept = [m for m in members if m.name in decision["kept"]]
    log.info("continuing the %d best by forecast to the end: %s", len(kept), ", ".join(m.name for m in kept))
    run_members(config_path, [m for m in kept if not (m.run_dir / FINISHED_MARKER).is_file()], len(members),
                stop=False, in_process=in_process, stop_on_error=stop_on_error)
    return [m.run_dir for m in members], decision


def run_members(config_path: str | Path, members: list[Member], total: int, *, stop: bool, in_process: bool,
                stop_on_error: bool) -> None:
    """Train each member to its stop step (``stop``) or to its end; SweepFailed when one failed."""
    failed: list[tuple[str, str]] = []
    for i, m in enumerate(members, 1):
        goal = f"to step {m.stop_step} of {m.max_steps}" if stop else "to the end"
        log.info("[%d/%d] %s: training %s", i, len(members), m.name, goal)
        runner = _run_in_process if in_process else _run_subprocess
        error, halt = runner(config_path, m.planned, m.stop_step if stop else None)
        done = reached(m.run_dir, m.stop_step) if stop else (m.run_dir / FINISHED_MARKER).is_file()
        if error is None and not done:
            error, halt = f"ended before {goal} (interrupted?)", True
        if error is not None:
            log.error("%s failed: %s", m.name, error)
            failed.append((m.name, error))
            if halt or stop_on_error:
                dirs = [x.run_dir for x in members]
                raise SweepFailed(failed, dirs, stopped=True, preempted=error.startswith(PREEMPTED))
    if failed:
        raise SweepFailed(failed, [m.run_dir for m in members])


def read_decision(group_dir: Path, fraction: float, keep: int, names: list[str]) -> dict[str, Any] | None:
    """The decision taken by an earlier call of the same sweep (None: none yet). A decision taken with another
    fraction, keep or set of members is refused: its pruned runs stopped where that one said."""
    path = group_dir / PRUNE_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    was = (doc.get("fraction"), doc.get("keep"), sorted(r["name"] for r in doc.get("runs", [])))
    if was != (fraction, keep, sorted(names)):
        raise ConfigError("--prune-after", f"{path} holds the decision of this sweep pruned after {was[0]} keeping "
                          f"{was[1]} of {len(was[2])} runs; run it with those values, or with another --group (a "
                          "plain `rewarm sweep` of it resumes the pruned runs to their end)")
    return doc


def decide(members: list[Member], fraction: float, keep: int, group_dir: Path) -> dict[str, Any]:
    """Fit the law on the partial curves, forecast every member, keep the ``keep`` best by the objective; write
    ``forecast_fit.json``, each member's ``forecast.json`` and, last, ``prune.json``."""
    from rewarm.forecast import fit_run_dirs, objective, predict_config, save_fit

    t0 = time.perf_counter()
    until = max(m.stop_step / m.max_steps for m in members)
    fit = fit_run_dirs([m.run_dir for m in members], until_fraction=until)
    save_fit(fit, group_dir / FIT_FILE)
    log.info("law fitted on the %d partial curves (to %.0f %% of each run) in %.1f s", len(members), 100 * until,
             time.perf_counter() - t0)
    forecasts = {m.name: predict_config(fit, m.cfg, name=m.name) for m in members}
    scores = {m.name: float(objective(forecasts[m.name], m.cfg)) for m in members}
    order = sorted(members, key=lambda m: (not math.isfinite(scores[m.name]), scores[m.name]))
    kept = [m.name for m in order[:keep]]
    rows = []
    for rank, m in enumerate(order, 1):
        doc = forecast_doc(forecasts[m.name], pruned=m.name not in kept, rank=rank, score=scores[m.name],
                           stop=m.stop_step, max_steps=m.max_steps)
        write_atomic(m.run_dir / FORECAST_FILE, _json(doc))
        rows.append({"name": m.name, "rank": rank, "objective": scores[m.name], "kept": m.name in kept,
                     "stop_step": m.stop_step, "max_steps": m.max_steps, "sets": doc["sets"]})
    decision = {"fraction": fraction, "keep": keep, "fit": FIT_FILE, "kept": kept, "runs": rows,
                "steps_full": sum(m.max_steps for m in members),
                "steps_pruned": sum(m.max_steps if m.name in kept else m.stop_step for m in members)}
    write_atomic(group_dir / PRUNE_FILE, _json(decision))
    return decision


def forecast_doc(sets: dict[str, Any], *, pruned: bool, rank: int, score: float, stop: int, max_steps: int,
                 ) -> dict[str, Any]:
    """A member's forecast.json: per set the forecast final loss, its 80 % interval and the predicted curve."""
    return {"pruned": pruned, "rank": rank, "objective": score, "stop_step": stop, "max_steps": max_steps,
            "sets": {name: {"final_loss": float(f.final_loss), "low": float(f.low), "high": float(f.high),
                            "curve": [[int(s), float(v)] for s, v in f.curve]} for name, f in sets.items()}}


def _json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1) + "\n"


def summary_lines(decision: dict[str, Any], dirs: list[Path]) -> list[str]:
    """The pruned sweep's table: rank, run, kept or pruned, objective, per set forecast [80 %] and measured final
    (the last validation: partial for a pruned run)."""
    from rewarm.study.runs import load_run

    by_name = {d.name: d for d in dirs}
    sets = list(dict.fromkeys(s for r in decision["runs"] for s in r["sets"]))
    head = f"{'#':>3}  {'run':24} {'state':8} {'objective':>9}  " + "  ".join(f"{s + ' forecast [80 %]':34}"
                                                                             f"{s + ' actual':>14}" for s in sets)
    lines = [head, "-" * len(head)]
    for r in decision["runs"]:
        run = load_run(by_name[r["name"]]) if (by_name[r["name"]] / "metrics.csv").is_file() else None
        cells = []
        for s in sets:
            f = r["sets"].get(s)
            fc = f"{f['final_loss']:.4f} [{f['low']:.4f}, {f['high']:.4f}]" if f else "-"
            losses = run.series(f"val/{s}/loss")[1] if run else []
            finished = (by_name[r["name"]] / FINISHED_MARKER).is_file()
            actual = f"{losses[-1]:.4f}" + ("" if finished else "*") if losses else "-"
            cells.append(f"{fc:34}{actual:>14}")
        state = "kept" if r["kept"] else "pruned"
        lines.append(f"{r['rank']:>3}  {r['name'][:24]:24} {state:8} {r['objective']:9.4f}  " + "  ".join(cells))
    frac = decision["steps_pruned"] / max(1, decision["steps_full"])
    lines.append(f"* at the stop step (pruned, or not yet finished). Steps trained: {decision['steps_pruned']} of "
                 f"{decision['steps_full']} for the full sweep ({frac:.2f})")
    return lines
