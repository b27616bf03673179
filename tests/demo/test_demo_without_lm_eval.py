"""`rewarm demo` where lm-evaluation-harness is not installed (a plain `pip install rewarm`): it says so in one line
at its start, runs its study without the downstream tasks and prints its loss table and findings, no traceback.

The child process cannot import lm_eval (tests.study.helpers.without: as when it is not installed) and runs the
demo at the tests' tiny size, reusing the session's corpora and tokenizer (and base model, when built)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from rewarm.demo.cli import DEFAULT_CONFIG
from rewarm.demo.pipeline import TASKS_NOTICE, DemoPreset
from rewarm.demo.study import MAIN
from rewarm.errors import EXIT_CONFIG
from rewarm.training.metrics import read_metrics
from tests.study.helpers import without

TINY = "import rewarm.demo.pipeline as p\np.PRESETS['quick'] = p.tiny_preset()\n"


def test_demo_runs_without_its_tasks_and_says_so_once(demo_cache: Path, small_tokenizer: Path, tiny: DemoPreset,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["demo", "--quick", "--cache", str(demo_cache), "--out", str(out), "--wandb", "disabled"]
    proc = without(["lm_eval"], argv, cwd=tmp_path, setup=TINY)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert proc.stdout.splitlines()[0] == TASKS_NOTICE and text.count(TASKS_NOTICE) == 1
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]
    assert "start loss (ppl)" in proc.stdout and "findings of the papers reproduced" in proc.stdout
    assert "(downstream tasks not evaluated: lm-eval is not installed)" in proc.stdout
    runs = sorted(p for p in (out / tiny.group).iterdir() if p.is_dir())
    assert MAIN in [p.name for p in runs] and len(runs) == 11
    for run in runs:  # the study's runs had no tasks: nothing was evaluated, nothing failed
        assert OmegaConf.load(run / "config.yaml").tasks.names == []
        assert not any(k.startswith("task/") for k in read_metrics(run / "metrics.csv")[0])
    timings = next(line for line in proc.stdout.splitlines() if line.startswith("time: "))
    assert "base model" in timings and "tasks" not in timings  # the tasks were not built either


def test_a_demo_whose_config_needs_a_missing_package_stops_before_building_anything(tmp_path: Path) -> None:
    config = tmp_path / "demo.yaml"
    OmegaConf.save(OmegaConf.merge(OmegaConf.load(DEFAULT_CONFIG), {"trainer": {"strategy": "deepspeed"}}), config)
    argv = ["demo", "--quick", "--config", str(config), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    proc = without(["deepspeed", "lm_eval"], argv, cwd=tmp_path)
    assert proc.returncode == EXIT_CONFIG, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        TASKS_NOTICE,
        "rewarm demo: the demo needs deepspeed for trainer.strategy=deepspeed, which is not installed: "
        "pip install 'rewarm[deepspeed]' (or trainer.strategy=ddp or fsdp runs without it)"]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()
