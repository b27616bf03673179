"""Runs read back from their run directories alone (``config.yaml`` + ``metrics.csv``), labelled and summarized:
what the figures (``plots``), the report (``report``) and the whole comparison (``compare``) are made of.

Definitions, per validation set, on its evaluation rows:

- start loss: at step 0 (the starting model); final loss: at the last evaluation; best: the minimum;
- perplexity: the ``val/<set>/ppl`` column, else exp(loss);
- forgetting on an *upstream* set = final loss - start loss (nats/token; > 0: the run forgot);
- adaptation on a *downstream* set = start loss - final loss (nats/token; > 0: the run adapted).
The trainer's ``forgetting/<set>`` / ``adaptation/<set>`` columns are used when present.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewarm.config import flatten
from rewarm.study.keys import format_value, short_keys
from rewarm.study.tasks import task_stats

log = logging.getLogger(__name__)

TOKENS_COLUMNS = ("tokens", "data/tokens_seen")
"""The x axis: the first of these columns the CSV has (else the step)."""
IGNORED_PREFIXES = (
    "run.name",
    "run.out_dir",
    "logging.",
    "checkpoint.",
    "resume.",
    "data.cache_dir",
    "data.num_workers",
    "data.val.",
    "trainer.log_every_steps",
    "trainer.val_every_steps",
    "tasks.",
)
"""Config keys that do not change what a run learns: never part of a label."""


@dataclass
class RunData:
    """One run directory: its config (nested dict), its metric rows (merged per step, sorted), a label."""

    run_dir: Path
    config: dict[str, Any]
    rows: list[dict[str, float]]
    label: str = ""
    forecast: dict[str, Any] | None = None
    """The run's ``forecast.json`` (written by a sweep pruned by forecast), when it has one."""

    @property
    def name(self) -> str:
        return self.run_dir.name

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def x_column(self) -> str:
        cols = self.columns()
        return next((c for c in TOKENS_COLUMNS if c in cols), "step")

    def series(self, column: str) -> tuple[list[float], list[float]]:
        """(tokens, values) of the rows where ``column`` was measured."""
        x = self.x_column()
        pts = [(r.get(x, r["step"]), r[column]) for r in self.rows if column in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    def val_sets(self) -> list[str]:
        """Validation sets: those of the config, then any other ``val/<set>/loss`` column."""
        sets = list((self.config.get("data") or {}).get("val") or {})
        for col in self.columns():
            parts = col.split("/")
            if len(parts) == 3 and parts[0] == "val" and parts[2] == "loss" and parts[1] not in sets:
                sets.append(parts[1])
        return sets

    def role(self, val_set: str) -> str | None:
        """upstream | downstream from the config (else from a forgetting/adaptation column), or None."""
        role = ((self.config.get("data") or {}).get("val") or {}).get(val_set, {}).get("role")
        if role is None and f"forgetting/{val_set}" in self.columns():
            return "upstream"
        if role is None and f"adaptation/{val_set}" in self.columns():
            return "downstream"
        return role


@dataclass
class SetStats:
    """One validation set of one run. Losses in nats/token; ``change`` is forgetting (upstream) or
    adaptation (downstream), None for a set without a role."""

    name: str
    role: str | None
    start_loss: float
    final_loss: float
    best_loss: float
    best_tokens: float
    final_ppl: float
    best_ppl: float
    change: float | None


@dataclass
class RunSummary:
    name: str
    label: str
    run_dir: Path
    steps: int
    tokens: float
    final_lr: float | None
    sets: dict[str, SetStats] = field(default_factory=dict)
    tasks: dict[str, Any] = field(default_factory=dict)  # task -> rewarm.study.tasks.TaskStats
    forecast: dict[str, dict[str, float]] = field(default_factory=dict)
    """Forecast final loss per set (``final_loss``, ``low``, ``high``: the 80 % interval), from forecast.json."""
    pruned: bool = False
    """Stopped early by a pruned sweep: its final losses are the forecast's, its measured ones are partial."""

    @property
    def forgetting(self) -> dict[str, float]:
        return {s: v.change for s, v in self.sets.items() if v.role == "upstream" and v.change is not None}

    @property
    def adaptation(self) -> dict[str, float]:
        return {s: v.change for s, v in self.sets.items() if v.role == "downstream" and v.change is not None}


# ---------------------------------------------------------------- loading


def load_run(run_dir: str | Path) -> RunData:
    """Read one run directory. The label is the directory's name until ``label_runs`` sets it."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: no metrics.csv")
    return RunData(run_dir, read_config(run_dir / "config.yaml"), read_metrics(metrics), run_dir.name,
                   read_forecast(run_dir / FORECAST_FILE))


FORECAST_FILE = "forecast.json"
"""Written into a run directory by ``rewarm sweep --prune-after``: the run's forecast and whether it was pruned."""


def read_forecast(path: Path) -> dict[str, Any] | None:
    """A run's forecast.json (None when absent or unreadable: a comparison never fails on it)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s): the run is shown without its forecast", path, e)
        return None
    return data if isinstance(data, dict) else None


def read_config(path: Path) -> dict[str, Any]:
    """The run's resolved config as a plain dict ({} when the file is missing)."""
    if not path.is_file():
        log.warning("%s is missing: the run is labelled by its directory name", path)
        return {}
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return data if isinstance(data, dict) else {}


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.csv -> one dict per step (empty cells left out; a step logged twice, e.g. around a resume,
    keeps the later values), sorted by step. Repeated header lines are skipped."""
    by_step: dict[int, dict[str, float]] = {}
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: _number(v) for k, v in raw.items() if k and v not in (None, "")}
            if not isinstance(row.get("step"), float):
                continue  # a repeated header or a broken line
            values = {k: v for k, v in row.items() if isinstance(v, float)}
            by_step.setdefault(int(values["step"]), {}).update(values)
    return [by_step[s] for s in sorted(by_step)]


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def load_runs(run_dirs: list[Path], labels: dict[str, str] | None = None) -> list[RunData]:
    """Load and label runs: by ``labels`` (run dir name -> label) where given, else distinguishing config keys."""
    runs = [load_run(d) for d in run_dirs]
    for run, label in zip(runs, label_runs(runs), strict=True):
        run.label = (labels or {}).get(run.name, label)
    return runs


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories from the given paths: a directory without metrics.csv (e.g. a sweep directory)
    stands for its sub-directories that have one."""
    out = []
    for p in paths:
        if (p / "metrics.csv").is_file():
            out.append(p)
        else:
            subs = sorted(d for d in p.iterdir() if (d / "metrics.csv").is_file()) if p.is_dir() else []
            if not subs:
                raise FileNotFoundError(f"{p} has no metrics.csv, nor any sub-directory with one")
            out.extend(subs)
    return out


# ---------------------------------------------------------------- labels


def label_view(config: dict[str, Any]) -> dict[str, str]:
    """The config keys that define what a run learns, as short text: flattened, bookkeeping keys dropped,
    ``data.train`` summarised as its mix (``code:95%+prose:5%``), model paths shortened to their last part."""
    flat = flatten(config)
    view = {}
    for key, value in flat.items():
        if key.startswith(IGNORED_PREFIXES) or key.startswith("data.train."):
            continue
        if key in ("model.name_or_path", "model.tokenizer") and isinstance(value, str):
            value = Path(value.rstrip("/")).name or value
        view[key] = format_value(value)
    train = (config.get("data") or {}).get("train") or {}
    if train:
        view["data.train"] = _mix_text(train)
    return view


def _mix_text(train: dict[str, Any]) -> str:
    weights = {name: float((src or {}).get("weight", 1.0)) for name, src in train.items()}
    weights = {name: w for name, w in weights.items() if w > 0} or weights  # a source at weight 0 is not read
    total = sum(weights.values()) or 1.0
    if len(weights) == 1:
        return next(iter(weights))
    return "+".join(f"{n}:{round(100 * w / total, 2):g}%" for n, w in weights.items())


def label_runs(runs: list[RunData]) -> list[str]:
    """Each run's label: ``key=value`` of the config keys that differ among the runs (keys shortened to their
    shortest unique suffix). Where most runs share a value (a clear mode, e.g. the reference max LR of a
    study), runs with that value leave the key out, so a label reads as the run's difference from the
    others; a run left with nothing to say gets all its distinguishing keys. Runs that would share a label
    get their directory name added."""
    views = [label_view(r.config) for r in runs]
    order = list(dict.fromkeys(k for v in views for k in v))
    differing = _drop_redundant([k for k in order if len({v.get(k) for v in views}) > 1], views)
    short = short_keys(differing)
    modes = {k: _clear_mode([v.get(k) for v in views]) for k in differing}
    labels = []
    for run, view in zip(runs, views, strict=True):
        full = [f"{short[k]}={view[k]}" for k in differing if k in view]
        delta = [f"{short[k]}={view[k]}" for k in differing if k in view and view[k] != modes[k]]
        labels.append(", ".join(delta or full) or run.name)
    return [f"{lab} ({r.name})" if labels.count(lab) > 1 else lab for lab, r in zip(labels, runs, strict=True)]


def _clear_mode(values: list[str | None]) -> str | None:
    """The value shared by more runs than any other, if at least two runs share it; else None."""
    counts = Counter(values).most_common(2)
    if counts[0][1] < 2 or (len(counts) > 1 and counts[1][1] == counts[0][1]):
        return None
    return counts[0][0]


def _drop_redundant(keys: list[str], views: list[dict[str, str]]) -> list[str]:
    """Drop a key whose values pair one-to-one with an earlier kept key's (``min_lr`` set as 0.1 x ``max_lr``
    says nothing that ``max_lr`` does not)."""
    kept: list[str] = []
    for key in keys:
        if not any(_one_to_one([(v.get(k), v.get(key)) for v in views]) for k in kept):
            kept.append(key)
    return kept


def _one_to_one(pairs: list[tuple[str | None, str | None]]) -> bool:
    unique_pairs = set(pairs)
    return len({a for a, _ in unique_pairs}) == len(unique_pairs) == len({b for _, b in unique_pairs})


# ---------------------------------------------------------------- summaries


def summarize(run: RunData) -> RunSummary:
    """Final / best / start values per validation set, forgetting, adaptation, tokens, final LR."""
    last = run.rows[-1] if run.rows else {}
    x = run.x_column()
    lrs = run.series("optim/lr")[1]
    summary = RunSummary(
        run.name, run.label, run.run_dir, int(last.get("step", 0)), last.get(x, 0.0), lrs[-1] if lrs else None
    )
    for name in run.val_sets():
        stats = set_stats(run, name)
        if stats is not None:
            summary.sets[name] = stats
    summary.tasks = task_stats(run)
    if run.forecast:
        summary.forecast = {k: v for k, v in (run.forecast.get("sets") or {}).items() if isinstance(v, dict)}
        summary.pruned = bool(run.forecast.get("pruned"))
    return summary


def set_stats(run: RunData, name: str) -> SetStats | None:
    tokens, losses = run.series(f"val/{name}/loss")
    if not losses:
        return None
    best = min(range(len(losses)), key=losses.__getitem__)
    ppls = run.series(f"val/{name}/ppl")[1] or [math.exp(v) for v in losses]
    role = run.role(name)
    return SetStats(
        name,
        role,
        losses[0],
        losses[-1],
        losses[best],
        tokens[best],
        ppls[-1],
        min(ppls),
        _change(run, name, role, losses),
    )


def _change(run: RunData, name: str, role: str | None, losses: list[float]) -> float | None:
    """Forgetting (upstream) / adaptation (downstream) at the end: the trainer's column, else from the losses."""
    if role is None:
        return None
    column = f"{'forgetting' if role == 'upstream' else 'adaptation'}/{name}"
    logged = run.series(column)[1]
    if logged:
        return logged[-1]
    return losses[-1] - losses[0] if role == "upstream" else losses[0] - losses[-1]
