"""Hugging Face directories from run checkpoints (``rewarm export``) and loading a checkpoint's model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rewarm.checkpointing import STATE, find_latest_valid, read_valid_manifest
from rewarm.errors import ResumeError

log = logging.getLogger(__name__)


def resolve_checkpoint(source: Path) -> tuple[Path, Path]:
    """(checkpoint dir, run dir) from a run directory (newest valid checkpoint) or a checkpoint directory."""
    if (source / "checkpoints").is_dir():
        ckpt = find_latest_valid(source / "checkpoints")
        if ckpt is None:
            raise ResumeError(f"{source} has no valid checkpoint under checkpoints/")
        return ckpt, source
    if source.name == STATE:
        source = source.parent
    if read_valid_manifest(source) is None:
        raise ResumeError(f"{source} is not a complete rewarm checkpoint (no valid manifest.json)")
    return source, source.parent.parent


def model_state_dict(ckpt_dir: Path) -> dict[str, Any]:
    """The model's weights (fp32) from a checkpoint: a Lightning file, or DeepSpeed ZeRO shards consolidated."""
    import torch

    state = ckpt_dir / STATE
    if state.is_dir():  # DeepSpeed: a directory of ZeRO shards
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        sd = get_fp32_state_dict_from_zero_checkpoint(str(state))
    else:
        sd = torch.load(state, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "model."
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def load_checkpoint_model(source: Path) -> tuple[Any, Any, Any]:
    """(model with the checkpoint's weights, tokenizer, the run's config) from a run or checkpoint directory."""
    from rewarm.config import load
    from rewarm.model import load_model, load_tokenizer

    ckpt, run_dir = resolve_checkpoint(source)
    cfg = load(run_dir / "config.yaml", ["resume=never"])
    m = cfg.model
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.tokenizer, m.trust_remote_code)
    model = load_model(m.name_or_path, m.revision, init="scratch", dtype="float32", attn_implementation="sdpa",
                       trust_remote_code=m.trust_remote_code, seed=cfg.run.seed)
    missing, unexpected = model.load_state_dict(model_state_dict(ckpt), strict=False)
    missing = [k for k in missing if not k.endswith("masked_bias") and "rotary_emb" not in k]
    if missing or unexpected:
        raise ResumeError(f"{ckpt}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    log.info("loaded weights of %s", ckpt)
    return model, tokenizer, cfg


def export_checkpoint(source: Path, out: Path) -> Path:
    model, tokenizer, _ = load_checkpoint_model(source)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
