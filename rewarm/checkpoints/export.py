"""Hugging Face directories from run checkpoints (``rewarm export``) and loading a checkpoint's model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rewarm.checkpoints.store import STATE, find_latest_valid, invalid_reason
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
    reason = invalid_reason(source, deep=True)
    if reason is not None:
        raise ResumeError(f"{source} is not a valid rewarm checkpoint ({reason})")
    return source, source.parent.parent


def checkpoint_kind(state: Path) -> str:
    """``lightning`` (one file), ``deepspeed`` (ZeRO shards: a ``latest`` tag file and ``*_model_states.pt``)
    or ``dcp`` (torch distributed checkpoint of FSDP2: ``.metadata``)."""
    if state.is_file():
        return "lightning"
    if (state / ".metadata").is_file():
        return "dcp"
    if (state / "latest").is_file() or any(state.glob("*/*model_states.pt")):
        return "deepspeed"
    raise ResumeError(f"{state}: neither a Lightning checkpoint file, DeepSpeed ZeRO shards nor a distributed "
                      "checkpoint")


def _strip(sd: dict[str, Any], prefix: str = "model.") -> dict[str, Any]:
    """The LightningModule's keys (``model.<hf key>``) -> the Hugging Face model's keys."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def model_state_dict(ckpt_dir: Path) -> dict[str, Any]:
    """The model's weights (Hugging Face keys) from a checkpoint, consolidated in one process without a
    process group: a Lightning file; DeepSpeed ZeRO-1/2/3 shards (the fp32 master weights, gathered from
    every rank's optimizer partition by DeepSpeed's ``zero_to_fp32``); or an FSDP2 distributed checkpoint.
    Every load is weights-only (``rewarm.faults.safe_load``): a checkpoint that needs more is refused."""
    import torch

    from rewarm.faults.safe_load import check_dcp_metadata, weights_only_loads

    state = ckpt_dir / STATE
    kind = checkpoint_kind(state)
    with weights_only_loads(state):
        if kind == "deepspeed":
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            sd = get_fp32_state_dict_from_zero_checkpoint(str(state))
        elif kind == "dcp":
            from lightning.fabric.utilities.load import _load_distributed_checkpoint

            check_dcp_metadata(state)
            sd = _load_distributed_checkpoint(state)["state_dict"]
        else:
            sd = torch.load(state, map_location="cpu", weights_only=True)["state_dict"]
    return _strip(sd)


def full_state_dict(strategy: Any, model: Any) -> dict[str, Any] | None:
    """Collective (call on every rank): the full weights of a live, possibly sharded model on global rank 0
    (None elsewhere), or None everywhere when the model is not sharded (use the model itself).
    ZeRO-3: gathered one module at a time; FSDP2: ``get_model_state_dict(full_state_dict=True)``."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    if getattr(strategy, "zero_stage_3", False):
        return _zero3_state_dict(model, strategy.is_global_zero)
    if isinstance(strategy, ModelParallelStrategy):  # FSDP2: DTensor shards
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sd if strategy.is_global_zero else None
    return None


def _zero3_state_dict(model: Any, rank0: bool) -> dict[str, Any] | None:
    """ZeRO-3 parameters are partitioned over ranks: gather each module's own parameters in turn (every
    rank takes part), copy them on rank 0; persistent buffers are not partitioned."""
    import deepspeed

    out: dict[str, Any] = {}
    for prefix, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if rank0:
                for name, p in module.named_parameters(recurse=False):
                    out[f"{prefix}.{name}" if prefix else name] = p.detach().clone().cpu()
        if rank0:
            for name, b in module.named_buffers(recurse=False):
                if name not in module._non_persistent_buffers_set:
                    out[f"{prefix}.{name}" if prefix else name] = b.detach().clone().cpu()
    return out if rank0 else None


def export_trained(trainer: Any, model: Any, tokenizer: Any, out: Path) -> None:
    """Collective: write the trained (possibly ZeRO-3 / FSDP2 sharded) model and the tokenizer as a Hugging Face
    directory from global rank 0. Every rank must call it (the gather is a collective)."""
    sd = full_state_dict(trainer.strategy, model)
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        if sd is None:
            model.save_pretrained(out)
        else:
            model.save_pretrained(out, state_dict=sd)
        tokenizer.save_pretrained(out)
    trainer.strategy.barrier("rewarm-export")


def load_checkpoint_model(source: Path) -> tuple[Any, Any, Any]:
    """(model with the checkpoint's weights, tokenizer, the run's config) from a run or checkpoint directory."""
    ckpt, run_dir = resolve_checkpoint(source)
    model, tokenizer, cfg = run_model(run_dir)
    load_weights(model, model_state_dict(ckpt), ckpt)
    log.info("loaded weights of %s", ckpt)
    return model, tokenizer, cfg


def run_model(run_dir: Path) -> tuple[Any, Any, Any]:
    """(the run's model architecture in fp32 with fresh weights, its tokenizer, the run's config), from the run's
    ``config.yaml``: what a checkpoint's weights are loaded into."""
    from rewarm.config import load
    from rewarm.model.load import load_model, load_tokenizer

    cfg = load(run_dir / "config.yaml", ["resume=never"])
    m = cfg.model
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.tokenizer, m.trust_remote_code)
    model = load_model(m.name_or_path, m.revision, init="scratch", dtype="float32", attn_implementation="sdpa",
                       trust_remote_code=m.trust_remote_code, seed=cfg.run.seed)
    return model, tokenizer, cfg


def load_weights(model: Any, state_dict: dict[str, Any], source: Path) -> None:
    """Load Hugging Face keyed weights into ``model``; a key missing or left over is refused (ResumeError)."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.endswith("masked_bias") and "rotary_emb" not in k]
    if missing or unexpected:
        raise ResumeError(f"{source}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def export_checkpoint(source: Path, out: Path) -> Path:
    model, tokenizer, _ = load_checkpoint_model(source)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
