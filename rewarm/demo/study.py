"""The papers' study in miniature: continued pre-training runs of the demo base model, as one sweep.

From the tiny base (pre-trained on upstream with peak LR P, ending at 0.1 P), on downstream:

- ``constant``: constant LR 0.1 P, the base's final LR (Gupta et al.'s 3e-5 baseline);
- ``rewarm-0.5x``, ``rewarm-1x``, ``rewarm-2x``: linear warmup over 1 % then cosine to 0.1 x max, max = 0.5 / 1 / 2 P;
- ``warmup-0``: ``rewarm-1x`` without warmup;
- ``replay-5pct``: ``rewarm-1x`` with 5 % of the rows from upstream (Ibrahim et al.);
- ``scratch``: ``rewarm-1x``'s schedule from fresh weights of the same architecture;
- ``upstream-rewarm``: ``rewarm-1x`` on the upstream data itself;
- ``rewarm-1x-seed<k>``: ``rewarm-1x`` with another seed (data order), to measure the noise;
- ``rewarm-1x-from-step<N>``: ``rewarm-1x`` from an earlier revision of the base (Gupta et al. also continue
  Pythia from steps 10k and 27k), loaded as ``model.revision``.
- ``wsd``: ``rewarm-1x``'s max LR as warmup-stable-decay (20 % cooldown, Hägele et al.) with an EMA of the
  weights (``averaging.ema_decay``), compared at the last evaluation before the cooldown.

Every run also evaluates the demo's two lm-eval tasks (``rewarm.demo.tasks``) at step 0, every
``tasks.every_steps`` and at the end, when lm-eval (the ``eval`` extra) is installed.

The main run's settings are ``configs/demo.yaml``; every run overrides the schedule completely, and the
environment (cache paths, run length in ``--quick``) comes as the sweep's extra overrides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewarm.demo.corpus import CorpusPaths

log = logging.getLogger(__name__)

MAIN = "rewarm-1x"
GROUP = "study"
WSD_COOLDOWN = 0.2
WSD_EMA_DECAY = 0.9
"""The wsd run's EMA decay per step (halflife ~6.6 steps)."""


@dataclass(frozen=True)
class StudyRecipe:
    """Sizes of the study runs; None keeps the value of the config file."""

    steps: int | None = None
    val_every: int | None = None
    val_tokens: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    """Rows per optimizer step (micro batch; no accumulation)."""
    lr_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    warmup_fraction: float = 0.01
    replay_fraction: float = 0.05
    noise_seed: int = 1
    task_every: int | None = None
    """tasks.every_steps of the runs (None: the config's)."""
    task_limit: int | None = None
    """tasks.limit of the runs (None: the config's)."""


@dataclass(frozen=True)
class StudyPlan:
    """The runs (name -> overrides) and which run plays which part in the findings."""

    runs: dict[str, list[str]]
    lr_runs: list[tuple[float, str]]
    constant: str = "constant"
    main: str = MAIN
    no_warmup: str = "warmup-0"
    replay: str = "replay-5pct"
    scratch: str = "scratch"
    upstream: str = "upstream-rewarm"
    seed_twin: str = f"{MAIN}-seed1"
    earlier: str | None = None
    """The run from an earlier revision of the base (None: the base kept none)."""
    earlier_revision: str | None = None
    wsd: str | None = "wsd"
    """The WSD run with averaging (None: the study has none)."""

    @property
    def rewarmed_downstream(self) -> list[str]:
        """Rewarmed from the base, on downstream only (no replay): the runs the constant LR is compared with."""
        return [r for _, r in self.lr_runs] + [self.no_warmup, self.seed_twin]

    @property
    def rewarmed(self) -> list[str]:
        """Every run that rewarms the base model's LR on downstream (all but constant, scratch and upstream)."""
        return [*self.rewarmed_downstream, self.replay]


def cosine(max_lr: float, warmup_fraction: float) -> list[str]:
    """Overrides of a rewarm schedule: linear warmup, cosine to 0.1 x max (Gupta et al.)."""
    return ["schedule.name=cosine", f"schedule.max_lr={max_lr:.6g}", f"schedule.min_lr={0.1 * max_lr:.6g}",
            f"schedule.warmup_fraction={warmup_fraction:g}"]


def wsd_averaged(max_lr: float, warmup_fraction: float) -> list[str]:
    """Overrides of the WSD run: stable at ``max_lr``, a ``WSD_COOLDOWN`` cooldown to 0.1 x max, an EMA of the
    weights (``rewarm.averaging``: evaluated beside the raw weights at every validation)."""
    return ["schedule.name=wsd", f"schedule.max_lr={max_lr:.6g}", f"schedule.min_lr={0.1 * max_lr:.6g}",
            f"schedule.warmup_fraction={warmup_fraction:g}", f"schedule.cooldown_fraction={WSD_COOLDOWN:g}",
            f"averaging.ema_decay={WSD_EMA_DECAY:g}"]


def upstream_source(corpus: CorpusPaths, weight: float) -> list[str]:
    """Overrides adding the upstream training split as source ``pile`` with ``weight``."""
    return ["data.train.pile.preset=pile", f"data.train.pile.root={corpus.root / 'pile'}", f"data.train.pile.weight={weight:g}"]


def plan_study(base_peak_lr: float, corpus: CorpusPaths, recipe: StudyRecipe = StudyRecipe(),
               earlier_revision: str | None = None) -> StudyPlan:
    """Name and override every run of the study; the base's peak LR P sets all learning rates.
    ``earlier_revision`` (e.g. ``step150``) adds the main run from that revision of the base."""
    main = cosine(base_peak_lr, recipe.warmup_fraction)
    r, twin = recipe.replay_fraction, f"{MAIN}-seed{recipe.noise_seed}"
    runs: dict[str, list[str]] = {MAIN: main, twin: [*main, f"run.seed={recipe.noise_seed}"]}  # the noise first
    runs["constant"] = ["schedule.name=constant", f"schedule.max_lr={0.1 * base_peak_lr:.6g}",
                        f"schedule.min_lr={0.1 * base_peak_lr:.6g}", "schedule.warmup_fraction=0"]
    lr_runs = []
    for factor in recipe.lr_factors:
        name = f"rewarm-{factor:g}x"
        runs.setdefault(name, cosine(factor * base_peak_lr, recipe.warmup_fraction))
        lr_runs.append((factor * base_peak_lr, name))
    if MAIN not in [name for _, name in lr_runs]:
        raise ValueError(f"lr_factors must include 1 (the main run {MAIN}), got {recipe.lr_factors}")
    runs["warmup-0"] = cosine(base_peak_lr, 0.0)
    runs["replay-5pct"] = [*main, *upstream_source(corpus, r), f"data.train.slimpajama.weight={1 - r:g}"]
    runs["upstream-rewarm"] = [*main, *upstream_source(corpus, 1.0), "data.train.slimpajama.weight=0"]
    runs["scratch"] = [*main, "model.init=scratch"]
    earlier = None
    if earlier_revision is not None:
        earlier = f"{MAIN}-from-{earlier_revision}"
        runs[earlier] = [*main, f"model.revision={earlier_revision}"]
    runs["wsd"] = wsd_averaged(base_peak_lr, recipe.warmup_fraction)
    return StudyPlan(runs, lr_runs, seed_twin=twin, earlier=earlier, earlier_revision=earlier_revision)


def environment(base_run: Path, corpus: CorpusPaths, out_dir: Path, recipe: StudyRecipe, wandb_mode: str | None,
                ) -> list[str]:
    """Overrides every run shares: where the base model and the corpora are, where runs go, the run length (the
    tasks: ``task_overrides``)."""
    out = [
        f"model.name_or_path={base_run / 'hf'}",
        f"data.train.slimpajama.root={corpus.root / 'slimpajama'}",
        f"data.val.pile.root={corpus.root / 'pile'}",
        f"data.val.slimpajama.root={corpus.root / 'slimpajama'}",
        f"run.out_dir={out_dir}",
    ]
    if recipe.steps is not None:
        out.append(f"trainer.max_steps={recipe.steps}")
    if recipe.val_every is not None:
        out.append(f"trainer.val_every_steps={recipe.val_every}")
    if recipe.seq_len is not None:
        out.append(f"data.seq_len={recipe.seq_len}")
    if recipe.batch_size is not None:
        out.append(f"trainer.micro_batch_size={recipe.batch_size}")
    if recipe.val_tokens is not None:
        out += [f"data.val.pile.max_tokens={recipe.val_tokens}", f"data.val.slimpajama.max_tokens={recipe.val_tokens}"]
    if wandb_mode is not None:
        out.append(f"logging.wandb.mode={wandb_mode}")
    if recipe.task_every is not None:
        out.append(f"tasks.every_steps={recipe.task_every}")
    if recipe.task_limit is not None:
        out.append(f"tasks.limit={recipe.task_limit}")
    return out


def task_overrides(with_tasks: bool, task_dir: Path) -> list[str]:
    """The runs' ``tasks`` overrides: the demo's tasks in ``task_dir``, or no tasks at all (no lm-eval)."""
    return [f"tasks.include_paths=[{task_dir}]"] if with_tasks else ["tasks.names=[]", "tasks.include_paths=[]"]


def run_study(config_path: Path, plan: StudyPlan, env: list[str], group: str = GROUP) -> list[Path]:
    """Run the study's runs in this process, one after another (finished ones are skipped); their directories."""
    from rewarm.study.sweep import SweepRun, run_sweep

    runs = [SweepRun(name, overrides) for name, overrides in plan.runs.items()]
    return run_sweep(config_path, runs, group=group, extra_overrides=env, in_process=True)


def findings_of(plan: StudyPlan, run_dirs: dict[str, Path]) -> tuple[list[Any], Any]:
    """The findings, computed from the runs' metrics.csv (see rewarm.demo.findings): six, a seventh when the
    study has a run from an earlier revision, an eighth when it has the WSD run with averaging."""
    from rewarm.demo import findings as F

    curves = {name: F.read_curves(d) for name, d in run_dirs.items()}
    numbers = F.StudyNumbers(curves, upstream="pile", downstream="slimpajama", seed_pair=(plan.main, plan.seed_twin))
    if numbers.seed_noise == 0:
        numbers.notes.append(f"the two seeds ended with identical losses (they read the same data), so the noise "
                             f"was not measured: the floor {F.MIN_NOISE} nats/token is used")
    if not F.finite(numbers):
        numbers.notes.append("a run ended with a non-finite loss (diverged); comparisons involving it are void")
    found = [
        F.higher_lr(numbers, plan.lr_runs),
        F.constant_lr(numbers, plan.constant, plan.rewarmed_downstream, plan.main),
        F.replay(numbers, plan.replay, plan.main),
        F.beats_scratch(numbers, plan.scratch, plan.rewarmed),
        F.same_data(numbers, plan.upstream),
        F.warmup(numbers, plan.no_warmup, plan.main),
    ]
    if plan.earlier is not None:
        found.append(F.earlier_checkpoint(numbers, plan.earlier, plan.main, plan.earlier_revision or "?"))
    if plan.wsd is not None:
        found.append(F.ema_before_cooldown(numbers, F.read_cooldown(run_dirs[plan.wsd], numbers.downstream), plan.wsd))
    return found, numbers
