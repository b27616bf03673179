"""The validation sets of a run, as training and ``rewarm eval`` evaluate them: each set's name, role, rows
(``rewarm.data``) and subset weights. The config stops here: below, plain arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewarm.config import RunConfig


@dataclass
class ValSet:
    name: str
    role: str  # upstream | downstream
    rows: Any  # rewarm.data.ValRows: .rows (N, T+1), .token_subsets (N, T) | None, .subset_names
    subset_weights: dict[str, float] = field(default_factory=dict)  # -> val/<set>/loss_weighted


def build_val_sets(cfg: RunConfig, tokenizer: Any) -> list[ValSet]:
    """Every ``data.val`` set's rows, tokenized once and cached under ``data.cache_dir`` (default
    ``<out_dir>/.cache``)."""
    from rewarm.data import build_val_rows

    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(cfg.run.out_dir) / ".cache"
    return [
        ValSet(name, vs.role, build_val_rows(vs, tokenizer, cfg.data.seq_len, cache / "val",
                                             on_bad_record=cfg.data.on_bad_record, reader=cfg.data.reader),
               dict(vs.subset_weights))
        for name, vs in cfg.data.val.items()
    ]
