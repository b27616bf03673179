"""Shared fixtures of the data tests: a tiny byte-level BPE tokenizer (<|endoftext|> = 0 like Pythia),
corpora in the Pile / SlimPajama layouts, and a DataConfig builder."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from data_helpers import make_text, records, write_jsonl


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
    """Build a validated DataConfig from a plain dict (as the YAML would give it). ``streams`` defaults to 1
    here (the packed order of one reader, what most tests check); tests of several ranks, workers or streams
    give data.streams."""
    from omegaconf import OmegaConf

    from rewarm.data.config import DataConfig

    def make(**values: Any) -> DataConfig:
        values.setdefault("streams", 1)
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.create(values)))
        assert isinstance(cfg, DataConfig)
        cfg.validate()
        return cfg

    return make
