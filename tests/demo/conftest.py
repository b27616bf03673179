"""Shared fixtures of the demo tests: small corpora and a small tokenizer, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.demo.corpus import CorpusPaths, CorpusSpec, build_corpora
from rewarm.demo.tokenizer import build_tokenizer

SMALL = CorpusSpec(max_upstream_bytes=250_000, max_downstream_bytes=250_000, heldout_fraction=0.15)


@pytest.fixture(scope="session")
def small_spec() -> CorpusSpec:
    return SMALL


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusPaths:
    return build_corpora(tmp_path_factory.mktemp("demo") / "corpus", SMALL)


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus: CorpusPaths) -> Path:
    files = sorted((small_corpus.root / "pile" / "train").glob("*.jsonl.zst"))
    return build_tokenizer(files, small_corpus.root.parent / "tokenizer", vocab_size=600)
