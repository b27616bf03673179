"""Preemption latency under a real SLURM: from ``scancel --signal=USR1 --batch JOB`` to the written checkpoint,
to the job running again (requeued, ``SLURM_RESTART_COUNT=1``) and to its first training step after the resume.

The baseline, in the same command: the same run as a local process sent SIGUSR1 (it checkpoints and exits with
code 3) and started again at once. The ratio (SLURM / local, time from the signal to the first step after the
restart) is what the scheduler adds: the requeue delay (``BeginTime`` = requeue + AuthInfo ``cred_expire`` + 1
s; 5 s on the local cluster, 120 s by default) and the job launch. Tiny GPT-NeoX on CPU, one task.

Needs a running cluster (``sudo slurm/local-cluster.sh start``; ``SLURM_CONF`` as it prints, or its default
state directory); prints ``slurm_requeue=nan`` and skips without one.

    .venv/bin/python benchmarks/slurm_requeue.py [--rounds 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common as C

DEFAULT_CONF = Path("/tmp/rewarm-slurm/slurm.conf")
POLL_S = 0.02


def cluster_env() -> dict[str, str] | None:
    """The environment for sbatch/scontrol (SLURM_CONF set), or None when no cluster answers."""
    env = dict(os.environ)
    if "SLURM_CONF" not in env and DEFAULT_CONF.is_file():
        env["SLURM_CONF"] = str(DEFAULT_CONF)
    if shutil.which("sinfo") is None:
        return None
    ok = subprocess.run(["sinfo", "-h"], env=env, capture_output=True, timeout=30).returncode == 0
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1",
               WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    return env if ok else None


def wait_until(cond: Callable[[], bool], timeout_s: float = 300) -> float:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(POLL_S)
    return time.monotonic()


def rows(metrics: Path) -> list[int]:
    """Steps of the complete rows of metrics.csv."""
    if not metrics.is_file():
        return []
    text = metrics.read_text()
    lines = text.splitlines(keepends=True)[1:]
    return [int(r[0]) for r in csv.reader(ln for ln in lines if ln.endswith("\n")) if r and r[0].isdigit()]


def saved_step(run_dir: Path) -> int | None:
    from rewarm.checkpoints.store import find_latest_valid

    ckpt = find_latest_valid(run_dir / "checkpoints")
    return int(ckpt.name.removeprefix("step")) if ckpt else None


def job_field(job_id: str, env: dict[str, str], key: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True).stdout
    m = re.search(rf"\b{key}=(\S*)", out)
    return m.group(1) if m else ""


def slurm_round(config: Path, overrides: list[str], run_dir: Path, env: dict[str, str]) -> dict[str, float]:
    res = subprocess.run([sys.executable, "-m", "rewarm", "slurm", str(config), *overrides, "--submit",
                          "--cpus-per-task", "1", "--time", "10:00"], env=env, capture_output=True, text=True)
    job_id = re.search(r"Submitted batch job (\d+)", res.stdout).group(1)  # type: ignore[union-attr]
    try:
        wait_until(lambda: len(rows(run_dir / "metrics.csv")) >= 5)
        t0 = time.monotonic()
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=env, check=True)
        t_ckpt = wait_until(lambda: saved_step(run_dir) is not None)
        step = saved_step(run_dir)
        t_pending = wait_until(lambda: job_field(job_id, env, "JobState") == "PENDING")
        t_running = wait_until(lambda: job_field(job_id, env, "JobState") == "RUNNING")
        t_step = wait_until(lambda: step in rows(run_dir / "metrics.csv"))
    finally:
        subprocess.run(["scancel", job_id], env=env, capture_output=True)
    return {"checkpoint": t_ckpt - t0, "requeued": t_pending - t0, "running": t_running - t0,
            "first_step": t_step - t0}


def local_round(config: Path, overrides: list[str], run_dir: Path, env: dict[str, str]) -> dict[str, float]:
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    cmd = [sys.executable, "-m", "rewarm", "train", str(config), *overrides]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(rows(run_dir / "metrics.csv")) >= 5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGUSR1)
        t_ckpt = wait_until(lambda: saved_step(run_dir) is not None)
        step = saved_step(run_dir)
        proc.wait(timeout=300)
        t_exit = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_step = wait_until(lambda: step in rows(run_dir / "metrics.csv"))
    finally:
        proc.kill()
        proc.wait()
    return {"checkpoint": t_ckpt - t0, "exited": t_exit - t0, "first_step": t_step - t0}


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    C.print_machine()
    env = cluster_env()
    if env is None:
        print("skipped: no SLURM cluster answers (sudo slurm/local-cluster.sh start)")
        C.print_result("slurm_requeue", float("nan"), "informational (no target)")
        return float("nan")
    model = C.build_model_dir(args.cache / "model_d64_l2", 64, 2, 4, 256)
    corpus = C.corpus(args.cache / "slurm_requeue" / "train.jsonl.zst", 2000, seed=7)
    work = Path(tempfile.mkdtemp(prefix="slurm-requeue-"))
    config = work / "empty.yaml"
    config.write_text("{}\n")
    results: dict[str, list[dict[str, float]]] = {"slurm": [], "local": []}
    for r in range(1 if args.quick else args.rounds):
        for kind, fn in (("slurm", slurm_round), ("local", local_round)):
            ov = [*C.base_overrides(model, str(corpus), work / f"{kind}{r}", 64, 2, 100_000, "run"),
                  "resume.mode=auto"]
            out = fn(config, ov, work / f"{kind}{r}" / "run", env)
            results[kind].append(out)
            print(f"[{r + 1}] {kind:5s} " + "  ".join(f"{k} {v:6.2f} s" for k, v in out.items()), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    for kind, outs in results.items():
        print(f"median {kind:5s} " + "  ".join(f"{k} {C.median([o[k] for o in outs]):6.2f} s" for k in outs[0]))
    ratio = C.median([o["first_step"] for o in results["slurm"]]) / C.median([o["first_step"] for o in
                                                                               results["local"]])
    C.print_result("slurm_requeue", ratio, "informational: signal -> first step after the restart, SLURM / local")
    return ratio


if __name__ == "__main__":
    main()
