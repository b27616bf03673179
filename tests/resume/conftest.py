"""Fixtures of the resume tests: a small training corpus of numbered documents (a few passes fit in a short
run, so "every document exactly once per pass" is checkable) next to the shared tiny model and val sets."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORDS_DOWN, write_jsonl_zst

FILES, DOCS_PER_FILE = 2, 8


def small_corpus(root: Path) -> dict[int, tuple[int, int, str]]:
    """Writes ``root/train/part{f}.jsonl.zst``; returns {doc id: (file, index in file, text)}. Texts start with
    their id ("12: ...") like tests/conftest.py's make_docs, and are short (5-10 words)."""
    rng = random.Random(7)
    corpus: dict[int, tuple[int, int, str]] = {}
    for f in range(FILES):
        docs = []
        for i in range(DOCS_PER_FILE):
            doc_id = f * DOCS_PER_FILE + i
            text = f"{doc_id}: " + " ".join(rng.choice(WORDS_DOWN) for _ in range(rng.randint(5, 10)))
            docs.append({"text": text, "meta": {"redpajama_set_name": "RedPajamaGithub"}})
            corpus[doc_id] = (f, i, text)
        write_jsonl_zst(root / "train" / f"part{f}.jsonl.zst", docs)
    return corpus


@pytest.fixture(scope="session")
def resume_world(tiny_world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny model and val sets of ``tiny_world``, a small training corpus, and its documents as tokens."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("resume_world")
    corpus = small_corpus(root)
    tok = AutoTokenizer.from_pretrained(tiny_world["model"])
    tokens = {i: (f, k, tok(text, add_special_tokens=False)["input_ids"]) for i, (f, k, text) in corpus.items()}
    return {"world": tiny_world, "train_glob": str(root / "train" / "*.jsonl.zst"), "corpus": tokens,
            "eos": tok.eos_token_id}
