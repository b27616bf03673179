"""Streaming data pipeline: sources -> tokenize -> pack -> mix -> loader, exactly resumable.

Import-light on purpose (``rewarm check`` imports the config): torch, numpy and datasets are imported
inside the functions below, never at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rewarm.data.config import DataConfig, ValSetConfig
from rewarm.data.state import gather_state, merge_states, state_metrics

if TYPE_CHECKING:
    from pathlib import Path

    from rewarm.data.loader import TrainLoader
    from rewarm.data.valrows import ValRows

__all__ = ["TrainLoader", "ValRows", "build_train_loader", "build_val_rows", "check_paths", "gather_state", "merge_states",
           "state_metrics"]


def build_train_loader(cfg: DataConfig, tokenizer: Any, *, micro_batch_size: int, seed: int, rank: int,
                       world_size: int, grad_accum_steps: int = 1, vocab_size: int | None = None) -> TrainLoader:
    """The training loader of one rank. ``tokenizer``: a transformers fast tokenizer (or a
    ``tokenizers.Tokenizer`` with ``eos_token_id`` set). ``grad_accum_steps`` maps micro-batches to optimizer
    steps for weight schedules in steps. ``vocab_size``: the model's (embedding rows), the bound of
    pre-tokenized ids (default: the tokenizer's size). Raises ConfigError (keys relative to ``data``) for
    missing files."""
    from rewarm.data.loader import TrainLoader, build_plan

    if micro_batch_size < 1 or not 0 <= rank < world_size or grad_accum_steps < 1:
        raise ValueError(f"bad layout: micro_batch_size={micro_batch_size}, rank={rank}, world_size={world_size}, "
                         f"grad_accum_steps={grad_accum_steps}")
    plan = build_plan(cfg, tokenizer, micro_batch_size=micro_batch_size, seed=seed, rank=rank,
                      world_size=world_size, grad_accum_steps=grad_accum_steps, vocab_size=vocab_size)
    return TrainLoader(cfg, tokenizer, plan)


def build_val_rows(val: ValSetConfig, tokenizer: Any, seq_len: int, cache_dir: str | Path, *,
                   on_bad_record: str = "skip", reader: str = "auto", vocab_size: int | None = None) -> ValRows:
    """Rows (N, seq_len + 1) of a validation set, cached under ``cache_dir``; see rewarm.data.val.
    Pass ``on_bad_record=cfg.on_bad_record, reader=cfg.reader`` from the DataConfig; ``vocab_size``: the
    model's, the bound of pre-tokenized ids (default: the tokenizer's size)."""
    from rewarm.data.val import build_val_rows as build

    return build(val, tokenizer, seq_len, cache_dir, on_bad_record=on_bad_record, reader=reader,
                 vocab_size=vocab_size)


def check_paths(cfg: DataConfig, vocab_size: int | None = None, eos_id: int | None = None) -> None:
    """Raise ConfigError("train.<name>.paths" / "val.<name>.paths", ...) for a missing local file or a glob
    that matches nothing (remote paths are not checked). Pre-tokenized sources: also their headers, .bin sizes,
    Pythia's start row, ids sampled at both ends below ``vocab_size``, EOD for document_mask (with ``eos_id``)."""
    from rewarm.data.sources import expand_paths, is_remote

    for kind, sets in (("train", cfg.train), ("val", cfg.val)):
        for name, src in sets.items():
            if src.resolved_format() == "megatron":
                from rewarm.data.megatron.sources import check_source

                check_source(src, f"{kind}.{name}", cfg.seq_len, vocab_size=vocab_size, eos_id=eos_id,
                             document_mask=cfg.document_mask and kind == "train")
                continue
            local = [p for p in src.resolved_paths() if not is_remote(p)]
            expand_paths(local, key=f"{kind}.{name}.paths")


def __getattr__(name: str) -> Any:
    """``rewarm.data.TrainLoader`` / ``rewarm.data.ValRows`` without importing torch at package import."""
    if name == "TrainLoader":
        from rewarm.data.loader import TrainLoader

        return TrainLoader
    if name == "ValRows":
        from rewarm.data.valrows import ValRows

        return ValRows
    raise AttributeError(f"module 'rewarm.data' has no attribute {name!r}")
