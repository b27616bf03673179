"""Running sweeps: placement and overrides of each run, skip-finished / resume decisions, failures,
signal forwarding, the `rewarm sweep` command. Training runs for real where a run is started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rewarm.errors import ConfigError
from rewarm.study import sweep
from rewarm.study.cli import sweep_main
from rewarm.study.sweep import SweepFailed, SweepRun, expand_sweep, plan_sweep, run_state, run_sweep
from tests.study.helpers import BASE, write_run


def write_config(path: Path, out_dir: Path, extra: list[str] = ()) -> Path:
    """A run config file (YAML) with the helpers' data layout; its data files do not exist."""
    OmegaConf.save(OmegaConf.from_dotlist([*BASE, f"run.out_dir={out_dir}", *extra]), path)
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "run.yaml", tmp_path / "runs")


def test_run_state_finished_partial_new(tmp_path: Path) -> None:
    assert run_state(tmp_path / "absent") == "new"
    (tmp_path / "empty").mkdir()
    assert run_state(tmp_path / "empty") == "new"
    partial = tmp_path / "partial"
    (partial / "checkpoints").mkdir(parents=True)
    assert run_state(partial) == "partial"
    done = write_run(tmp_path, "done")
    assert run_state(done) == "finished"
    (done / "summary.json").unlink()
    assert run_state(done) == "partial"


def test_plan_places_runs_under_the_sweep_and_adds_the_managed_overrides(tmp_path: Path, config: Path) -> None:
    runs = expand_sweep({"grid": {"schedule.max_lr": [1e-4, 2e-4]}})
    plan = plan_sweep(config, runs, group="lr sweep", extra_overrides=["trainer.max_steps=10"])
    out = tmp_path / "runs"
    assert [p.run_dir for p in plan] == [out / "lr-sweep" / "max_lr-1e-4", out / "lr-sweep" / "max_lr-2e-4"]
    assert plan[0].overrides == [
        "schedule.max_lr=1e-4",
        "trainer.max_steps=10",
        "run.name=max_lr-1e-4",
        f"run.out_dir={out / 'lr-sweep'}",
        "logging.wandb.group=lr-sweep",
        f"data.cache_dir={out / '.cache'}",
        "resume.mode=auto",
    ]
    assert [p.state for p in plan] == ["new", "new"]


def test_plan_keeps_a_configured_cache_and_lets_the_command_line_win(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "runs", ["data.cache_dir=/shared/cache"])
    plan = plan_sweep(
        config, [SweepRun("a", ["trainer.max_steps=5"])], group="g", extra_overrides=["trainer.max_steps=7"]
    )
    from rewarm.config import load

    cfg = load(config, plan[0].overrides)
    assert (cfg.data.cache_dir, cfg.trainer.max_steps, cfg.resume.mode) == ("/shared/cache", 7, "auto")
    assert (cfg.run.name, cfg.logging.wandb.group) == ("a", "g")


def test_plan_refuses_an_invalid_run_naming_it(config: Path) -> None:
    with pytest.raises(ConfigError) as info:
        plan_sweep(config, [SweepRun("ok", []), SweepRun("bad", ["schedule.max_lrr=1"])], group="g")
    assert info.value.key.startswith("[bad] schedule.max_lrr")
    with pytest.raises(ConfigError, match="repeated: a"):
        plan_sweep(config, [SweepRun("a"), SweepRun("b"), SweepRun("a", ["run.seed=1"])], group="g")


def test_finished_runs_are_skipped_and_the_others_resumed_or_started(tmp_path: Path, config: Path) -> None:
    group_dir = tmp_path / "runs" / "g"
    write_run(group_dir, "done")
    write_run(group_dir, "half", finished=False)
    plan = plan_sweep(config, [SweepRun("done"), SweepRun("half"), SweepRun("fresh")], group="g")
    assert [p.state for p in plan] == ["finished", "partial", "new"]
    assert "(finished: skip)" in sweep.format_plan(plan, config)
    assert "(partial: resume)" in sweep.format_plan(plan, config)


def test_overrides_lines_round_trip_through_the_shell(tmp_path: Path, config: Path) -> None:
    import shlex

    write_run(tmp_path / "runs" / "g", "done")
    runs = [SweepRun("done"), SweepRun("odd", ["logging.wandb.tags=[a b, c]"])]
    plan = plan_sweep(config, runs, group="g")
    lines = sweep.overrides_lines(plan)
    assert [shlex.split(line) for line in lines] == [p.overrides for p in plan]
    assert sweep.overrides_lines(plan, pending_only=True) == lines[1:]


def test_a_sweep_of_finished_runs_runs_nothing(tmp_path: Path, config: Path) -> None:
    group_dir = tmp_path / "runs" / "g"
    dirs = [write_run(group_dir, n) for n in ("a", "b")]
    before = [(d / "metrics.csv").read_bytes() for d in dirs]
    # the data files do not exist: starting any run would fail, so a normal return means both were skipped
    assert run_sweep(config, [SweepRun("a"), SweepRun("b")], group="g") == dirs
    assert [(d / "metrics.csv").read_bytes() for d in dirs] == before
    manifest = json.loads((group_dir / "sweep.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == ["a", "b"]
    assert manifest["runs"][0]["overrides"][-1] == "resume.mode=auto"


def test_failed_runs_are_reported_by_name_and_the_sweep_goes_on(tmp_path: Path, config: Path) -> None:
    """In process: the training of both runs fails (their data files are missing); both are attempted."""
    runs = [SweepRun("first"), SweepRun("second"), SweepRun("done")]
    write_run(tmp_path / "runs" / "g", "done")
    with pytest.raises(SweepFailed) as info:
        run_sweep(config, runs, group="g", in_process=True)
    assert [name for name, _ in info.value.failed] == ["first", "second"]
    assert not info.value.stopped
    assert len(info.value.run_dirs) == 3
    with pytest.raises(SweepFailed) as info:
        run_sweep(config, runs, group="g", in_process=True, stop_on_error=True)
    assert [name for name, _ in info.value.failed] == ["first"] and info.value.stopped


def test_subprocess_failure_reports_the_exit_code_and_the_command_exits_1(tmp_path: Path, config: Path, capsys) -> None:
    """A real `rewarm train` child process fails (its data files are missing): exit status 1, run named."""
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: g\nruns: [{name: broken}]\n")
    assert sweep_main([str(config), str(sweep_file)]) == 1
    assert "broken: exit code 2" in capsys.readouterr().err


def test_signals_to_the_sweep_are_forwarded_to_the_running_run() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with sweep._forward_signals(proc) as received:
        os.kill(os.getpid(), signal.SIGUSR1)
        code = proc.wait(timeout=30)
    assert received == [signal.SIGUSR1]
    assert code == -signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_sweep_command_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, config: Path, capsys) -> None:
    sweep_file = tmp_path / "lr.yaml"
    sweep_file.write_text("grid:\n  schedule.max_lr: [1.5e-4, 3e-4]\n")
    assert sweep_main([str(config), str(sweep_file), "trainer.max_steps=10", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[1/2] max_lr-1.5e-4  (new: start)" in out
    assert "schedule.max_lr=1.5e-4 trainer.max_steps=10 run.name=max_lr-1.5e-4" in out
    assert not (tmp_path / "runs").exists()


def test_sweep_command_refuses_a_bad_sweep_with_status_2(tmp_path: Path, config: Path, capsys) -> None:
    sweep_file = tmp_path / "bad.yaml"
    sweep_file.write_text("grid:\n  schedule.max_lrr: [1.5e-4]\n")
    assert sweep_main([str(config), str(sweep_file)]) == 2
    assert "[max_lrr-1.5e-4] schedule.max_lrr" in capsys.readouterr().err


def test_study_commands_import_no_lightning() -> None:
    code = (
        "import sys, rewarm.study.cli, rewarm.study.sweep, rewarm.study.compare, rewarm.study.report, "
        "rewarm.study.plots; bad = [m for m in ('lightning', 'torch', 'deepspeed', 'wandb', 'matplotlib') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
