"""Quiet logs: a tiny ``rewarm train`` with tasks and a ``rewarm eval --tasks``, each a subprocess writing into
pipes (not a terminal, as under SLURM or CI), with an ``srun`` on PATH (as on a SLURM login node) and wandb's
own output on. Every line they write is rewarm's, but for ``ALLOWED``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from tests.tasks.conftest import GROUP, MC, PPL, task_overrides

REPO = Path(__file__).resolve().parents[2]
OURS = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) rewarm(\.\w+)*: ")
T = r"\d\d:\d\d:\d\d"

# Third-party lines that may show, each with why: they are about this run
ALLOWED = {
    # lm-eval on the test's own task YAML: tiny_ppl lists metrics without `aggregation` / `higher_is_better`; a
    # user's task YAML that does so gets the same warning, and should
    rf"{T} WARNING lm_eval\.api\.task: \[Task: {PPL}\] metric \w+ is defined, but (aggregation|higher_is_better) "
    r"is not": "task YAML",
    # lm-eval on the test's own group YAML: tiny_suite aggregates `acc` over a perplexity task that has none
    rf"{T} WARNING lm_eval\.api\.group: Group '{GROUP}': metric 'acc,none' is missing in 1/2 tasks": "group YAML",
    # Lightning's device line (bare: Lightning's own handler when it is imported first; else through ours): the one
    # line that says which device the run uses
    rf"({T} INFO lightning\.pytorch\.utilities\.rank_zero: )?GPU available: (True|False)": "device",
    # wandb, asked for by the run's config (offline): where the run's data is and how to sync it. Its banner and
    # end-of-run panels are gone (WANDB_QUIET off a terminal)
    r"wandb: (W&B syncing is set to `offline`|Run data is saved locally in |View this run in the terminal with "
    r"`wandb leet`)": "wandb offline",
}


def foreign_lines(text: str, also_ours: tuple[str, ...] = ()) -> list[str]:
    """The lines of ``text`` that are neither rewarm's (log format, ``also_ours``) nor allowed."""
    allowed = [re.compile(p) for p in (*ALLOWED, *also_ours)]
    return [line for line in text.splitlines()
            if line.strip() and not OURS.match(line) and not any(p.match(line) for p in allowed)]


def rewarm(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """``rewarm ARGS`` with stdout and stderr pipes, ``srun`` on PATH, wandb not silenced, a cold datasets cache
    (lm-eval's task data is prepared afresh, with its bars)."""
    fake_bin = tmp / "bin"
    fake_bin.mkdir(exist_ok=True)
    srun = fake_bin / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    # WANDB_SERVICE: an earlier in-process test's wandb-core (the run must start and report its own, as a user's does)
    env = {k: v for k, v in os.environ.items()
           if k not in ("WANDB_SILENT", "WANDB_QUIET", "SLURM_JOB_ID", "WANDB_SERVICE")}
    env.update(PATH=f"{fake_bin}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO),
               HF_DATASETS_CACHE=str(tmp / "hf-datasets"), WANDB_MODE="offline")
    res = subprocess.run([sys.executable, "-m", "rewarm", *args], cwd=tmp, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.fixture(scope="module")
def train(tiny_world, task_dir, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("quiet")
    (tmp / "empty.yaml").write_text("{}\n")
    overrides = tiny_overrides(tiny_world, tmp / "runs", logging__progress="auto", trainer__max_steps=4,
                               trainer__val_every_steps=2)
    overrides += task_overrides(task_dir, GROUP, tasks__every_steps=2, tasks__limit=5)
    res = rewarm(["train", "empty.yaml", *overrides], tmp)
    return {"tmp": tmp, "overrides": overrides, "res": res, "run": tmp / "runs" / "t"}


def test_train_log_is_rewarms(train) -> None:
    res = train["res"]
    foreign = foreign_lines(res.stdout + res.stderr, also_ours=("run directory: ",))
    assert not foreign, "\n".join(foreign)
    assert res.stdout.splitlines() == [f"run directory: {train['run']}"]
    # the run did what the log is about: tasks evaluated, our progress line written
    assert "INFO rewarm.tasks.callback: task evaluation at step 0" in res.stderr
    assert re.search(r"INFO rewarm\.training\.callbacks: step 4/4 ", res.stderr)


def test_lm_eval_bars_off_only_off_a_terminal(monkeypatch, capfd) -> None:
    """The request-building bar is disabled, the bootstrap's bar and print swallowed, its value unchanged; all put
    back after; in a terminal nothing is touched."""
    import lm_eval.api.metrics as metrics
    import lm_eval.api.task as task

    from rewarm.tasks import bars

    monkeypatch.setenv("DISABLE_MULTIPROC", "1")
    xs = [-0.5, -1.0, -2.0, -0.1, -3.0, -0.7]
    want = metrics.bootstrap_stderr(metrics.perplexity, xs, iters=200)
    assert "bootstrapping for stddev" in capfd.readouterr().out  # lm-eval's print, unpatched
    before = task.tqdm, metrics._bootstrap_internal_no_mp
    monkeypatch.setattr(bars, "stderr_is_terminal", lambda: False)
    with bars.no_lm_eval_bars():
        assert task.tqdm(range(3)).disable
        assert metrics.bootstrap_stderr(metrics.perplexity, xs, iters=200) == want
    assert capfd.readouterr() == ("", "")
    assert (task.tqdm, metrics._bootstrap_internal_no_mp) == before
    monkeypatch.setattr(bars, "stderr_is_terminal", lambda: True)
    with bars.no_lm_eval_bars():
        assert (task.tqdm, metrics._bootstrap_internal_no_mp) == before


def test_dataset_bars_off_only_off_a_terminal(monkeypatch) -> None:
    import datasets

    from rewarm.tasks import bars

    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)
    datasets.enable_progress_bars()
    monkeypatch.setattr(bars, "stderr_is_terminal", lambda: False)
    with bars.no_dataset_bars():
        assert not datasets.is_progress_bar_enabled()
    assert datasets.is_progress_bar_enabled()
    monkeypatch.setattr(bars, "stderr_is_terminal", lambda: True)
    with bars.no_dataset_bars():
        assert datasets.is_progress_bar_enabled()


def test_eval_tasks_log_is_rewarms(train, task_dir) -> None:
    res = rewarm(["eval", "empty.yaml", *train["overrides"], "--checkpoint", str(train["run"] / "hf"),
                  "--tasks", f"{MC},{PPL}", "--limit", "5"], train["tmp"])
    foreign = foreign_lines(res.stderr)
    assert not foreign, "\n".join(foreign)
    assert set(json.loads(res.stdout)["tasks"]) == {MC, PPL}  # stdout: the JSON alone
