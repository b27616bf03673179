"""How a reading process's rows reach the training process: compact arrays, items of rows, row order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rewarm.data.loader import _in_row_order, model_inputs
from rewarm.data.rows import micro_batch, narrow, owned_rows


def compact_batch(tokens: np.ndarray, starts: list[list[int]] | None = None) -> dict[str, np.ndarray]:
    """A compact micro-batch (what rows.micro_batch returns), for rows ``tokens`` (B, T + 1) and document starts."""
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
    batch = compact_batch(tokens, starts)
    out = model_inputs({**batch, "tokens": narrow(batch["tokens"])})
    assert all(v.dtype == torch.long for v in out.values())
    assert out["input_ids"].tolist() == tokens[:, :-1].tolist()
    assert out["labels"].tolist() == [[101, 102, -100, 104, 105, 106], [108, 109, 110, 111, 112, -100]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]]
    assert out["source_ids"].tolist() == [0, 1]
    assert out["input_ids"].is_contiguous() and out["labels"].is_contiguous()


@pytest.mark.parametrize("top,dtype", [(65535, np.uint16), (65536, np.int32), (50_000_000, np.int32)])
def test_narrow_token_ids_only_when_they_fit(top, dtype):
    tokens = narrow(np.array([[0, 1, top]], np.int32))
    assert tokens.dtype == dtype
    assert model_inputs({"tokens": tokens, "source_ids": np.zeros(1, np.int64)})["labels"].tolist() == [[1, top]]


def item(rows: list[int], end: int | None = None) -> dict:
    """An item of rows whose token row r holds r everywhere (T = 3); document starts at offset 2 of odd rows."""
    tokens = np.repeat(np.asarray(rows, np.int32)[:, None], 4, 1)
    out = {"tokens": tokens, "source_ids": np.asarray(rows, np.int64) % 2, "rows": np.asarray(rows),
           "cursors": [(r, "s", {}) for r in rows], "position_ids": np.zeros((len(rows), 3), np.int16),
           "masked": [[1] if r % 2 else [] for r in rows]}
    return out


def test_owned_rows_are_runs_of_each_process_block():
    """8 local streams over 2 processes: process 1 owns streams 4..7, so rows 4..7, 12..15, ...; from row 6 on."""
    rows = owned_rows(6, 8, 4, 1)
    assert [next(rows) for _ in range(6)] == [6, 7, 12, 13, 14, 15]
    rows = owned_rows(6, 8, 4, 0)
    assert [next(rows) for _ in range(4)] == [8, 9, 10, 11]


def test_rows_are_put_back_in_order_and_cut_into_micro_batches():
    """Items arrive round-robin from two processes owning runs of 2 rows; micro-batches of 3 rows take rows
    in order across items; a source that ends at row 9 ends the stream before the batch that needs it."""
    items = iter([item([0, 1, 4, 5]), item([2, 3, 6, 7]), item([8]), {"_end": "s", "row": 10}, item([9])])
    batches = list(_in_row_order(items, 0, 3, rank=0))
    assert [[it["rows"][i] for it, i in refs] for refs in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    mb = micro_batch(batches[1], 3, document_mask=True)
    assert mb["tokens"][:, 0].tolist() == [3, 4, 5] and mb["source_ids"].tolist() == [1, 0, 1]
    assert mb["masked"].tolist() == [0 * 3 + 1, 2 * 3 + 1]  # rows 3 and 5 (odd) mask label 1


def test_a_whole_item_is_used_without_copying():
    it = item([0, 1, 2])
    mb = micro_batch([(it, 0), (it, 1), (it, 2)], 3, document_mask=False)
    assert mb["tokens"] is it["tokens"]
