"""Run a sweep: its runs one after another, skipping finished ones and resuming an interrupted one.

Every run of a sweep called ``group`` gets, after its own overrides and the command line's:
``run.name=<name>``, ``run.out_dir=<out_dir>/<group>`` (one directory per sweep, so two sweeps cannot
mistake each other's runs for finished), ``logging.wandb.group=<group>``, ``data.cache_dir=<out_dir>/.cache``
(the validation cache shared by all runs, unless the config names one) and ``resume.mode=auto``.

A run directory with ``summary.json`` (written last by training) is finished and skipped; any other
existing run directory is resumed by the trainer's ``resume.mode=auto``. A failed run is reported by
name and the sweep goes on with the next one (unless ``stop_on_error``); at the end ``SweepFailed``
is raised if any failed. A preempted run (exit code ``PREEMPTED_EXIT_CODE``), a run killed by a signal, or
a signal received by the sweep itself (forwarded to the running training process, e.g. SLURM's SIGUSR1 /
SIGTERM) stops the sweep; started again, the sweep resumes that run. In-process, a preempted run's
``SystemExit`` ends the sweep's process with the trainer's exit code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rewarm.errors import ConfigError
from rewarm.study.keys import sanitize
from rewarm.study.spec import SweepRun, SweepSpec, expand_sweep, load_sweep, override_line, read_sweep, sweep_group

__all__ = [
    "SweepRun",
    "SweepSpec",
    "SweepFailed",
    "PlannedRun",
    "expand_sweep",
    "load_sweep",
    "read_sweep",
    "sweep_group",
    "plan_sweep",
    "run_state",
    "run_sweep",
    "override_line",
    "overrides_lines",
    "train_command",
]

log = logging.getLogger(__name__)

FINISHED_MARKER = "summary.json"
PREEMPTED = "preempted"
STATES = ("finished", "partial", "new")


class SweepFailed(RuntimeError):
    """Some runs of a sweep failed. ``failed``: (run name, reason); ``run_dirs``: all runs' directories;
    ``stopped``: the sweep stopped before its end; ``preempted``: because a run was preempted (its
    checkpoint saved: starting the sweep again resumes it)."""

    def __init__(
        self, failed: list[tuple[str, str]], run_dirs: list[Path], stopped: bool = False, preempted: bool = False
    ) -> None:
        self.failed, self.run_dirs, self.stopped, self.preempted = failed, run_dirs, stopped, preempted
        what = "; ".join(f"{name}: {why}" for name, why in failed)
        super().__init__(
            f"{len(failed)} of {len(run_dirs)} runs failed ({what})" + (" - sweep stopped" if stopped else "")
        )


@dataclass(frozen=True)
class PlannedRun:
    """A run as it will be launched: all its overrides, its run directory and its state before the sweep."""

    name: str
    overrides: list[str]
    run_dir: Path
    state: str


def run_state(run_dir: Path) -> str:
    """``finished`` (summary.json present: skip), ``partial`` (resume) or ``new`` (start)."""
    if (run_dir / FINISHED_MARKER).is_file():
        return "finished"
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return "partial"
    return "new"


def plan_sweep(
    config_path: str | Path, runs: Sequence[SweepRun], *, group: str, extra_overrides: Sequence[str] = ()
) -> list[PlannedRun]:
    """Validate every run's config (so that a typo fails before hours of training) and decide its fate.

    Raises ConfigError with the run's name in front of the key, or with one message when runs need an optional
    package that is not installed (they would fail after their start-up, all alike: refused before the first)."""
    from rewarm.config import load
    from rewarm.training.requirements import check_packages

    group = sanitize(group)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError("runs", f"run names must be unique (one directory each); repeated: {', '.join(dup)}")
    planned, configs = [], []
    for run in runs:
        try:
            cfg = load(config_path, [*run.overrides, *extra_overrides])
            out_dir = Path(cfg.run.out_dir)
            cache = cfg.data.cache_dir or str(out_dir / ".cache")
            managed = [
                f"run.name={run.name}",
                f"run.out_dir={out_dir / group}",
                f"logging.wandb.group={group}",
                f"data.cache_dir={cache}",
                "resume.mode=auto",
            ]
            overrides = [*run.overrides, *extra_overrides, *managed]
            cfg = load(config_path, overrides)
        except ConfigError as e:
            raise ConfigError(f"[{run.name}] {e.key}", e.message) from None
        planned.append(PlannedRun(run.name, overrides, cfg.run_dir, run_state(cfg.run_dir)))
        configs.append((run.name, cfg))
    check_packages([(name, cfg) for (name, cfg), p in zip(configs, planned, strict=True) if p.state != "finished"],
                   what="this sweep")  # a finished run is skipped: it needs nothing
    _warn_overridden(runs, extra_overrides)
    return planned


def _warn_overridden(runs: Sequence[SweepRun], extra: Sequence[str]) -> None:
    extra_keys = {o.partition("=")[0] for o in extra}
    swept = {o.partition("=")[0] for r in runs for o in r.overrides}
    for key in sorted(extra_keys & swept):
        log.warning("command-line override %s replaces the sweep's value of it in every run", key)


def run_sweep(
    config_path: str | Path,
    runs: list[SweepRun],
    *,
    group: str,
    extra_overrides: Sequence[str] = (),
    in_process: bool = False,
    stop_on_error: bool = False,
) -> list[Path]:
    """Run the sweep's runs in order; return every run's directory (finished ones included).

    Raises ConfigError (before anything runs) on an invalid run, SweepFailed after the sweep if a run failed."""
    group = sanitize(group)
    plan = plan_sweep(config_path, runs, group=group, extra_overrides=extra_overrides)
    dirs = [p.run_dir for p in plan]
    if plan:
        write_manifest(plan, dirs[0].parent / "sweep.json", config_path, group)
    failed: list[tuple[str, str]] = []
    for i, p in enumerate(plan, 1):
        if p.state == "finished":
            log.info("[%d/%d] %s: finished, skipped (%s)", i, len(plan), p.name, p.run_dir / FINISHED_MARKER)
            continue
        log.info("[%d/%d] %s: %s", i, len(plan), p.name, "resuming" if p.state == "partial" else "starting")
        error, stop = (_run_in_process if in_process else _run_subprocess)(config_path, p)
        if error is None and not (p.run_dir / FINISHED_MARKER).is_file():
            error, stop = f"ended without writing {FINISHED_MARKER} (interrupted?)", True
        if error is not None:
            log.error("[%d/%d] %s failed: %s", i, len(plan), p.name, error)
            failed.append((p.name, error))
            if stop or stop_on_error:
                raise SweepFailed(failed, dirs, stopped=True, preempted=error.startswith(PREEMPTED))
    if failed:
        raise SweepFailed(failed, dirs)
    return dirs


def train_command(config_path: str | Path, overrides: Sequence[str], stop_at: int | None = None) -> list[str]:
    """The command line of one run, as the subprocess mode launches it (``stop_at``: ``--stop-at-step``)."""
    stop = ["--stop-at-step", str(stop_at)] if stop_at is not None else []
    return [sys.executable, "-m", "rewarm", "train", str(config_path), *overrides, *stop]


def _run_subprocess(config_path: str | Path, p: PlannedRun, stop_at: int | None = None) -> tuple[str | None, bool]:
    """(error or None, whether the sweep must stop). Signals to the sweep are forwarded to the run."""
    proc = subprocess.Popen(train_command(config_path, p.overrides, stop_at))
    with _forward_signals(proc) as received:
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # the terminal sent SIGINT to the run too: let it save its checkpoint
            _wait_or_kill(proc, timeout_s=300)
            raise
    from rewarm.checkpoints.store import PREEMPTED_EXIT_CODE  # light module: the constant only

    if received:  # the job is going away (e.g. SLURM's warning): stop, whatever the run made of it
        return f"{PREEMPTED}: the sweep received {received[0].name} and passed it on (run's exit code {code})", True
    if code == PREEMPTED_EXIT_CODE:
        return f"{PREEMPTED} (exit code {code}): its checkpoint is saved; run the sweep again to resume", True
    if code < 0:
        return f"killed by {signal.Signals(-code).name}", True
    return (None, False) if code == 0 else (f"exit code {code}", False)


def _run_in_process(config_path: str | Path, p: PlannedRun, stop_at: int | None = None) -> tuple[str | None, bool]:
    from rewarm.config import load
    from rewarm.training.run import run  # lazy: imports Lightning

    try:
        run(load(config_path, p.overrides), stop_at_step=stop_at)
    except Exception as e:  # one failed run must not lose the others; the traceback goes to the log
        log.exception("run %s raised", p.name)
        return f"{type(e).__name__}: {e}", False
    finally:
        _finish_wandb()
    return None, False


def _finish_wandb() -> None:
    """End the process's wandb run, else the next in-process run's WandbLogger would log into it."""
    if "wandb" in sys.modules:  # Lightning (and the guard's import of it) only when wandb was used
        from rewarm.faults.wandb_guard import finish_wandb

        finish_wandb()


@contextlib.contextmanager
def _forward_signals(proc: subprocess.Popen) -> Iterator[list[signal.Signals]]:
    """While a run is going, pass SIGTERM / SIGUSR1 on to it and remember them (so the sweep stops)."""
    received: list[signal.Signals] = []
    wanted = [s for s in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None]
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _wait_or_kill(proc: subprocess.Popen, timeout_s: float) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()


def write_manifest(plan: Sequence[PlannedRun], path: Path, config_path: str | Path, group: str) -> None:
    """``<out_dir>/<group>/sweep.json``: the config, and each run's name, directory and overrides."""
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = [{"name": p.name, "run_dir": str(p.run_dir), "overrides": p.overrides} for p in plan]
    doc = {"group": group, "config": str(config_path), "runs": runs}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def overrides_lines(plan: Sequence[PlannedRun], pending_only: bool = False) -> list[str]:
    """One shell-quoted line of ``rewarm train`` overrides per run: the overrides file of a SLURM job array
    (task i runs line i). ``pending_only`` leaves out finished runs."""
    return [override_line(p.overrides) for p in plan if not (pending_only and p.state == "finished")]


def format_plan(plan: Sequence[PlannedRun], config_path: str | Path) -> str:
    """Human-readable plan (``rewarm sweep --dry-run``): state, name, directory, then the command's overrides."""
    lines = []
    for i, p in enumerate(plan, 1):
        lines.append(f"[{i}/{len(plan)}] {p.name}  ({p.state}: {_action(p.state)})  {p.run_dir}")
        lines.append(f"    rewarm train {config_path} {override_line(p.overrides)}")
    return "\n".join(lines)


def _action(state: str) -> str:
    return {"finished": "skip", "partial": "resume", "new": "start"}[state]
