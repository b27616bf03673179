"""Helpers of the data tests: small corpora in the Pile / SlimPajama schemas (DESIGN.md §2), written as
jsonl / jsonl.zst / jsonl.gz / parquet, and document-id recovery from token rows."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

PILE_SETS = ["Pile-CC", "Wikipedia (en)", "Github", "ArXiv"]
SLIM_SETS = ["RedPajamaCommonCrawl", "RedPajamaC4", "RedPajamaGithub", "RedPajamaBook"]
WORDS = ("the of and to in is was for on that with as by at from his an were are which this be has or had "
         "river mountain data model train token stream rewarm replay forget adapt learn rate cosine").split()


def make_text(rng: random.Random, doc_id: int, n_words: int | None = None) -> str:
    """A small document whose first word is its id (so tests can recover which document a row holds)."""
    n = n_words if n_words is not None else rng.randint(3, 60)
    return f"doc{doc_id} " + " ".join(rng.choice(WORDS) for _ in range(n))


def records(n: int, *, start_id: int = 0, schema: str = "pile", seed: int = 0) -> list[dict[str, Any]]:
    """n records {"text", "meta": {<set name field>: ...}} with document ids start_id .. start_id + n - 1."""
    rng = random.Random(seed + start_id)
    field, sets = ("pile_set_name", PILE_SETS) if schema == "pile" else ("redpajama_set_name", SLIM_SETS)
    return [{"text": make_text(rng, start_id + i), "meta": {field: sets[(start_id + i) % len(sets)]}}
            for i in range(n)]


def write_jsonl(path: Path, recs: list[Any], raw_lines: dict[int, bytes] | None = None) -> Path:
    """Write records as JSON lines (compressed by suffix .zst / .gz); raw_lines replaces line i with bytes."""
    lines = [json.dumps(r).encode() if not isinstance(r, bytes) else r for r in recs]
    for i, raw in (raw_lines or {}).items():
        lines[i] = raw
    data = b"".join(line + b"\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    elif path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_parquet(path: Path, recs: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(recs), path)
    return path


def doc_ids(tokenizer: Any, rows: Any) -> list[int]:
    """Ids of the documents that start inside token rows (decoded text 'docN ...')."""
    import re

    out = []
    for row in rows:
        text = tokenizer.decode(row.tolist() if hasattr(row, "tolist") else row)
        out += [int(m) for m in re.findall(r"doc(\d+) ", text)]
    return out


