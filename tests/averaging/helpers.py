"""Checking an averaged Hugging Face directory against an independent mean of the checkpoints' exports."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.in_process import run_cli


def hf_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``save_pretrained`` directory (safetensors), read without transformers."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    assert out, f"no safetensors in {model_dir}"
    return out


def exported(ckpt: Path, out: Path) -> dict[str, torch.Tensor]:
    """``rewarm export CKPT --out OUT``, read back."""
    proc = run_cli(["export", str(ckpt), "--out", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return hf_weights(out)


def independent_mean(state_dicts: list[dict[str, torch.Tensor]], weights: list[float] | None = None,
                     ) -> dict[str, torch.Tensor]:
    """Σ w_i sd_i / Σ w_i per tensor (equal weights by default), from the stacked tensors in float64."""
    w = torch.tensor(weights or [1.0] * len(state_dicts), dtype=torch.float64)
    w = w / w.sum()
    out = {}
    for k, v in state_dicts[0].items():
        stacked = torch.stack([sd[k].double() for sd in state_dicts])
        out[k] = (stacked * w.view(-1, *([1] * v.dim()))).sum(0).float()
    return out


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:5]
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def check_average(avg_dir: Path, ckpts: list[Path], tmp: Path, weights: list[float] | None = None) -> float:
    """Max |averaged - independent mean of the checkpoints' exports|, asserted <= 1e-7; also that the average is
    none of the checkpoints (so the check can fail)."""
    exports = [exported(c, tmp / f"export-{c.name}") for c in ckpts]
    diff = max_abs_diff(hf_weights(avg_dir), independent_mean(exports, weights))
    assert diff <= 1e-7, diff
    for sd in exports:
        assert max_abs_diff(hf_weights(avg_dir), sd) > 1e-5
    return diff


def check_ema_export(model_dir: Path, ckpt: Path) -> float:
    """Max |parameters of ``rewarm export --averaged``'s directory - the checkpoint's EMA (read_ema)|, asserted
    <= 1e-7 (loaded with plain transformers: its parameter names are the EMA's)."""
    from transformers import AutoModelForCausalLM

    from rewarm.averaging.state import read_ema

    params = dict(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).named_parameters())
    ema = read_ema(ckpt)
    assert set(params) == set(ema), sorted(set(params) ^ set(ema))[:5]
    diff = max((params[k].detach() - v).abs().max().item() for k, v in ema.items())
    assert diff <= 1e-7, diff
    return diff
