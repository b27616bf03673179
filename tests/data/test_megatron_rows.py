"""The bulk path of pre-tokenized rows (rewarm.data.rows.bulk_items with rewarm.data.megatron.rows.RowReader)
makes the same rows, row numbers, cursors and source ends as the row-by-row path it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from megatron_helpers import write_docs

from rewarm.data import rows
from rewarm.data.loader import build_plan
from rewarm.data.workers import _backend


def made(plan, tokenizer, w: int, j0: int, states: dict, per_item: int, bulk: bool, monkeypatch) -> list:
    """Every row of reading process ``w`` as (row, tokens, source id, cursor), then the end marker."""
    monkeypatch.setattr(rows, "bulk_ok", lambda plan: bulk)
    out: list = []
    for item in rows.process_items(plan, _backend(tokenizer), w, j0, states, per_item):
        if "_end" in item:
            out.append(("end", item["_end"], item["row"]))
            continue
        for k, r in enumerate(item["rows"].tolist()):
            out.append((r, item["tokens"][k].tolist(), int(item["source_ids"][k]), item["cursors"][k]))
    return out


@pytest.mark.parametrize(("eos", "shuffle"), [(False, "none"), (True, "documents")])
def test_bulk_rows_equal_the_rows_made_one_by_one(tokenizer, data_cfg, tmp_path, monkeypatch, eos, shuffle):
    rng = np.random.default_rng(1)
    write_docs(tmp_path / "pre", [list(rng.integers(1, 300, rng.integers(3, 40))) for _ in range(150)])
    cfg = data_cfg(seq_len=16, streams=8, num_workers=2, on_source_end="stop",
                   train={"pre": {"paths": [str(tmp_path / "pre.bin")], "append_eos": eos, "shuffle": shuffle}})
    plan = build_plan(cfg, tokenizer, micro_batch_size=3, seed=0, rank=0, world_size=2)
    assert rows.bulk_ok(plan)  # one pre-tokenized source, no document_mask
    for w in (0, 1):  # 2 ranks x 2 processes: each process owns 2 of the rank's 4 streams
        one_by_one = made(plan, tokenizer, w, 0, {}, 5, False, monkeypatch)
        assert one_by_one[-1][0] == "end" and len(one_by_one) > 20
        assert made(plan, tokenizer, w, 0, {}, 5, True, monkeypatch) == one_by_one
        # from the middle: the streams' states after the rows before local row 13
        j0 = 13
        states = {}
        for r, _, _, cursor in one_by_one[:-1]:
            if r < j0:
                t = r % plan.local_streams
                states[t] = {"pos": r // plan.local_streams + 1, "subs": {cursor[1]: cursor[2]}}
        later = [x for x in one_by_one if x[0] == "end" or x[0] >= j0]
        assert made(plan, tokenizer, w, j0, states, 4, True, monkeypatch) == later
