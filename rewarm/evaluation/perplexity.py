"""Validation loss and perplexity, exactly defined.

A set's rows (N, T+1) come from ``rewarm.data.build_val_rows``: documents in file order, each followed by
EOS, concatenated and cut into non-overlapping rows of T+1 tokens. Each row predicts its last T tokens from
the ones before. ``loss`` = mean NLL over all predicted tokens of the set (summed in float64), ``ppl`` =
exp(loss). Per subset: the same over the predicted tokens whose document belongs to that subset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class SetResult:
    nll_sum: float
    tokens: int
    subsets: dict[str, tuple[float, int]] = field(default_factory=dict)  # name -> (nll_sum, tokens)

    @property
    def loss(self) -> float:
        return self.nll_sum / self.tokens

    def metrics(self, name: str, subset_weights: dict[str, float] | None = None) -> dict[str, float]:
        out = {f"val/{name}/loss": self.loss, f"val/{name}/ppl": perplexity(self.loss)}
        for sub, (s, n) in self.subsets.items():
            if n:
                out[f"val/{name}/{sub}/loss"] = s / n
        if subset_weights:
            weighted = weighted_loss(self.subsets, subset_weights)
            if weighted is not None:
                out[f"val/{name}/loss_weighted"] = weighted
        return out


def perplexity(loss: float) -> float:
    """exp(loss); inf past float range (a diverged model's loss of ~1e3 must not crash the run)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def weighted_loss(subsets: dict[str, tuple[float, int]], weights: dict[str, float]) -> float | None:
    """sum_s w_s * loss_s / sum_s w_s over the weighted subsets present in the set (e.g. the LLaMA mix)."""
    present = {s: w for s, w in weights.items() if subsets.get(s, (0.0, 0))[1] > 0 and w > 0}
    if not present:
        return None
    total = sum(present.values())
    return sum(w * subsets[s][0] / subsets[s][1] for s, w in present.items()) / total


def token_nll(model: Any, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None,
              ) -> torch.Tensor:
    """Per-token NLL (B, T) in float32; 0 where labels == -100."""
    out = model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    logits = out.logits  # (B, T, V)
    nll = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none")
    return nll.view_as(labels)


@torch.no_grad()
def evaluate_rows(
    model: Any,
    rows: torch.Tensor,
    token_subsets: torch.Tensor | None,
    subset_names: list[str],
    *,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> SetResult:
    """Sum NLL over this rank's share of rows (rows[rank::world]), then all-reduce the sums."""
    n_sub = len(subset_names)
    sums = torch.zeros(2 + 2 * n_sub, dtype=torch.float64, device=device)  # [nll, tokens, sub nll..., sub tokens...]
    mine = torch.arange(rank, rows.shape[0], world_size)
    per_rank = -(-rows.shape[0] // world_size)  # the most rows any rank has
    for start in range(0, per_rank, batch_size):
        idx = mine[start:start + batch_size]
        if len(idx) == 0:  # sharded models (ZeRO-3, FSDP2) gather weights in forward: every rank must call it
            token_nll(model, rows[:1, :-1].to(device), rows[:1, 1:].to(device))
            continue
        batch = rows[idx].to(device, non_blocking=True)
        nll = token_nll(model, batch[:, :-1], batch[:, 1:]).double()  # (B, T)
        sums[0] += nll.sum()
        sums[1] += nll.numel()
        if token_subsets is not None and n_sub:
            sub = token_subsets[idx].to(device).flatten()
            sums[2:2 + n_sub] += torch.zeros(n_sub, dtype=torch.float64, device=device).scatter_add_(0, sub, nll.flatten())
            sums[2 + n_sub:] += torch.bincount(sub, minlength=n_sub).double()
    if all_reduce is not None:
        sums = all_reduce(sums)
    values = sums.tolist()  # one host sync per set
    subsets = {name: (values[2 + i], int(values[2 + n_sub + i])) for i, name in enumerate(subset_names)}
    return SetResult(values[0], int(values[1]), subsets)


def role_metrics(name: str, role: str, loss: float, start_loss: float | None) -> dict[str, float]:
    """forgetting/<set> = loss - loss at step 0 (upstream); adaptation/<set> = loss at step 0 - loss (downstream)."""
    if start_loss is None:
        return {}
    if role == "upstream":
        return {f"forgetting/{name}": loss - start_loss}
    return {f"adaptation/{name}": start_loss - loss}
