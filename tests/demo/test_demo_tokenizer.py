"""The demo tokenizer: Pythia-like special tokens, lossless byte-level BPE, loadable by AutoTokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from rewarm.data import build_val_rows
from rewarm.data.config import ValSetConfig
from rewarm.demo.corpus import PILE_SUBSETS, CorpusPaths, read_jsonl_zst
from rewarm.demo.tokenizer import build_tokenizer, padded_vocab_size


def test_special_tokens_like_gpt_neox(small_tokenizer: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(small_tokenizer))
    assert len(tok) == 512
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 0 == tok.eos_token_id == tok.bos_token_id
    assert tok.pad_token_id == 1
    assert tok("a<|endoftext|>b")["input_ids"][1] == 0  # the special token is never split


def test_lossless_on_prose_and_code(small_tokenizer: Path, small_corpus: CorpusPaths) -> None:
    tok = AutoTokenizer.from_pretrained(str(small_tokenizer))
    code = read_jsonl_zst(small_corpus.root / "slimpajama/validation/chunk1/example_holdout_0.jsonl.zst")[0]["text"]
    prose = read_jsonl_zst(small_corpus.root / "pile/val.jsonl.zst")[0]["text"]
    for text in (code[:3000], prose[:3000], "naïve café — 日本語 ✓"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert max(ids) < len(tok)


def test_trained_on_upstream_compresses_it_better(small_tokenizer: Path, small_corpus: CorpusPaths) -> None:
    tok = AutoTokenizer.from_pretrained(str(small_tokenizer))

    def chars_per_token(path: Path) -> float:
        text = "".join(r["text"] for r in read_jsonl_zst(path))[:50_000]
        return len(text) / len(tok(text, add_special_tokens=False)["input_ids"])

    prose = chars_per_token(small_corpus.root / "pile/val.jsonl.zst")
    code = chars_per_token(small_corpus.root / "slimpajama/validation/chunk1/example_holdout_0.jsonl.zst")
    assert prose > code


def test_stamp_reuses_and_retrains(small_tokenizer: Path, small_corpus: CorpusPaths, tmp_path: Path) -> None:
    files = sorted((small_corpus.root / "pile" / "train").glob("*.jsonl.zst"))
    out = build_tokenizer(files, tmp_path / "tok", vocab_size=512)
    assert (out / "tokenizer.json").read_text() == (small_tokenizer / "tokenizer.json").read_text()  # deterministic
    mtime = (out / "tokenizer.json").stat().st_mtime_ns
    build_tokenizer(files, out, vocab_size=512)
    assert (out / "tokenizer.json").stat().st_mtime_ns == mtime
    build_tokenizer(files, out, vocab_size=640)
    assert len(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]) == 640


def test_padded_vocab_size_like_pythia() -> None:
    assert padded_vocab_size(50277) == 50304
    assert padded_vocab_size(4000) == 4096 and padded_vocab_size(4096) == 4096 and padded_vocab_size(1) == 128


def test_rewarm_data_reads_the_pile_layout_with_subsets(small_tokenizer: Path, small_corpus: CorpusPaths,
                                                         tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(small_tokenizer))
    val = ValSetConfig(preset="pile", root=str(small_corpus.root / "pile"), role="upstream", max_tokens=20_000)
    rows = build_val_rows(val, tok, 32, tmp_path)
    assert rows.rows.shape[1] == 33 and rows.rows.shape[0] > 10
    assert set(rows.subset_names) <= set(PILE_SUBSETS) and rows.subset_names
