"""Refusals: an unknown task (with close names), a missing include_paths directory (``rewarm check``, exit 2,
without importing lm-eval or Lightning), the ``eval`` extra missing, task data that cannot be fetched; and a
non-finite metric, logged empty with a warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rewarm.cli import main
from tests.conftest import tiny_overrides
from tests.in_process import run_cli
from tests.tasks.conftest import MC, PPL, task_overrides

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], env: dict[str, str] | None = None, prelude: str = "") -> subprocess.CompletedProcess:
    import os

    code = f"import sys; {prelude}from rewarm.cli import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=600)


def test_unknown_task_refused_before_training_with_close_names(tiny_world, task_dir, empty_config, tmp_path,
                                                               capsys) -> None:
    overrides = tiny_overrides(tiny_world, tmp_path) + task_overrides(task_dir, "tiny_mcc")
    assert main(["train", str(empty_config), *overrides]) == 2
    err = capsys.readouterr().err
    assert "tasks.names: unknown lm-eval task or group 'tiny_mcc'; did you mean tiny_mc" in err, err
    assert not (tmp_path / "t" / "metrics.csv").exists()  # refused before the model, the loggers, the first step


def test_check_refuses_missing_include_path_fast_imports(tiny_world, task_dir, empty_config, tmp_path) -> None:
    overrides = tiny_overrides(tiny_world, tmp_path) + task_overrides(task_dir, MC)
    prelude = "import atexit; atexit.register(lambda: print('HEAVY', [m for m in ('lightning', 'lm_eval', " \
              "'datasets', 'torch') if m in sys.modules]));"
    ok = _run(["check", str(empty_config), *overrides], prelude=prelude)
    assert ok.returncode == 0, ok.stderr
    assert f"tasks          {MC}: at step 0, at the end" in ok.stdout and "HEAVY []" in ok.stdout
    bad = _run(["check", str(empty_config), *overrides, f"tasks.include_paths=[{tmp_path / 'nope'}]"], prelude=prelude)
    assert bad.returncode == 2
    assert "tasks.include_paths[0]: task directory not found" in bad.stderr and "HEAVY []" in bad.stdout


def test_missing_eval_extra_names_the_install(tiny_world, task_dir, empty_config, tmp_path, monkeypatch) -> None:
    overrides = tiny_overrides(tiny_world, tmp_path) + task_overrides(task_dir, MC)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed: `import lm_eval` fails
    out = run_cli(["eval", str(empty_config), *overrides, "--checkpoint", str(tiny_world["model"])])
    assert out.returncode == 2
    assert "pip install 'rewarm[eval]'" in out.stderr, out.stderr


def test_unreachable_task_data_named_with_offline_hint(tiny_world, empty_config, tmp_path) -> None:
    overrides = tiny_overrides(tiny_world, tmp_path)
    out = _run(["eval", str(empty_config), *overrides, "--checkpoint", str(tiny_world["model"]), "--tasks",
                "arc_easy"], env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2, out.stderr[-2000:]
    err = out.stderr
    assert "the data of lm-eval task 'arc_easy' cannot be fetched" in err, err[-2000:]
    assert "HF_DATASETS_OFFLINE=1" in err and "tasks.include_paths" in err


@pytest.fixture()
def nan_model(tiny_world, tmp_path) -> Path:
    """The tiny model with one output weight NaN: every log-likelihood is NaN (a real non-finite metric)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "nan_model"
    shutil.copytree(tiny_world["model"], out)
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        model.get_output_embeddings().weight[0, 0] = float("nan")
    model.save_pretrained(out)
    return out


def test_non_finite_metric_logged_empty_with_warning(tiny_world, task_dir, empty_config, tmp_path, nan_model,
                                                     capsys, caplog) -> None:
    from rewarm.tasks.results import row_metrics

    overrides = tiny_overrides(tiny_world, tmp_path) + task_overrides(task_dir, f"{MC},{PPL}")
    capsys.readouterr()
    assert main(["eval", str(empty_config), *overrides, "--checkpoint", str(nan_model)]) == 0
    tasks = json.loads(capsys.readouterr().out)["tasks"]
    assert tasks[PPL]["word_perplexity"] is None and tasks[PPL]["bits_per_byte"] is None
    assert f"task {PPL}: metric word_perplexity is nan: logged empty" in caplog.text
    row = row_metrics(tasks)
    assert f"task/{PPL}/word_perplexity" not in row and f"task/{MC}/acc" in row  # an empty cell; the rest logged
