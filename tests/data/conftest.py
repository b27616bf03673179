"""Shared fixtures of the data tests: a tiny byte-level BPE tokenizer and small corpora in the Pile /
SlimPajama schemas (DESIGN.md §2), written as jsonl / jsonl.zst / jsonl.gz / parquet."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """A ~300-token byte-level BPE with <|endoftext|> = 0 (like Pythia), as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    rng = random.Random(0)
    tok.train_from_iterator([make_text(rng, i) for i in range(300)], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    assert fast.eos_token_id == 0
    return fast


@pytest.fixture
def pile_dir(tmp_path: Path) -> Path:
    """A Pile layout: train/00..02.jsonl.zst (documents 0..299), val.jsonl.zst (1000..1099), test.jsonl.zst."""
    root = tmp_path / "pile"
    for shard in range(3):
        write_jsonl(root / "train" / f"{shard:02d}.jsonl.zst", records(100, start_id=100 * shard))
    write_jsonl(root / "val.jsonl.zst", records(100, start_id=1000))
    write_jsonl(root / "test.jsonl.zst", records(50, start_id=2000))
    return root


@pytest.fixture
def slim_dir(tmp_path: Path) -> Path:
    """A SlimPajama layout: train/chunk1..2/example_train_{0,1}.jsonl.zst (ids 5000..5399), validation/chunk1."""
    root = tmp_path / "slim"
    doc = 5000
    for chunk in (1, 2):
        for i in range(2):
            write_jsonl(root / "train" / f"chunk{chunk}" / f"example_train_{i}.jsonl.zst",
                        records(100, start_id=doc, schema="slim"))
            doc += 100
    write_jsonl(root / "validation" / "chunk1" / "example_holdout_0.jsonl.zst",
                records(120, start_id=9000, schema="slim"))
    return root


@pytest.fixture
def data_cfg() -> Callable[..., Any]:
    """Build a validated DataConfig from a plain dict (as the YAML would give it)."""
    from omegaconf import OmegaConf

    from rewarm.data.config import DataConfig

    def make(**values: Any) -> DataConfig:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.create(values)))
        assert isinstance(cfg, DataConfig)
        cfg.validate()
        return cfg

    return make
