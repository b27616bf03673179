"""Validation rows as the model reads them (``ValRows``) and their cache file: what the text sets
(``rewarm.data.val``) and the pre-tokenized sets (``rewarm.data.megatron.val``) share, below both."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class ValRows:
    """``rows`` (N, seq_len + 1) int64; ``token_subsets`` (N, seq_len) index into ``subset_names`` of the
    document each predicted token belongs to (None without a subset field); ``skipped`` bad records."""

    rows: torch.Tensor
    token_subsets: torch.Tensor | None
    subset_names: list[str]
    skipped: int = 0

    @property
    def num_tokens(self) -> int:
        """Predicted tokens: N x seq_len."""
        return int(self.rows.shape[0] * (self.rows.shape[1] - 1))


def save_rows(path: Path, rows: ValRows) -> None:
    """Write ``rows`` to ``path`` (.npz) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, rows=rows.rows.numpy(), skipped=np.asarray(rows.skipped),
                 subsets=(rows.token_subsets.numpy() if rows.token_subsets is not None else np.zeros((0, 0), np.int64)),
                 names=np.asarray(json.dumps(rows.subset_names)))
    os.replace(tmp, path)  # atomic: readers never see a partial cache file


def load_rows(path: Path) -> ValRows:
    """The rows ``save_rows`` wrote."""
    with np.load(path) as z:
        names = json.loads(str(z["names"]))
        subsets = z["subsets"]
        token_subsets = torch.from_numpy(subsets.copy()) if subsets.size else None
        return ValRows(torch.from_numpy(z["rows"].copy()), token_subsets, names, int(z["skipped"]))
