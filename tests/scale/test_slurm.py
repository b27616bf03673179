"""The sbatch scripts parse (``bash -n``), ``rewarm slurm`` renders them with the config's resources, refuses
bad sweeps, and the rendered scripts hand ``srun`` the right ``rewarm train`` command (SLURM's ``srun`` is
absent here: a stand-in on PATH prints its arguments)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from rewarm.config import load
from rewarm.launch.cli import main
from rewarm.launch.slurm import TEMPLATE_DIR, SlurmOptions, directives, render, sweep_lines
from tests.conftest import tiny_overrides


@pytest.mark.parametrize("name", ["train.sbatch", "sweep.sbatch"])
def test_scripts_parse(name: str) -> None:
    assert subprocess.run(["bash", "-n", str(TEMPLATE_DIR / name)], capture_output=True).returncode == 0
    text = (TEMPLATE_DIR / name).read_text()
    for directive in ("--signal=USR1@120", "--requeue", "--open-mode=append"):
        assert f"#SBATCH {directive}" in text


def _sbatch(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([a-z-]+)=(\S+)$", text, flags=re.M))


def test_render_rewrites_adds_and_removes() -> None:
    text = "#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH --gpus-per-node=1\n#SBATCH --requeue\n\nsrun x\n"
    out = render(text, {"nodes": "4", "gpus-per-node": None, "partition": "gpu"})
    assert out == "#!/bin/bash\n#SBATCH --nodes=4\n#SBATCH --requeue\n#SBATCH --partition=gpu\n\nsrun x\n"


def test_directives_from_config(tiny_world, empty_yaml: Path, tmp_path: Path) -> None:
    cfg = load(empty_yaml, tiny_overrides(tiny_world, tmp_path, trainer__devices=8, trainer__num_nodes=4))
    d = directives(cfg, SlurmOptions(partition="p"), job_name="j", output="o")
    assert (d["nodes"], d["ntasks-per-node"], d["gpus-per-node"], d["partition"]) == ("4", "8", "8", "p")
    cpu = load(empty_yaml, tiny_overrides(tiny_world, tmp_path, trainer__accelerator="cpu"))
    assert directives(cpu, SlurmOptions(), job_name="j", output="o")["gpus-per-node"] is None


def _shim_srun(bin_dir: Path) -> dict[str, str]:
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    (bin_dir / "srun").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_train_script_submits_config_resources(tiny_world, empty_yaml: Path, tmp_path: Path, capsys) -> None:
    ov = tiny_overrides(tiny_world, tmp_path / "runs", trainer__devices=4, trainer__num_nodes=2)
    out = tmp_path / "job.sbatch"
    assert main([str(empty_yaml), *ov, "--dry-run", "--time", "1:00:00", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    s = _sbatch(printed)
    assert (s["nodes"], s["ntasks-per-node"], s["gpus-per-node"], s["time"]) == ("2", "4", "4", "1:00:00")
    assert s["output"] == str(tmp_path / "runs" / "t" / "slurm-%j.out") and s["signal"] == "USR1@120"
    assert f"# sbatch {out} {empty_yaml.resolve()} " in printed and not out.exists()  # dry run writes nothing

    script = tmp_path / "rendered.sbatch"
    script.write_text(printed.split("# would write")[0])
    env = _shim_srun(tmp_path / "bin") | {"SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_ID": "7"}
    res = subprocess.run(["bash", str(script), str(empty_yaml), "schedule.max_lr=2e-4"], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    args = res.stdout.splitlines()[1:]  # after the job banner
    assert args[:4] == ["--kill-on-bad-exit=1", "rewarm", "train", str(empty_yaml)]
    assert args[4:] == ["trainer.num_nodes=2", "trainer.devices=4", "schedule.max_lr=2e-4"]


def test_sweep_array_and_line_selection(tiny_world, empty_yaml: Path, tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "lr.txt"
    sweep.write_text("# max LR grid\nschedule.max_lr=1.5e-4\n\nschedule.max_lr=3e-4\nschedule.max_lr=6e-4 run.name=hi\n")
    assert [len(x) for x in sweep_lines(sweep.read_text())] == [1, 1, 2]
    ov = tiny_overrides(tiny_world, tmp_path / "runs")
    assert main([str(empty_yaml), *ov, "--sweep", str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert _sbatch(printed)["array"] == "0-2" and _sbatch(printed)["job-name"] == "rewarm-lr"
    script = tmp_path / "sweep.sbatch"
    script.write_text(printed.split("# would write")[0])
    env = _shim_srun(tmp_path / "bin") | {"SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "1"}
    seen = []
    for task in range(3):
        res = subprocess.run(["bash", str(script), str(sweep), str(empty_yaml), "trainer.max_steps=5"],
                             env=env | {"SLURM_ARRAY_TASK_ID": str(task)}, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        seen.append(res.stdout.splitlines()[-2:] if task < 2 else res.stdout.splitlines()[-3:])
    assert seen[0] == ["schedule.max_lr=1.5e-4", "run.name=lr-0"]
    assert seen[1] == ["schedule.max_lr=3e-4", "run.name=lr-1"]
    assert seen[2] == ["trainer.max_steps=5", "schedule.max_lr=6e-4", "run.name=hi"]
    res = subprocess.run(["bash", str(script), str(sweep), str(empty_yaml)], env=env | {"SLURM_ARRAY_TASK_ID": "3"},
                         capture_output=True, text=True)
    assert res.returncode == 2 and "no run line 3" in res.stderr


def test_sweep_refusals(tiny_world, empty_yaml: Path, tmp_path: Path, capsys) -> None:
    ov = tiny_overrides(tiny_world, tmp_path / "runs")
    cases = {"schedule.max_lr=1e-3\nschedule.nope=1\n": "--sweep line 1",
             "trainer.devices=2\n": "must be the same for every run",
             "run.name=a\nrun.name=a\n": "share a run.name",
             "# nothing\n": "no run line"}
    for text, message in cases.items():
        sweep = tmp_path / "s.txt"
        sweep.write_text(text)
        assert main([str(empty_yaml), *ov, "--sweep", str(sweep)]) == 2
        assert message in capsys.readouterr().err


def test_submit_calls_sbatch(tiny_world, empty_yaml: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/sbatch.args\necho "Submitted batch job 1"\n')
    (bin_dir / "sbatch").chmod(0o755)
    # no controller answers (the partition is then not checked: tests/slurm/test_refusal.py checks it)
    (bin_dir / "scontrol").write_text('#!/bin/bash\necho "Unable to contact slurm controller" >&2\nexit 1\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main([str(empty_yaml), *tiny_overrides(tiny_world, tmp_path / "runs"), "--submit"]) == 0
    assert "the partition's nodes were not checked (scontrol show -o partition: Unable to contact slurm controller)" \
        in capsys.readouterr().err
    written = tmp_path / "runs" / "t" / "slurm" / "train.sbatch"
    assert written.is_file() and os.access(written, os.X_OK)
    assert (tmp_path / "sbatch.args").read_text().split()[:2] == [str(written), str(empty_yaml.resolve())]
