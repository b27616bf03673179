"""``RankShardedLM``: lm-eval's ``HFLM`` on a model already in memory, its requests split over the ranks.

lm-eval sees one process (rank 0 of 1): on every rank it builds all requests and post-processes all results, so
every rank computes the same metrics, in the same document order as one process would (bootstrap stderrs
included). Only the model calls are shared out: each rank scores a contiguous block of each request list, and
the scores are gathered back in order (``all_gather_object``).

Sharded models (FSDP2, DeepSpeed ZeRO-3) gather weights inside every forward, so every rank must call forward
equally often. Before each forward, ranks all-reduce "I still have a batch"; a rank that has finished its block
answers with 0 and runs a one-token dummy forward until the sum is 0. No rank waits into a collective timeout.
Generation (``generate_until``) is not split: every rank runs every request, decoding in step (``synced_gpus``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM


class RankShardedLM(HFLM):
    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        # HFLM sets a pad token on the tokenizer it gets: give it a copy, the run's tokenizer is saved on export
        super().__init__(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size)
        self.shard_rank, self.shard_world = rank, world_size
        self.forward_calls = 0  # real forwards of this rank
        self.scored = 0  # requests this rank scored (its blocks), since the last reset

    # ---- lm-eval's request types: each scores this rank's block, then all blocks are gathered in order
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._sharded(HFLM.loglikelihood, requests)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._sharded(HFLM.loglikelihood_rolling, requests)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        # not split: every rank generates every request (a generation's length is not known in advance);
        # ``synced_gpus`` keeps the ranks' decoding steps in step for sharded weights
        return HFLM.generate_until(self, requests, disable_tqdm=True)

    def _loglikelihood_tokens(self, requests: Any, disable_tqdm: bool = False, override_bs: int | None = None) -> Any:
        return super()._loglikelihood_tokens(requests, disable_tqdm=True, override_bs=override_bs)

    def _sharded(self, method: Any, requests: list[Any]) -> list[Any]:
        if self.shard_world == 1:
            self.scored += len(requests)
            return method(self, requests, disable_tqdm=True)
        lo, hi = block(len(requests), self.shard_rank, self.shard_world)
        self.scored += hi - lo
        mine = method(self, requests[lo:hi], disable_tqdm=True) if hi > lo else []
        while self._others_busy():  # this rank is done: keep forwarding until every rank is
            self._dummy_forward()
        parts: list[Any] = [None] * self.shard_world
        torch.distributed.all_gather_object(parts, mine)
        return [x for part in parts for x in part]

    # ---- every forward of a multi-rank evaluation goes through here
    def _model_call(self, inps: torch.Tensor, attn_mask: Any = None, labels: Any = None) -> torch.Tensor:
        if self.shard_world > 1:
            self._sync(1.0)
        self.forward_calls += 1
        if attn_mask is not None or labels is not None:
            return super()._model_call(inps, attn_mask, labels)
        with torch.no_grad():
            return self.model(input_ids=inps, use_cache=False).logits

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **kwargs: Any) -> Any:
        if self.shard_world > 1:
            kwargs.setdefault("synced_gpus", True)
        return super()._model_generate(context, max_length, stop, **kwargs)

    def _sync(self, busy: float) -> float:
        flag = torch.tensor([busy], dtype=torch.float32, device=self.device)
        torch.distributed.all_reduce(flag)
        return float(flag.item())

    def _others_busy(self) -> bool:
        return self._sync(0.0) > 0

    def _dummy_forward(self) -> None:
        with torch.no_grad():
            self.model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=self.device), use_cache=False)


def block(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous block [lo, hi) of ``n`` items for ``rank`` (sizes differ by at most one)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)
