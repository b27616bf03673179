"""Launching real multi-process `rewarm train` jobs (torchrun, gloo on CPU) and reading what they leave."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("probe_train.py")
TIMEOUT_S = 900  # the first DeepSpeed run compiles its CPU communication op (~2-4 min on 2 cores)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(WANDB_MODE="disabled", WANDB_SILENT="true", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def torchrun(nproc: int, probe_dir: Path, config: Path, overrides: list[str], log: Path) -> int:
    """``torchrun --standalone --nproc-per-node N probe_train.py PROBE_DIR CONFIG overrides``; returns the exit
    code; stdout + stderr go to ``log`` (shown by the assertion messages of the tests)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(PROBE), str(probe_dir), str(config), *overrides]
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), stdout=fh, stderr=subprocess.STDOUT,
                              timeout=TIMEOUT_S, check=False)
    return proc.returncode


def tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def load_probes(probe_dir: Path, world: int) -> list[dict[str, Any]]:
    return [torch.load(probe_dir / f"rank{r}.pt", weights_only=False) for r in range(world)]


def hf_logits(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a Hugging Face directory loaded with plain transformers (fp32, eager-free default attention)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits.float()


def scale_overrides(world: dict[str, Path], out_dir: Path, **extra: object) -> list[str]:
    """The shared tiny run, two CPU processes, no wandb: 16 validation rows per set split 8/8 over the ranks."""
    from tests.conftest import tiny_overrides

    base: dict[str, object] = {"trainer__accelerator": "cpu", "trainer__devices": 2, "logging__wandb__mode": "disabled",
                               "trainer__max_steps": 4, "trainer__val_every_steps": 0}
    base.update(extra)
    return tiny_overrides(world, out_dir, **base)
