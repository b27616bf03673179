"""The "every document exactly once" check of the kill tests fails on what it must catch: a skipped batch, a
replayed batch, a step that differs in its replay, a document cut in the middle."""

from __future__ import annotations

import pytest
from resume_helpers import check_exactly_once, effective_batches, stream_documents

EOS = 0
# 2 files x 3 documents; document d has tokens [10 d + 1, 10 d + 2] (no EOS inside)
CORPUS = {d: (d // 3, d % 3, [10 * d + 1, 10 * d + 2]) for d in range(6)}


def _stream(order: list[int]) -> list[int]:
    return [t for d in order for t in [*CORPUS[d][2], EOS]]


def _batches(tokens: list[int], row: int = 3) -> list[list[list[int]]]:
    """One row per micro-batch (a single stream)."""
    return [[tokens[i:i + row]] for i in range(0, len(tokens) - row + 1, row)]


def _check(order: list[int]) -> list[tuple[set[int], int]]:
    return check_exactly_once(stream_documents(_batches(_stream(order)), 1, EOS), CORPUS)


def test_a_clean_stream_passes():
    assert _check([0, 1, 2, 3, 4, 5, 3, 4, 5, 0, 1]) == [({0, 1}, 1)]  # a pass, and a second one begun
    assert _check([0, 1, 2, 3, 4, 5, 3, 4, 5, 0, 1, 2, 0]) == [({0, 1}, 2)]  # files in a new order per pass


@pytest.mark.parametrize("order, error", [
    ([0, 2, 3, 4, 5], "gap"),  # document 1 skipped (e.g. a batch lost on resume)
    ([0, 1, 1, 2, 3, 4, 5], "twice"),  # a document replayed in the same pass
    ([0, 1, 2, 3, 5, 4], "gap"),  # out of order
])
def test_a_skip_or_repeat_fails(order, error):
    with pytest.raises(AssertionError, match=error):
        _check(order)


def test_a_cut_document_fails():
    tokens = _stream([0, 1, 2])
    del tokens[3]  # the first token of document 1
    with pytest.raises(AssertionError, match="not a whole corpus document"):
        check_exactly_once(stream_documents(_batches(tokens), 1, EOS), CORPUS)


def test_a_replayed_step_must_match_and_every_step_must_be_there():
    rec = [{"step": 0, "batch": 0, "rows": [[1, 2, 0]]}, {"step": 1, "batch": 0, "rows": [[11, 12, 0]]}]
    assert effective_batches(rec + [rec[1]], 2, 1) == [[[1, 2, 0]], [[11, 12, 0]]]
    with pytest.raises(AssertionError, match="differs"):
        effective_batches(rec + [{"step": 1, "batch": 0, "rows": [[21, 22, 0]]}], 2, 1)
    with pytest.raises(AssertionError, match="no record"):
        effective_batches(rec[:1], 2, 1)
