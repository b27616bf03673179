"""Shared fixtures: a tiny GPT-NeoX (Pythia-shaped) saved with save_pretrained, its tokenizer, and small
Pile / SlimPajama-layout corpora, built locally (no hub)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS_UP = ("the model reads a book about history and language where every chapter explains a story of "
            "people cities rivers and kings who wrote letters").split()
WORDS_DOWN = ("def return import class self for in if else while print value list dict range len "
              "lambda yield try except raise with open").split()


def make_docs(words: list[str], n: int, seed: int, set_name: str, meta_key: str, subsets: int = 1) -> list[dict]:
    import random

    rng = random.Random(seed)
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
        sub = f"{set_name}{i % subsets}" if subsets > 1 else set_name
        docs.append({"text": f"{i}: {text}", "meta": {meta_key: sub}})
    return docs


def write_jsonl_zst(path: Path, docs: list[dict]) -> Path:
    import zstandard

    path.parent.mkdir(parents=True, exist_ok=True)
    raw = "".join(json.dumps(d) + "\n" for d in docs).encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    return path


def build_tokenizer(texts: list[str], out: Path, vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.save_pretrained(out)
    return fast


def build_tiny_gpt_neox(out: Path, vocab_size: int, seed: int = 0):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False, max_position_embeddings=256,
        hidden_dropout=0.0, attention_dropout=0.0, bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config)
    model.save_pretrained(out)
    return model


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> dict[str, Path]:
    """A tiny Pythia-like model dir (with tokenizer) and Pile / SlimPajama-layout data."""
    root = tmp_path_factory.mktemp("world")
    up = make_docs(WORDS_UP, 120, 1, "Books3", "pile_set_name", subsets=2)
    down = make_docs(WORDS_DOWN, 120, 2, "RedPajamaGithub", "redpajama_set_name", subsets=2)
    write_jsonl_zst(root / "pile/train/00.jsonl.zst", up[:80])
    write_jsonl_zst(root / "pile/train/01.jsonl.zst", up[80:100])
    write_jsonl_zst(root / "pile/val.jsonl.zst", up[100:])
    write_jsonl_zst(root / "slimpajama/train/chunk1/example_train_0.jsonl.zst", down[:50])
    write_jsonl_zst(root / "slimpajama/train/chunk1/example_train_1.jsonl.zst", down[50:100])
    write_jsonl_zst(root / "slimpajama/validation/chunk1/example_holdout_0.jsonl.zst", down[100:])
    model_dir = root / "model"
    tok = build_tokenizer([d["text"] for d in up + down], model_dir)
    vocab = ((len(tok) + 63) // 64) * 64  # padded like Pythia's 50277 -> 50304
    build_tiny_gpt_neox(model_dir, vocab)
    return {"root": root, "model": model_dir}


def tiny_overrides(world: dict[str, Path], out_dir: Path, **extra: object) -> list[str]:
    r = world["root"]
    base = {
        "run.name": "t", "run.out_dir": str(out_dir), "model.name_or_path": str(world["model"]),
        "data.seq_len": 16, "data.num_workers": 0,
        "data.train.slimpajama.paths": f"[{r}/slimpajama/train/chunk1/*.jsonl.zst]",
        "data.val.pile.paths": f"[{r}/pile/val.jsonl.zst]", "data.val.pile.role": "upstream",
        "data.val.pile.max_tokens": 256, "data.val.pile.subset_field": "meta.pile_set_name",
        "data.val.slimpajama.paths": f"[{r}/slimpajama/validation/chunk1/*.jsonl.zst]",
        "data.val.slimpajama.role": "downstream", "data.val.slimpajama.max_tokens": 256,
        "trainer.max_steps": 6, "trainer.micro_batch_size": 2, "trainer.val_every_steps": 3,
        "schedule.warmup_steps": 2, "schedule.max_lr": 1e-3, "schedule.min_lr": 1e-4,
        "logging.wandb.mode": "offline", "logging.progress": "lines", "checkpoint.every_steps": 0,
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture()
def empty_config(tmp_path) -> Path:
    p = tmp_path / "empty.yaml"
    p.write_text("{}\n")
    return p




# A process group's environment (what Lightning's launcher, DeepSpeed or torchrun write into os.environ) set by one
# in-process test must not reach the next: lm-eval's accelerate then takes a one-process run for a distributed one
# (`RANK expected`), and a job submitted with the inherited environment starts with another rank layout.
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "NODE_RANK",
            "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "CROSS_RANK", "CROSS_SIZE", "PMI_SIZE",
            "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_SESSION_DIST_ENV = {k: os.environ.get(k) for k in DIST_ENV}  # as the suite started (module fixtures included)


@pytest.fixture(autouse=True)
def _no_process_group_env_leaks():
    yield
    for k, v in _SESSION_DIST_ENV.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
