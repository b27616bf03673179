"""Shared fixtures of the demo tests: the tiny demo's corpora and tokenizer, built once per session
(the smoke test's ``run_demo`` finds and reuses them in the same cache directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.demo.corpus import CorpusPaths, CorpusSpec, build_corpora
from rewarm.demo.pipeline import DemoPreset, tiny_preset
from rewarm.demo.tokenizer import build_tokenizer


@pytest.fixture(scope="session")
def tiny() -> DemoPreset:
    return tiny_preset()


@pytest.fixture(scope="session")
def small_spec(tiny: DemoPreset) -> CorpusSpec:
    return tiny.corpus


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture(scope="session")
def small_corpus(demo_cache: Path, small_spec: CorpusSpec) -> CorpusPaths:
    return build_corpora(demo_cache / "corpus", small_spec)


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus: CorpusPaths, tiny: DemoPreset) -> Path:
    files = sorted((small_corpus.root / "pile" / "train").glob("*.jsonl.zst"))
    return build_tokenizer(files, small_corpus.root.parent / "tokenizer", vocab_size=tiny.vocab_size)
