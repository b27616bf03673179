"""A real poisoned batch: a copy of the tiny model whose input embedding of one token ("~", in no other
document) is NaN, and a training file with one document holding that token among normal ones. The rows that
hold it give a NaN loss; every other row trains normally."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import WORDS_DOWN, make_docs, write_jsonl_zst

POISON_TEXT = "~~~~"


def build_poisoned_world(world: dict[str, Path], root: Path, *, docs: int = 24, poison_at: int = 1,
                         files: int = 1) -> dict[str, Path]:
    """{"model": poisoned model dir, "train": a glob of the training files}; the poison document is number
    ``poison_at`` of the first file (``files`` files share the normal documents: one per rank)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = root / "poisoned_model"
    shutil.copytree(world["model"], model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    normal = make_docs(WORDS_DOWN, docs, 5, "RedPajamaGithub", "redpajama_set_name")
    poison_ids = set(tok(POISON_TEXT, add_special_tokens=False)["input_ids"])
    assert not any(poison_ids & set(tok(d["text"])["input_ids"]) for d in normal)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight[sorted(poison_ids)] = float("nan")
    model.save_pretrained(model_dir)
    docs_out = [*normal[:poison_at], {"text": POISON_TEXT, "meta": {"redpajama_set_name": "RedPajamaGithub"}},
                *normal[poison_at:]]
    per_file = len(docs_out) // files
    for f in range(files):
        write_jsonl_zst(root / "poisoned" / f"train{f}.jsonl.zst", docs_out[f * per_file:(f + 1) * per_file])
    return {"model": model_dir, "train": root / "poisoned" / "*.jsonl.zst"}
