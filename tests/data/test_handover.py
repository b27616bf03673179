"""How a worker's batches reach the training process: compact arrays, bundles, per-rank order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rewarm.data.loader import _bundles, _compact, _interleave, model_inputs


def compact_batch(tokens: np.ndarray, starts: list[list[int]] | None = None) -> dict[str, np.ndarray]:
    """What BatchMaker.make_batch returns, for rows ``tokens`` (B, T + 1) and document starts per row."""
    b, t = tokens.shape[0], tokens.shape[1] - 1
    batch = {"tokens": tokens.astype(np.int32), "source_ids": np.arange(b, dtype=np.int64)}
    if starts is not None:
        from rewarm.data.mixing import document_positions

        batch["position_ids"] = document_positions(starts, t)
        batch["masked"] = np.asarray([r * t + p - 1 for r, s in enumerate(starts) for p in s if p >= 1], np.int64)
    return batch


def test_model_inputs_shift_labels_and_mask_document_boundaries():
    tokens = np.arange(2 * 7).reshape(2, 7) + 100
    starts = [[3], [6]]  # row 0: a document starts at offset 3; row 1: at offset 6 (the last label)
    out = model_inputs(_compact(compact_batch(tokens, starts)))
    assert all(v.dtype == torch.long for v in out.values())
    assert out["input_ids"].tolist() == tokens[:, :-1].tolist()
    assert out["labels"].tolist() == [[101, 102, -100, 104, 105, 106], [108, 109, 110, 111, 112, -100]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]]
    assert out["source_ids"].tolist() == [0, 1]
    assert out["input_ids"].is_contiguous() and out["labels"].is_contiguous()


@pytest.mark.parametrize("top,dtype", [(65535, np.uint16), (65536, np.int32), (50_000_000, np.int32)])
def test_compact_narrows_token_ids_only_when_they_fit(top, dtype):
    tokens = np.array([[0, 1, top]])
    compact = _compact(compact_batch(tokens))
    assert compact["tokens"].dtype == dtype
    assert model_inputs(compact)["labels"].tolist() == [[1, top]]


def items(stream: int, n: int, end: bool = False) -> list[dict]:
    out = [{"k": stream, "t": t} for t in range(n)]
    return out + ([{"_end": "src", "k": stream, "t": n}] if end else [])


def test_bundles_keep_order_and_flush_before_an_error():
    assert [[i["t"] for i in b] for b in _bundles(iter(items(0, 9)), 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]

    def failing():
        yield from items(0, 6)
        raise ValueError("bad record")

    got = []
    with pytest.raises(ValueError, match="bad record"):
        for bundle in _bundles(failing(), 4):
            got.append([i["t"] for i in bundle])
    assert got == [[0, 1, 2, 3], [4, 5]]  # the batches made before the error are handed over first


def test_interleave_restores_per_rank_order():
    """3 workers, bundles of 4: the DataLoader hands out worker 0's bundle, then 1's, then 2's; per-rank
    batch k comes from stream k % 3. Worker 1's stream ends after 5 batches: its end marker sits where
    per-rank batch 3 * 5 + 1 = 16 would be."""
    per_worker = [items(0, 8), items(1, 5, end=True), items(2, 8)]
    bundles = [list(_bundles(iter(w), 4)) for w in per_worker]
    delivered = [b for rnd in zip(*bundles, strict=False) for b in rnd]  # round-robin over the workers
    out = list(_interleave(iter(delivered), 3))
    order = [(i["k"], i["t"]) for i in out]
    end = next(j for j, i in enumerate(out) if "_end" in i)
    assert end == 16 and order[:end] == [(j % 3, j // 3) for j in range(16)]
