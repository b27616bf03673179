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
    """The shared tiny run, two CPU processes, no wandb: 16 validation rows per set split 8/8 over the ranks; an EMA
    of the weights (``rewarm.averaging``, decay 0.5), validated with them at step 2 and at the end."""
    from tests.conftest import tiny_overrides

    base: dict[str, object] = {"trainer__accelerator": "cpu", "trainer__devices": 2, "logging__wandb__mode": "disabled",
                               "trainer__max_steps": 4, "trainer__val_every_steps": 2, "averaging__ema_decay": 0.5}
    base.update(extra)
    return tiny_overrides(world, out_dir, **base)


def averaged_validation(run_dir: Path, step: int) -> tuple[float, float]:
    """(``val_avg/pile/loss`` the run logged at ``step``, a one-process evaluation of the EMA its checkpoint of that
    step holds: the per-rank shards assembled by ``rewarm.averaging.state.read_ema``, loaded into the run's model)."""
    from transformers import AutoModelForCausalLM

    from rewarm.averaging.state import read_ema
    from rewarm.config import load
    from rewarm.evaluation.perplexity import evaluate_rows
    from rewarm.evaluation.valsets import build_val_sets
    from rewarm.model.load import load_tokenizer
    from rewarm.training.metrics import read_metrics

    logged = next(float(r["val_avg/pile/loss"]) for r in read_metrics(run_dir / "metrics.csv") if r["step"] == str(step))
    model = AutoModelForCausalLM.from_pretrained(run_dir / "hf", dtype=torch.float32).eval()
    model.load_state_dict(read_ema(run_dir / "checkpoints" / f"step{step:08d}"), strict=True)
    cfg = load(run_dir / "config.yaml")
    tokenizer = load_tokenizer(cfg.model.name_or_path, None, None)
    pile = next(vs for vs in build_val_sets(cfg, tokenizer) if vs.name == "pile")
    rows = pile.rows
    res = evaluate_rows(model, rows.rows, rows.token_subsets, rows.subset_names, batch_size=2, device=torch.device("cpu"))
    return logged, res.loss
