"""The whole demo as one function: corpora -> tokenizer -> base model -> study -> report with findings.

Everything is cached under ``cache`` (corpora, tokenizer, base model, reused by the next call) and the
study's runs go to ``<out>/<group>/<run>/`` (finished runs are skipped on the next call, as in any sweep,
unless the base model changed or ``rerun`` is set). ``PRESETS`` holds the sizes of ``rewarm demo`` and
``rewarm demo --quick``; tests pass smaller ones.

The runs evaluate the demo's two lm-eval tasks when lm-evaluation-harness (the ``eval`` extra) is installed; a
plain ``pip install rewarm`` runs the demo without them (``TASKS_NOTICE`` says so) and everything else alike.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rewarm.data.state import DATA_ORDER_VERSION
from rewarm.demo.base import BaseRecipe, ModelShape, build_base, revisions
from rewarm.demo.corpus import CorpusPaths, CorpusSpec, build_corpora
from rewarm.demo.forecast import pretraining_overrides, run_forecast
from rewarm.demo.study import (
    GROUP,
    StudyPlan,
    StudyRecipe,
    environment,
    findings_of,
    plan_study,
    run_study,
    task_overrides,
)
from rewarm.demo.tasks import VERSION as TASKS_VERSION
from rewarm.demo.tasks import build_demo_tasks
from rewarm.demo.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

TASKS_NOTICE = ("lm-eval is not installed: the demo runs without its downstream tasks "
                "(pip install 'rewarm[eval]' to add them)")


@dataclass(frozen=True)
class DemoPreset:
    """All sizes of one demo: corpora, tokenizer, base pre-training, study runs."""

    corpus: CorpusSpec = CorpusSpec()
    vocab_size: int = 4000
    base: BaseRecipe = BaseRecipe()
    base_name: str = "base"
    study: StudyRecipe = StudyRecipe()
    group: str = GROUP
    task_items: int = 150
    """Items of each demo task (rewarm.demo.tasks)."""


PRESETS: dict[str, DemoPreset] = {
    "full": DemoPreset(),
    "quick": DemoPreset(
        base=BaseRecipe(steps=240, revision_every=60, val_every=60),
        base_name="base-quick",
        study=StudyRecipe(steps=60, val_every=10, val_tokens=8192),  # 7 points a run: 42 for the 14 constants of the forecast
        group=f"{GROUP}-quick",
        task_items=100,
    ),
}


def tiny_preset() -> DemoPreset:
    """A demo small enough for a test (seconds per run): small corpora, 512 tokens, a 2-layer d=32 model."""
    shape = ModelShape(hidden_size=32, num_layers=2, num_heads=2, max_positions=256)  # room for the task items
    return DemoPreset(
        corpus=CorpusSpec(max_upstream_bytes=300_000, max_downstream_bytes=300_000, heldout_fraction=0.15),
        vocab_size=512,
        base=BaseRecipe(shape=shape, seq_len=32, batch_size=4, steps=8, revision_every=4, val_tokens=512, val_every=4),
        base_name="base-tiny",
        study=StudyRecipe(steps=8, val_every=1, val_tokens=512, task_limit=12),  # 9 points a run: the forecast
        group=f"{GROUP}-tiny",
        task_items=24,
    )


@dataclass
class DemoResult:
    """What a demo produced: the study's plan and run directories, the report, findings, phase timings (s)."""

    plan: StudyPlan
    run_dirs: dict[str, Path]
    report: Path
    findings: list[Any]
    numbers: Any
    base_run: Path
    seconds: dict[str, float] = field(default_factory=dict)
    with_tasks: bool = True
    """Whether the runs evaluated the demo's downstream tasks (lm-eval installed)."""
    forecast: Any = None
    """The forecast step's ``rewarm.demo.forecast.ForecastReport``."""


def tasks_available() -> bool:
    """Whether lm-evaluation-harness with its HF backend is installed (found, not imported)."""
    from rewarm.training.requirements import LM_EVAL, installed

    return installed(LM_EVAL)


def check_demo_packages(config_path: Path, with_tasks: bool) -> None:
    """Refuse a main config that needs a package that is not installed (e.g. trainer.strategy=deepspeed without
    DeepSpeed) before the corpora and the base model are built: every study run would fail alike."""
    from rewarm.config import load
    from rewarm.training.requirements import check_packages

    cfg = load(config_path, task_overrides(with_tasks, Path("tasks")))
    check_packages([("demo", cfg)], what="the demo")


def prepare(cache: Path, preset: DemoPreset, seconds: dict[str, float], with_tasks: bool = True,
            ) -> tuple[CorpusPaths, Path, Path]:
    """Corpora, tokenizer, base model (each reused when up to date) and, ``with_tasks``, the tasks under
    ``cache``; timings into ``seconds``."""
    t = time.perf_counter()
    corpus = build_corpora(cache / "corpus", preset.corpus)
    seconds["corpora"] = time.perf_counter() - t
    t = time.perf_counter()
    train_files = sorted((corpus.root / "pile" / "train").glob("*.jsonl.zst"))  # upstream training split only
    tokenizer_dir = build_tokenizer(train_files, cache / "tokenizer", preset.vocab_size)
    seconds["tokenizer"] = time.perf_counter() - t
    t = time.perf_counter()
    base_run = build_base(cache, corpus, tokenizer_dir, preset.base, preset.base_name)
    seconds["base model"] = time.perf_counter() - t
    if with_tasks:
        t = time.perf_counter()
        build_demo_tasks(corpus, cache / "tasks", preset.task_items)
        seconds["tasks"] = time.perf_counter() - t
    return corpus, tokenizer_dir, base_run


def run_demo(config_path: Path, out: Path, cache: Path, preset: DemoPreset, *, rerun: bool = False,
             wandb_mode: str | None = None, with_tasks: bool | None = None) -> DemoResult:
    """Build (or reuse) everything, run the study, write ``<out>/report/`` with the findings appended.
    ``with_tasks``: evaluate the demo's downstream tasks (default: when lm-eval is installed)."""
    with_tasks = tasks_available() if with_tasks is None else with_tasks
    check_demo_packages(config_path, with_tasks)
    seconds: dict[str, float] = {}
    corpus, _, base_run = prepare(cache, preset, seconds, with_tasks)
    study = _with_base_shape(preset)
    earlier = revisions(base_run)[:1]  # the first kept revision (Gupta et al.: steps 10k, 27k of 143k)
    plan = plan_study(preset.base.max_lr, corpus, study, earlier_revision=earlier[0] if earlier else None)
    _reset_stale_runs(out / preset.group, _study_stamp(base_run, preset, config_path, with_tasks), rerun)
    t = time.perf_counter()
    env = [*environment(base_run, corpus, out, study, wandb_mode), *task_overrides(with_tasks, cache / "tasks"),
           *pretraining_overrides(preset.base)]
    dirs = dict(zip(plan.runs, run_study(config_path, plan, env, group=preset.group), strict=True))
    seconds["study"] = time.perf_counter() - t
    t = time.perf_counter()
    found, numbers = findings_of(plan, dirs)
    t_fc = time.perf_counter()
    forecast = run_forecast(plan, dirs, out / "report" / "figures")
    seconds["forecast"] = time.perf_counter() - t_fc
    report = write_report(out / "report", plan, dirs, found, numbers, forecast)
    seconds["report"] = time.perf_counter() - t - seconds["forecast"]
    return DemoResult(plan, dirs, report, found, numbers, base_run, seconds, with_tasks, forecast)


def _with_base_shape(preset: DemoPreset) -> StudyRecipe:
    """The study runs use the base's row length and batch size (the config file's are the full demo's)."""
    return replace(preset.study, seq_len=preset.base.seq_len, batch_size=preset.base.batch_size)


def write_report(out_dir: Path, plan: StudyPlan, dirs: dict[str, Path], found: list[Any], numbers: Any,
                 forecast: Any = None) -> Path:
    """``rewarm.study.compare`` figures + table (runs labelled by their study names), findings appended, then the
    forecast step's table and figure (its forecasts also drawn in the trade-off figure)."""
    from rewarm.demo.findings import render
    from rewarm.demo.forecast import forecast_markdown
    from rewarm.study.compare import compare_runs

    labels = {d.name: name for name, d in dirs.items()}
    extra = render(found, numbers)
    forecasts = {}
    if forecast is not None:
        figure = forecast.figure.relative_to(out_dir).as_posix() if forecast.figure else None
        extra += forecast_markdown(forecast, numbers.seed_noise, figure)
        forecasts = {dirs[name].name: sets for name, sets in forecast.curves.items()}
    return compare_runs(list(dirs.values()), out_dir, labels=labels, title="rewarm demo: the rewarm study in miniature",
                        extra_markdown=extra, forecasts=forecasts)


def _study_stamp(base_run: Path, preset: DemoPreset, config_path: Path, with_tasks: bool) -> dict[str, Any]:
    """What the finished runs depend on: runs made without the tasks are run again once lm-eval is installed."""
    base = json.loads((base_run / "rewarm_demo_stamp.json").read_text())
    stamp = {"base": base, "study": asdict(preset.study), "config": Path(config_path).read_text(),
             "task_items": preset.task_items, "tasks_version": TASKS_VERSION if with_tasks else None,
             "data_order": DATA_ORDER_VERSION,  # runs read in another data order are run again
             "pretraining": pretraining_overrides(preset.base)}
    return json.loads(json.dumps(stamp))  # as it reads back from the file (tuples become lists)


def _reset_stale_runs(group_dir: Path, stamp: dict[str, Any], rerun: bool) -> None:
    """Remove the study's earlier runs when asked to, or when they came from another base model or recipe."""
    stamp_file = group_dir / "demo_stamp.json"
    old = json.loads(stamp_file.read_text()) if stamp_file.is_file() else None
    if group_dir.exists() and (rerun or old != stamp):
        log.info("removing earlier study runs in %s (%s)", group_dir, "--rerun" if rerun else "base or recipe changed")
        shutil.rmtree(group_dir)
    group_dir.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(json.dumps(stamp, indent=1) + "\n")
