"""``rewarm eval --tasks`` equals ``lm_eval.simple_evaluate`` on the same HF directory, tasks and settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewarm.cli import main
from rewarm.tasks.results import task_values
from tests.conftest import tiny_overrides
from tests.tasks.conftest import MC, PPL, task_overrides


def rewarm_eval(capsys, config: Path, overrides: list[str], *args: str) -> dict:
    capsys.readouterr()
    assert main(["eval", str(config), *overrides, *args]) == 0
    return json.loads(capsys.readouterr().out)


def simple_evaluate(model_dir: Path, task_dir: Path, tasks: list[str], limit: int | None) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(model_dir), "device": "cpu"},
                                  tasks=tasks, task_manager=TaskManager(include_path=str(task_dir), include_defaults=False), batch_size=4,
                                  limit=limit, bootstrap_iters=50, log_samples=False)
    return task_values(out)


@pytest.mark.parametrize("limit", [None, 7])
def test_rewarm_eval_tasks_equal_simple_evaluate(tiny_world, task_dir, empty_config, tmp_path, capsys, limit):
    overrides = tiny_overrides(tiny_world, tmp_path) + task_overrides(task_dir, "nonexistent_is_overridden")
    args = ["--checkpoint", str(tiny_world["model"]), "--tasks", f"{MC},{PPL}"]
    got = rewarm_eval(capsys, empty_config, overrides, *args, *(["--limit", str(limit)] if limit else []))
    assert set(got) == {"pile", "slimpajama", "tasks"}  # today's sets, plus the tasks
    want = simple_evaluate(tiny_world["model"], task_dir, [MC, PPL], limit)
    assert got["tasks"] == want
    assert set(want[MC]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert set(want[PPL]) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}  # no closed-form stderr
    assert 0.0 <= want[MC]["acc"] <= 1.0 and want[PPL]["byte_perplexity"] > 1.0


def test_gupta_config_names_pythia_suite_known_to_lm_eval() -> None:
    """The Gupta config's task list: Pythia's evaluation suite, every name in lm-eval's registry (no data loaded)."""
    from rewarm.config import load
    from rewarm.tasks.harness import check_names, task_manager

    cfg = load(Path(__file__).parents[2] / "configs" / "pythia-410m-pile-to-slimpajama.yaml")
    assert cfg.tasks.names == ["lambada_openai", "piqa", "winogrande", "arc_easy", "arc_challenge", "sciq", "logiqa"]
    check_names(task_manager(cfg.tasks.names, cfg.tasks.include_paths), cfg.tasks.names)


def test_rewarm_eval_revision_of_a_model_directory(tiny_world, task_dir, empty_config, tmp_path, capsys) -> None:
    """``--checkpoint DIR --revision REV`` loads DIR/REV (the layout of a hub id's revisions kept locally)."""
    import shutil

    revs = tmp_path / "revs"
    shutil.copytree(tiny_world["model"], revs / "step5")
    overrides = tiny_overrides(tiny_world, tmp_path) + task_overrides(task_dir, MC)
    got = rewarm_eval(capsys, empty_config, overrides, "--checkpoint", str(revs), "--revision", "step5",
                      "--limit", "5")
    assert got["tasks"] == simple_evaluate(revs / "step5", task_dir, [MC], 5)
