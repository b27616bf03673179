"""The package as a user installs it: a wheel built the standard way (an sdist, then a wheel from it) carries the
example configs and SLURM templates, and, installed (not editable) into a fresh virtualenv with the dependencies it
declares, runs `rewarm demo --quick` and `rewarm slurm CONFIG --dry-run` from an empty directory, away from any
checkout.

The virtualenv borrows nothing from the test's environment (its import path holds only its own site-packages and
the interpreter's standard library, no system site packages): torch==2.13.0 (the CPU build) is installed first, as a user without a GPU would, then the wheel, its
dependencies resolved by pip (from its cache when warm, else from the package index). No extra is installed, so
lm-evaluation-harness is absent: the demo runs without its downstream tasks and says so, and a config that needs
it is refused with one message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "runs", ".cache", "build", "dist", "*.egg-info",
                                    "__pycache__", ".pytest_cache", ".ruff_cache", "wandb", "out")


ADDED = ("configs/sweeps/added-later.yaml", "slurm/added-later.sh")
"""Written into the copied tree before building: new files ship without a change to the build."""


def shipped() -> list[str]:
    """What the wheel must carry under rewarm/share/: every file under configs/ (no hidden ones), and
    slurm/*.sbatch, slurm/*.sh — listed from the checkout now, so files added later are expected too."""
    files = [p for p in (REPO / "configs").rglob("*") if p.is_file() and not p.name.startswith(".")]
    files += [*(REPO / "slurm").glob("*.sbatch"), *(REPO / "slurm").glob("*.sh")]
    return sorted(str(p.relative_to(REPO)) for p in files if "__pycache__" not in p.parts)


def _run(cmd: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _build_isolation() -> list[str]:
    """Build with this environment's setuptools when it is recent enough (no download), else isolated."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return ["--no-build-isolation"] if int(version("setuptools").split(".")[0]) >= 68 else []
    except PackageNotFoundError:
        return []


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel built from that sdist), from a copy of the source tree (nothing written into the checkout)."""
    tmp = tmp_path_factory.mktemp("dists")
    src, out = tmp / "src", tmp / "dist"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    for name in ADDED:  # files nobody told the build about
        (src / name).write_text(f"# {name}\n")
    code = f"from setuptools import build_meta as b; print(b.build_sdist({str(out)!r}))"
    sdist = out / _run([sys.executable, "-c", code], cwd=src).stdout.strip().splitlines()[-1]
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *_build_isolation(), "-w", str(out), str(sdist)],
         cwd=tmp)
    (wheel,) = out.glob("rewarm-*.whl")
    return sdist, wheel


def test_sdist_and_wheel_carry_the_configs_and_templates(dists: tuple[Path, Path]) -> None:
    sdist, wheel = dists
    expected = shipped()
    assert {"configs/demo.yaml", "configs/deepspeed/zero2_comm.json", "slurm/train.sbatch",
            "slurm/sweep.sbatch"} <= set(expected) and any(f.startswith("configs/sweeps/") for f in expected)
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        assert {f"{top}/{f}" for f in [*expected, *ADDED]} <= set(tar.getnames())
    with zipfile.ZipFile(wheel) as whl:
        for f in expected:  # byte for byte the checkout's files
            assert whl.read(f"rewarm/share/{f}") == (REPO / f).read_bytes(), f
        assert all(whl.read(f"rewarm/share/{f}") == f"# {f}\n".encode() for f in ADDED)
        assert "rewarm/resources.py" in whl.namelist()


TORCH = "torch==2.13.0"
"""Installed first: the CPU build (a bare `torch` requirement, resolved alone, takes a CUDA build of several GB)."""


def _env() -> dict[str, str]:
    """This environment's variables minus what would point the child at the checkout or at this virtualenv."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "REWARM_DEMO_DIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def venv(dists: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (no system site packages) with torch, then the wheel and the dependencies it declares."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent, env=_env())
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, TORCH], cwd=venv.parent, env=_env(), timeout=1800)
    _run([*pip, str(dists[1])], cwd=venv.parent, env=_env(), timeout=1800)  # no --no-deps: pip resolves them
    return venv


def _venv_or_stdlib(entry: Path, venv: Path, base: Path) -> bool:
    return entry.is_relative_to(venv) or (entry.is_relative_to(base) and "site-packages" not in entry.parts)


def test_the_virtualenv_borrows_nothing_and_lacks_the_extras(venv: Path, tmp_path: Path) -> None:
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    code = ("import importlib.util as u, sys, sysconfig; print(sysconfig.get_path('purelib')); print(sys.base_prefix); "
            "print([m for m in ('lm_eval', 'deepspeed', 'flash_attn') if u.find_spec(m)]); print('\\n'.join(sys.path))")
    out = _run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=_env()).stdout.splitlines()
    site, base, extras, *path = out
    assert Path(site).is_relative_to(venv) and extras == "[]"
    # Every entry of the import path (what a path-configuration line or a site directory would add to) is the
    # venv's own or the interpreter's standard library (not its site-packages): nothing of this test's environment,
    # the checkout or elsewhere
    assert not [p for p in path if p and not _venv_or_stdlib(Path(p).resolve(), venv.resolve(), Path(base).resolve())], path
    _run([str(venv / "bin" / "python"), "-m", "pip", "check"], cwd=tmp_path, env=_env())  # every declared dependency


def test_the_installed_package_is_the_wheel_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    code = ("import sys, rewarm, rewarm.demo.cli, rewarm.launch.slurm; from rewarm.resources import resource; "
            "print(rewarm.__file__); print(rewarm.demo.cli.DEFAULT_CONFIG); print(rewarm.launch.slurm.TEMPLATE_DIR); "
            "print(resource('configs/deepspeed/zero2_comm.json')); "
            "print(any(m.startswith('__editable__') for m in sys.modules)); print('\\n'.join(sys.path))")
    lines = _run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=_env()).stdout.splitlines()
    package = Path(lines[0]).parent
    assert package.is_relative_to(venv), lines[0]
    assert Path(lines[1]) == package / "share" / "configs" / "demo.yaml" and Path(lines[1]).is_file()
    assert Path(lines[2]) == package / "share" / "slurm" and (Path(lines[2]) / "train.sbatch").is_file()
    assert Path(lines[3]) == package / "share" / "configs" / "deepspeed" / "zero2_comm.json"
    assert lines[4] == "False"  # the checkout's editable finder was not loaded
    assert all(Path(p or tmp_path).resolve() != REPO for p in lines[5:]), lines[5:]  # nor is the checkout on the path


def test_installed_command_help(venv: Path, tmp_path: Path) -> None:
    out = _run([str(venv / "bin" / "rewarm"), "--help"], cwd=tmp_path, env=_env()).stdout
    assert all(command in out for command in ("train", "check", "sweep", "demo", "slurm"))


def test_installed_slurm_dry_run_from_an_empty_directory(venv: Path, tmp_path: Path) -> None:
    rewarm, env = str(venv / "bin" / "rewarm"), _env()
    config = _run([str(venv / "bin" / "python"), "-m", "rewarm.resources", "configs/pythia-410m-pile-to-slimpajama.yaml"],
                  cwd=tmp_path, env=env).stdout.strip()
    out = _run([rewarm, "slurm", config, "trainer.devices=4", "--dry-run"], cwd=tmp_path, env=env).stdout
    assert "#SBATCH --ntasks-per-node=4" in out and "#SBATCH --gpus-per-node=4" in out
    assert "srun --kill-on-bad-exit=1 rewarm train" in out and f"sbatch {tmp_path}/runs/" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # a dry run writes nothing


def test_a_config_with_tasks_is_refused_naming_the_extra(venv: Path, tmp_path: Path) -> None:
    """configs/demo.yaml evaluates two tasks: without lm-eval, `rewarm train` stops before its start-up."""
    config = _run([str(venv / "bin" / "python"), "-m", "rewarm.resources", "configs/demo.yaml"], cwd=tmp_path,
                  env=_env()).stdout.strip()
    proc = subprocess.run([str(venv / "bin" / "rewarm"), "train", config], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=_env())
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        "error: this run needs lm-eval[hf] for tasks.names, which is not installed: pip install 'rewarm[eval]' "
        "(or tasks.names=[] runs without downstream tasks)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_installed_demo_quick_from_an_empty_directory(venv: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(venv / "bin" / "rewarm"), "demo", "--quick"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=2400, env=_env())
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert proc.stdout.splitlines()[0] == ("lm-eval is not installed: the demo runs without its downstream tasks "
                                           "(pip install 'rewarm[eval]' to add them)")
    assert "start loss (ppl)" in proc.stdout and "findings of the papers reproduced" in proc.stdout
    report = Path(proc.stdout.split("report: ")[-1].split()[0])
    assert (tmp_path / report if not report.is_absolute() else report).is_file()
    assert (tmp_path / "runs" / "demo").is_dir() and (tmp_path / ".cache" / "rewarm-demo").is_dir()
