"""The package as a user installs it: a wheel built the standard way (an sdist, then a wheel from it) carries the
example configs and SLURM templates, and, installed (not editable) into a fresh virtualenv, runs `rewarm demo
--quick` and `rewarm slurm CONFIG --dry-run` from an empty directory, away from any checkout.

The fresh virtualenv gets the dependencies (torch & co.) from the test's own environment through a path line in a
.pth file: such a line adds that site-packages directory but does not run the .pth files in it, so the editable
install of this checkout stays out (checked below). Only the wheel is installed (--no-deps, --no-index).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
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


@pytest.fixture(scope="module")
def venv(dists: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed (not editable); the dependencies come from this environment."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(dists[1])], cwd=venv.parent)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=venv.parent).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])  # added after the install:
    (site / "_outer_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))  # pip saw no other rewarm
    return venv


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REWARM_DEMO_DIR", "VIRTUAL_ENV")}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false"}


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


def test_installed_slurm_dry_run_from_an_empty_directory(venv: Path, tmp_path: Path) -> None:
    rewarm, env = str(venv / "bin" / "rewarm"), _env()
    config = _run([str(venv / "bin" / "python"), "-m", "rewarm.resources", "configs/pythia-410m-pile-to-slimpajama.yaml"],
                  cwd=tmp_path, env=env).stdout.strip()
    out = _run([rewarm, "slurm", config, "trainer.devices=4", "--dry-run"], cwd=tmp_path, env=env).stdout
    assert "#SBATCH --ntasks-per-node=4" in out and "#SBATCH --gpus-per-node=4" in out
    assert "srun --kill-on-bad-exit=1 rewarm train" in out and f"sbatch {tmp_path}/runs/" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # a dry run writes nothing


@pytest.mark.slow
def test_installed_demo_quick_from_an_empty_directory(venv: Path, tmp_path: Path) -> None:
    proc = _run([str(venv / "bin" / "rewarm"), "demo", "--quick"], cwd=tmp_path, env=_env(), timeout=2400)
    assert "report: " in proc.stdout, proc.stdout[-3000:]
    report = Path(proc.stdout.split("report: ")[-1].split()[0])
    assert (tmp_path / report if not report.is_absolute() else report).is_file()
    assert (tmp_path / "runs" / "demo").is_dir() and (tmp_path / ".cache" / "rewarm-demo").is_dir()
