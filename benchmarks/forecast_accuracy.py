"""Forecast accuracy and cost on the demo study, and a sweep pruned by forecast (issue 20).

1. Leave one recipe out: on the demo study's runs that share its base model (every run but ``scratch``; the
   two seeds of ``rewarm-1x`` are one recipe, left out together), the law (``rewarm.forecast``) is fitted on
   the other recipes and predicts the held-out one's final upstream and downstream losses; once fitted on the
   whole curves, once on the first 25 % of every run. Figures: median / max absolute error of the final loss
   (nats/token), Kendall's tau between predicted and measured finals across the held-out recipes (per set,
   averaged), the share of measured finals inside the 80 % interval, next to the demo's seed noise (the largest
   final-loss difference between its two seeds). Targets: median error <= half the seed noise, tau >= 0.8,
   coverage 0.7-0.9.
2. Cost: the fit of all the shared-base runs with the bootstrap intervals (target < 10 s) and one
   ``predict_config`` (target < 1 s), timed.
3. A sweep of 12 recipes at the demo's scale (max LR 0.5/1/2 P x schedule cosine/wsd x warmup 0/5 %), run as
   ``rewarm sweep ... --prune-after 0.25 --keep 3`` (in process), then finished with a plain ``rewarm sweep``
   (the pruned runs resume to their end) to know the true best: ``pruned_compute_fraction`` (steps trained by the
   pruned sweep / steps of the full sweep; target <= 0.5) and ``pruned_best_regret`` (the best measured final
   downstream loss among the kept runs minus the best of all 12; target: within the seed noise).
4. The published anchor (Luo et al.'s curves, ``benchmarks/forecast_mpl.py``), when its data is there.

The pinned figures are the last five lines (from the fits on whole curves; the 25 % fits are printed above
with a ``_25pct`` suffix).

    .venv/bin/python benchmarks/forecast_accuracy.py [--quick] [--out runs/demo] [--cache .cache/rewarm-demo]
        [--parts loo,sweep,mpl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

SWEEP_LRS = (0.5, 1.0, 2.0)
SWEEP_SCHEDULES = ("cosine", "wsd")
SWEEP_WARMUPS = (0.0, 0.05)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the --quick demo (60-step runs) instead of the full one")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny demo (8-step runs of a d=32 model): a smoke run")
    p.add_argument("--out", type=Path, default=C.REPO / "runs" / "demo",
                   help="the demo's runs (reused when finished, as by `rewarm demo --out`) and the sweep's")
    p.add_argument("--cache", type=Path, default=C.REPO / ".cache" / "rewarm-demo", help="the demo's cache")
    p.add_argument("--parts", default="loo,sweep,mpl",
                   help="comma-separated parts to run: loo (1-2, with the pinned lines), sweep (3), mpl (4)")
    return p.parse_args(argv)


def demo_preset(args: argparse.Namespace) -> Any:
    from rewarm.demo.pipeline import PRESETS, tiny_preset

    return tiny_preset() if args.tiny else PRESETS["quick" if args.quick else "full"]


def run_study(args: argparse.Namespace) -> Any:
    """The demo (reused when finished): its plan, run directories and seed noise."""
    from rewarm.demo.cli import DEFAULT_CONFIG
    from rewarm.demo.pipeline import run_demo

    preset = demo_preset(args)
    return run_demo(DEFAULT_CONFIG, args.out, args.cache, preset, wandb_mode="disabled")


def recipes(result: Any) -> dict[str, list[str]]:
    """Recipe -> its runs, for the runs that share the base (the seed twin joins its recipe)."""
    plan = result.plan
    out: dict[str, list[str]] = {}
    for name in result.run_dirs:
        if name == plan.scratch:
            continue
        out.setdefault(plan.main if name == plan.seed_twin else name, []).append(name)
    return out


def leave_one_out(result: Any, until_fraction: float | None) -> list[dict[str, Any]]:
    """One prediction per held-out run and set: predicted final, interval, measured final."""
    from rewarm.config import load
    from rewarm.demo.forecast import final_losses
    from rewarm.forecast import fit_run_dirs, predict_config

    groups, dirs = recipes(result), result.run_dirs
    rows = []
    for recipe, held in groups.items():
        rest = [dirs[r] for k, runs in groups.items() if k != recipe for r in runs]
        fit = fit_run_dirs(rest, until_fraction=until_fraction)
        for name in held:
            actual = final_losses(dirs[name])
            for s, f in predict_config(fit, load(dirs[name] / "config.yaml"), name=name).items():
                rows.append({"recipe": recipe, "run": name, "set": s, "predicted": f.final_loss, "low": f.low,
                             "high": f.high, "actual": actual[s]})
    return rows


def scores(rows: list[dict[str, Any]]) -> dict[str, float]:
    from scipy.stats import kendalltau

    errors = [abs(r["predicted"] - r["actual"]) for r in rows]
    taus = []
    for s in sorted({r["set"] for r in rows}):
        mine = [r for r in rows if r["set"] == s]
        taus.append(kendalltau([r["predicted"] for r in mine], [r["actual"] for r in mine]).statistic)
    return {"median": statistics.median(errors), "max": max(errors), "tau": statistics.mean(taus),
            "coverage": sum(r["low"] <= r["actual"] <= r["high"] for r in rows) / len(rows)}


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"{'held-out run':28}{'set':12}{'predicted [80 %]':28}{'actual':>9}{'error':>9}")
    for r in rows:
        interval = f"{r['predicted']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
        print(f"{r['run']:28}{r['set']:12}{interval:28}{r['actual']:9.3f}{r['predicted'] - r['actual']:+9.3f}")


def cost(result: Any) -> tuple[float, float]:
    """(seconds to fit every shared-base run with intervals, seconds of one predict_config), medians of 3."""
    from rewarm.config import load
    from rewarm.forecast import fit_run_dirs, predict_config

    dirs = [result.run_dirs[r] for runs in recipes(result).values() for r in runs]
    fits = []
    for _ in range(3):
        t = time.perf_counter()
        fit = fit_run_dirs(dirs)
        fits.append(time.perf_counter() - t)
    cfg = load(result.run_dirs[result.plan.main] / "config.yaml")
    predicts = []
    for _ in range(3):
        t = time.perf_counter()
        predict_config(fit, cfg)
        predicts.append(time.perf_counter() - t)
    return C.median(fits), C.median(predicts)


def sweep_file(path: Path, peak_lr: float) -> Path:
    """12 recipes: max LR x schedule x warmup (min LR 0.1 x max; wsd cools down over the last 20 %)."""
    runs = []
    for factor in SWEEP_LRS:
        for sched in SWEEP_SCHEDULES:
            for warm in SWEEP_WARMUPS:
                lr = factor * peak_lr
                o = {"schedule.name": sched, "schedule.max_lr": float(f"{lr:.6g}"),
                     "schedule.min_lr": float(f"{0.1 * lr:.6g}"), "schedule.warmup_fraction": warm}
                if sched == "wsd":
                    o["schedule.cooldown_fraction"] = 0.2
                runs.append({"name": f"{sched}-{factor:g}x-w{warm:g}", **o})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": "prune12", "runs": runs}, indent=1))
    return path


def pruned_sweep(args: argparse.Namespace) -> tuple[float, float, float]:
    """(compute fraction, regret of the pruned sweep's best vs the true best, seconds). See the module docstring."""
    from rewarm.demo.cli import DEFAULT_CONFIG
    from rewarm.demo.corpus import CorpusPaths
    from rewarm.demo.forecast import final_losses, pretraining_overrides
    from rewarm.demo.pipeline import _with_base_shape
    from rewarm.demo.study import environment, task_overrides
    from rewarm.study.prune import run_pruned_sweep
    from rewarm.study.sweep import read_sweep, run_sweep

    preset = demo_preset(args)
    corpus = CorpusPaths(args.cache / "corpus")
    base_run = args.cache / preset.base_name  # built by the demo (part 1, or an earlier `rewarm demo`)
    env = [*environment(base_run, corpus, args.out, _with_base_shape(preset), "disabled"),
           *task_overrides(False, args.cache / "tasks"), *pretraining_overrides(preset.base)]
    spec = read_sweep(sweep_file(args.out / "prune12.json", preset.base.max_lr))
    t = time.perf_counter()
    dirs, decision = run_pruned_sweep(DEFAULT_CONFIG, spec.runs, group="prune12", fraction=0.25, keep=3,
                                      extra_overrides=env, in_process=True)
    seconds = time.perf_counter() - t
    run_sweep(DEFAULT_CONFIG, spec.runs, group="prune12", extra_overrides=env, in_process=True)  # the rest, to know
    down = {d.name: final_losses(d)["slimpajama"] for d in dirs}
    for r in sorted(decision["runs"], key=lambda r: r["rank"]):
        print(f"  {r['rank']:>2} {r['name']:20} forecast {r['sets']['slimpajama']['final_loss']:.3f} "
              f"actual {down[r['name']]:.3f} {'kept' if r['kept'] else 'pruned'}")
    regret = min(down[n] for n in decision["kept"]) - min(down.values())
    return decision["steps_pruned"] / decision["steps_full"], regret, seconds


def run_mpl() -> None:
    """Luo et al.'s published curves through ``benchmarks/forecast_mpl.py``: its ``mpl_heldout_mape=`` and
    ``mpl_heldout_final_err=`` lines (``nan`` with a notice when the data is not on this machine)."""
    import forecast_mpl

    forecast_mpl.main([])


def main(argv: list[str] | None = None) -> float:
    from rewarm.errors import ConfigError

    args = parse(argv)
    parts = set(args.parts.split(","))
    C.print_machine()
    C.quiet_logs(lightning=True)
    result = run_study(args) if "loo" in parts else None
    noise = float(result.numbers.seed_noise) if result is not None else float("nan")
    if result is not None:
        whole = leave_one_out(result, None)
        print_rows("leave one recipe out, fitted on whole curves:", whole)
        try:
            quarter = leave_one_out(result, 0.25)
            print_rows("leave one recipe out, fitted on the first 25 % of every run:", quarter)
        except ConfigError as e:  # --quick / --tiny: a quarter of a short run holds too few validations
            print(f"\nleave one recipe out on the first 25 %: not fitted ({e})")
            quarter = []
        fit_s, predict_s = cost(result)
        print(f"fit_seconds={fit_s:.3f}  (all {sum(map(len, recipes(result).values()))} shared-base runs, with "
              "intervals; target < 10)")
        print(f"predict_seconds={predict_s:.4f}  (one config; target < 1)")
    if "sweep" in parts:
        fraction, regret, seconds = pruned_sweep(args)
        print(f"pruned sweep: {seconds:.0f} s; regret against the seed noise {noise:.4f}")
        print(f"pruned_compute_fraction={fraction:.4f}")
        print(f"pruned_best_regret={regret:.4f}")
    if "mpl" in parts:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        run_mpl()
    if result is None:
        return float("nan")
    w = scores(whole)
    q = scores(quarter) if quarter else dict.fromkeys(w, float("nan"))
    for key, value in (("median_abs_err", q["median"]), ("max_abs_err", q["max"])):
        print(f"forecast_{key}_25pct={value:.4f}")
    print(f"kendall_tau_25pct={q['tau']:.4f}\ninterval_coverage_25pct={q['coverage']:.4f}")
    print(f"targets: median <= seed_noise / 2 = {noise / 2:.4f}, kendall_tau >= 0.8, interval_coverage 0.7-0.9")
    print(f"forecast_median_abs_err={w['median']:.4f}\nforecast_max_abs_err={w['max']:.4f}")
    print(f"kendall_tau={w['tau']:.4f}\ninterval_coverage={w['coverage']:.4f}\nseed_noise={noise:.4f}")
    return w["median"]


if __name__ == "__main__":
    main()
