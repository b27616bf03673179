"""The ``datasets`` streaming reader: Hugging Face dataset ids, remote paths, or any source with
``data.reader=datasets``. Exact resume through ``IterableDataset.state_dict()`` (DESIGN.md §3); no shuffle
buffer (it does not resume exactly): the files of each pass are visited in a seeded order instead.

Reader ``index`` of ``readers`` reads its part through ``split_dataset_by_node`` (whole files when their
number divides ``readers``, else one example in ``readers``), so parts are disjoint and cover the source.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from rewarm.data.sources import Doc, first_warning, get_field
from rewarm.errors import DataError

logger = logging.getLogger(__name__)

_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".zst": "json", ".gz": "json"}


def builder_for(files: list[str]) -> str:
    """The `datasets` packaged builder for a list of files (all of one kind)."""
    kinds = {next((b for s, b in _BUILDERS.items() if f.endswith(s)), "json") for f in files}
    if len(kinds) != 1:
        raise DataError(f"the datasets reader needs files of one kind (json lines or parquet), got {sorted(kinds)}")
    return kinds.pop()


def open_stream(files: list[str], hf_dataset: str | None, hf_split: str) -> Any:
    """A streaming IterableDataset of the files (json / parquet builder) or of a hub dataset id."""
    import datasets

    if hf_dataset:
        return datasets.load_dataset(hf_dataset, split=hf_split, streaming=True)
    return datasets.load_dataset(builder_for(files), data_files=list(files), split="train", streaming=True)


class HFReader:
    """(position before the document, Doc) of reader ``index`` of ``readers``; ``position()`` = where the
    next record starts. A position is ``{"state": IterableDataset.state_dict() before a batch of
    examples, "skip": examples of that batch already read}`` (taking a state per batch, not per example,
    keeps the reader fast)."""

    BATCH = 256  # examples per `datasets` batch

    def __init__(self, files: list[str], hf_dataset: str | None, hf_split: str, text_field: str,
                 subset_field: str | None, subsets: frozenset[str] | None, on_bad_record: str, index: int,
                 readers: int, start: dict | None) -> None:
        from datasets.distributed import split_dataset_by_node

        self.text_field, self.subset_field, self.subsets = text_field, subset_field, subsets
        self.on_bad_record, self.skipped, self._n = on_bad_record, 0, 0
        self.name = hf_dataset or (files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)")
        ds = open_stream(files, hf_dataset, hf_split)
        self.ds = split_dataset_by_node(ds, rank=index, world_size=readers) if readers > 1 else ds
        self._skip = 0
        if start:
            self.ds.load_state_dict(start["state"])
            self._skip = int(start["skip"])
        self._pos = {"state": self.ds.state_dict(), "skip": self._skip}

    def position(self) -> dict:
        return self._pos

    def __iter__(self) -> Iterator[tuple[dict, Doc]]:
        before, skip = self._pos["state"], self._skip
        try:
            for batch in self.ds.iter(batch_size=self.BATCH):  # .iter: no torch-worker re-sharding
                keys = list(batch)
                for j in range(skip, len(batch[keys[0]]) if keys else 0):
                    doc = self._doc({k: batch[k][j] for k in keys})
                    self._n += 1
                    self._pos = {"state": before, "skip": j + 1}
                    if doc is not None:
                        yield {"state": before, "skip": j}, doc
                before, skip = self.ds.state_dict(), 0
                self._pos = {"state": before, "skip": 0}
        except (OSError, ValueError, TypeError) as e:  # the json builder fails a whole block on malformed JSON
            raise DataError(f"{self.name}: the datasets reader failed after {self._n} examples ({type(e).__name__}: "
                            f"{e}); malformed JSON cannot be skipped by `datasets`: use data.reader=plain for "
                            "local files, or fix the file") from e

    def _doc(self, example: dict) -> Doc | None:
        text = get_field(example, self.text_field)
        reason = None
        if not isinstance(text, str):
            reason = f"field {self.text_field!r} is missing or not a string"
        elif not text.strip():
            reason = f"empty text in field {self.text_field!r}"
        if reason:
            if self.on_bad_record == "error":
                raise DataError(f"{self.name}: example {self._n}: {reason}")
            if first_warning("bad record", self.name):
                logger.warning("%s: example %d: skipping bad record: %s", self.name, self._n, reason)
            self.skipped += 1
            return None
        subset = get_field(example, self.subset_field) if self.subset_field else None
        subset = None if subset is None else str(subset)
        if self.subsets is not None and subset not in self.subsets:
            return None
        return Doc(self._n, text, subset)
