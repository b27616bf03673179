"""``rewarm forecast fit`` / ``rewarm forecast predict``: fit the loss law on runs or curves, forecast configs.

    rewarm forecast fit RUN_DIR [RUN_DIR ...] --out FIT.json [--law cpt] [--anneal momentum|multi_power]
                        [--until-step N | --until-fraction F]
    rewarm forecast fit --curves A.csv [B.csv ...] --out FIT.json
    rewarm forecast predict FIT.json CONFIG [key=value ...] [--sweep SWEEP.yaml] [--json] [--csv FILE] [--plot FILE]
    rewarm forecast predict FIT.json --lr-csv C.csv --json

Refusals print ``error: ...`` and exit 2; notices and warnings go to stderr (``--json`` prints one object on stdout).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rewarm import config as rc
from rewarm.errors import ConfigError, report
from rewarm.forecast import api
from rewarm.forecast.fitfile import Fit, SetForecast, load_fit, save_fit
from rewarm.forecast.law import ANNEAL_FORMS

ANNEALED_NOTICE = ("notice: model.pretraining is not set: the base is taken as fully annealed (its pre-training area "
                   "fitted, its annealing inside L0)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewarm forecast", description="Fit a loss law on runs and forecast recipes.")
    sub = p.add_subparsers(dest="action", required=True, metavar="fit|predict")
    f = sub.add_parser("fit", help="fit the law on run directories (or --curves) and write FIT.json")
    f.add_argument("run_dirs", nargs="*", type=Path, help="run directories (config.yaml + metrics.csv)")
    f.add_argument("--curves", nargs="+", type=Path, default=[], help="external curves: CSV step,lr,loss[,set]")
    f.add_argument("--out", required=True, type=Path, help="where to write FIT.json")
    f.add_argument("--law", default="cpt", choices=api.LAWS, help="the law (cpt: continual pre-training)")
    f.add_argument("--anneal", choices=ANNEAL_FORMS, default=None,
                   help=f"annealing term (default {api.DEFAULT_ANNEAL}, the more accurate on the published curves)")
    until = f.add_mutually_exclusive_group()
    until.add_argument("--until-step", type=int, default=None, help="fit only the points up to this step")
    until.add_argument("--until-fraction", type=float, default=None, help="fit only the first fraction of each run")
    f.add_argument("--no-intervals", action="store_true", help="skip the bootstrap (no 80 %% intervals)")
    q = sub.add_parser("predict", help="forecast the curves and final losses of a config or a sweep")
    q.add_argument("fit", type=Path, help="FIT.json")
    q.add_argument("config", nargs="?", default=None, help="run config (YAML)")
    q.add_argument("overrides", nargs="*", default=[], help="key=value overrides")
    q.add_argument("--sweep", type=Path, default=None, help="forecast every member of this sweep spec")
    q.add_argument("--lr-csv", type=Path, default=None, help="a run given by its LR at every step (CSV step,lr)")
    q.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    q.add_argument("--csv", type=Path, default=None, help="write every curve point to this CSV")
    q.add_argument("--plot", type=Path, default=None, help="draw the forecast curves and the LR schedules")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return fit_main(args) if args.action == "fit" else predict_main(args)
    except ConfigError as e:
        return report(e)


def fit_main(args: argparse.Namespace) -> int:
    if bool(args.run_dirs) == bool(args.curves):
        raise ConfigError("", "give run directories or --curves files (one of the two)")
    if args.until_fraction is not None and not 0 < args.until_fraction <= 1:
        raise ConfigError("", f"--until-fraction must be in (0, 1], got {args.until_fraction}")
    kw = {"anneal": args.anneal, "until_step": args.until_step, "until_fraction": args.until_fraction,
          "intervals": not args.no_intervals}
    fit = api.fit_curves(args.curves, **kw) if args.curves else api.fit_run_dirs(args.run_dirs, **kw)
    if fit.base_kind == "annealed":
        print(ANNEALED_NOTICE, file=sys.stderr)
    print(describe_fit(fit))
    save_fit(fit, args.out)
    print(f"wrote {args.out}")
    return 0


def describe_fit(fit: Fit) -> str:
    """Per set: the fitted constants and the residual (RMSE in nats)."""
    points = sum(s.n_points for s in fit.sets.values())
    params = sum(s.n_params for s in fit.sets.values())
    lines = [f"fit of {len(fit.runs)} runs ({', '.join(fit.runs)}): law {fit.law}, anneal {fit.anneal}, "
             f"{points} points, {params} free parameters"]
    for name, s in fit.sets.items():
        consts = " ".join(f"{k}={v:.4g}" for k, v in s.params.items())
        lines.append(f"  {name} ({s.role}): {consts}  RMSE {s.rmse:.4f} nats" + ("" if s.converged else "  [not converged]"))
    lines += [f"  warning: {w}" for w in fit.warnings]
    return "\n".join(lines)


# ---------------------------------------------------------------- predict


def predict_main(args: argparse.Namespace) -> int:
    fit = load_fit(args.fit)
    for w in fit.warnings:
        print(f"warning: {args.fit} is flagged: {w}", file=sys.stderr)
    if args.lr_csv is not None:
        if args.config or args.sweep:
            raise ConfigError("", "--lr-csv forecasts one LR file: give no CONFIG or --sweep with it")
        from rewarm.forecast.runs import read_curve_csv

        lrs, _ = read_curve_csv(args.lr_csv, need_loss=False)
        runs = [(args.lr_csv.stem, api.predict_lrs(fit, lrs), lrs, None)]
    else:
        if args.config is None:
            raise ConfigError("", "give a CONFIG (and optionally --sweep) or --lr-csv")
        runs = _predict_configs(fit, args.config, args.overrides, args.sweep)
        if fit.base_kind == "annealed":
            print(ANNEALED_NOTICE, file=sys.stderr)
    runs.sort(key=lambda r: r[3] if r[3] is not None else 0.0)
    if args.json:
        print(json.dumps(to_json(runs)))
    else:
        print(format_table(runs))
    if args.csv:
        write_csv(runs, args.csv)
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.plot:
        plot(runs, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


Forecasted = tuple[str, dict[str, SetForecast], np.ndarray, "float | None"]


def _predict_configs(fit: Fit, config: str, overrides: Sequence[str], sweep: Path | None) -> list[Forecasted]:
    members: list[tuple[str | None, list[str]]] = [(None, [])]
    if sweep is not None:
        from rewarm.study.spec import load_sweep

        members = [(m.name, [*m.overrides, f"run.name={m.name}"]) for m in load_sweep(sweep)]
    out = []
    for name, extra in members:
        try:
            cfg = rc.load(config, [*overrides, *extra])
        except ConfigError as e:
            raise ConfigError(e.key, f"{e.message}" + (f" (sweep member {name})" if name else "")) from None
        forecasts = api.predict_config(fit, cfg, name=name or cfg.run.name)
        from rewarm.forecast.inputs import run_lrs

        out.append((name or cfg.run.name, forecasts, run_lrs(cfg), api.objective(forecasts, cfg)))
    return out


def to_json(runs: Sequence[Forecasted]) -> dict:
    return {"runs": [{"name": name, "sets": {s: {"final_loss": f.final_loss, "low": f.low, "high": f.high,
                                                 "curve": [[st, v] for st, v in f.curve]}
                                             for s, f in sets.items()}} for name, sets, _, _ in runs]}


def format_table(runs: Sequence[Forecasted]) -> str:
    sets = list(runs[0][1]) if runs else []
    width = max([len("run"), *(len(r[0]) for r in runs)])
    head = f"{'run':<{width}}  {'objective':>9}  " + "  ".join(f"{s + ' final [80 %]':>28}" for s in sets)
    lines = [head]
    for name, fc, _, obj in runs:
        cells = "  ".join(f"{fc[s].final_loss:>8.4f} [{fc[s].low:.4f}, {fc[s].high:.4f}]".rjust(28) for s in sets)
        lines.append(f"{name:<{width}}  {'' if obj is None else f'{obj:.4f}':>9}  {cells}")
    return "\n".join(lines)


def write_csv(runs: Sequence[Forecasted], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "set", "step", "loss", "final_loss", "low", "high"])
        for name, sets, _, _ in runs:
            for s, fc in sets.items():
                for step, loss in fc.curve:
                    w.writerow([name, s, step, repr(loss), repr(fc.final_loss), repr(fc.low), repr(fc.high)])


def plot(runs: Sequence[Forecasted], path: Path) -> None:
    """Forecast curves (one panel per set) with the final 80 % interval, and each run's LR schedule beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(runs[0][1]) if runs else []
    fig, axes = plt.subplots(2, max(1, len(sets)), figsize=(5 * max(1, len(sets)), 6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
    for col, s in enumerate(sets):
        ax, lr_ax = axes[0][col], axes[1][col]
        for name, fc, lrs, _ in runs:
            steps, loss = zip(*fc[s].curve, strict=True)
            (line,) = ax.plot(steps, loss, label=name)
            ax.errorbar([steps[-1]], [fc[s].final_loss], yerr=[[fc[s].final_loss - fc[s].low],
                        [fc[s].high - fc[s].final_loss]], color=line.get_color(), capsize=3)
            lr_ax.plot(np.arange(len(lrs)), lrs, color=line.get_color())
        ax.set_title(f"{s}: forecast loss (80 % interval at the end)")
        ax.set_ylabel("loss (nats)")
        lr_ax.set_ylabel("LR")
        lr_ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
