"""Shared helpers of the benchmarks: the machine, a local tokenizer + GPT-NeoX + jsonl.zst corpus (cached under
``.cache/bench``), robust timing (alternated rounds, medians) and the ``name=<x>`` last line.

Not a benchmark itself (``make bench`` runs every ``benchmarks/*.py``: this one prints a note and exits 0).
Each benchmark measures against a baseline *in the same process or command*, alternating the two so that
the noise of a shared machine falls on both; only ratios are reported as results.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".cache" / "bench"

# Words for synthetic documents: two "registers" so a BPE has something to merge; no external data needed.
WORDS = ("the model reads a book about history and language where every chapter explains a story of people "
         "cities rivers and kings who wrote letters def return import class self for in if else while print "
         "value list dict range len lambda yield try except raise with open data token stream shard").split()

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
# On a shared, oversubscribed machine OpenMP's spinning waits make multi-threaded CPU steps 10x slower and
# erratic (measured: 0.6 s -> 9 s per step with 2 threads at load 14 on 2 cores). Passive waiting avoids it;
# it applies to the rewarm stack and the baseline alike. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ---------------------------------------------------------------- machine and output


def machine() -> dict[str, Any]:
    """nproc, CPU model, torch version and threads, GPU name (when CUDA is there)."""
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_machine() -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()), flush=True)


def print_result(name: str, value: float, target: str) -> None:
    """The target status, then the ratio as the script's LAST line: ``name=<x>`` (what `make bench` collects)."""
    print(f"target: {name} {target}", flush=True)
    print(f"{name}={value:.4f}", flush=True)


def quiet_logs(lightning: bool = False) -> None:
    """Keep library chatter (Lightning's banners, progress bars, rewarm's INFO lines) out of the benchmark
    output. ``lightning``: import it first (it sets its loggers' levels when imported)."""
    if lightning:
        import lightning  # noqa: F401
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "rewarm", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")


# ---------------------------------------------------------------- timing


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def abba(r: int, a: Callable[[], float], b: Callable[[], float]) -> tuple[float, float]:
    """Round ``r`` of an alternation: a then b on even rounds, b then a on odd ones (ABBA order cancels a
    drift of the machine's speed); returns (a's measure, b's measure)."""
    if r % 2 == 0:
        x = a()
        return x, b()
    y = b()
    return a(), y


# ---------------------------------------------------------------- local world: corpus, tokenizer, model


def make_texts(n: int, seed: int, words_min: int = 20, words_max: int = 60) -> list[str]:
    """``n`` synthetic documents ``"<i>: w w w ..."`` (the index keeps every document distinct)."""
    rng = random.Random(seed)
    return [f"{i}: " + " ".join(rng.choices(WORDS, k=rng.randint(words_min, words_max))) for i in range(n)]


def write_jsonl_zst(path: Path, texts: Sequence[str], set_name: str = "Books3", meta_key: str = "pile_set_name",
                    subsets: int = 1) -> Path:
    """Pile-layout records ``{"text", "meta": {meta_key: set}}``; written atomically (tmp + rename)."""
    import zstandard

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps({"text": t, "meta": {meta_key: f"{set_name}{i % subsets}" if subsets > 1 else set_name}})
             for i, t in enumerate(texts))
    raw = ("\n".join(lines) + "\n").encode()
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(zstandard.ZstdCompressor(level=3, threads=-1).compress(raw))
    os.replace(tmp, path)
    return path


def build_tokenizer(out: Path, vocab_size: int = 1024) -> Any:
    """A byte-level BPE (``<|endoftext|>`` = 0, as in GPT-NeoX) trained on synthetic text, saved in ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (out / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(out)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(make_texts(5000, seed=7), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.save_pretrained(out)
    return fast


def neox_config(vocab_size: int, d: int, layers: int, heads: int, max_pos: int, ffn: int | None = None) -> Any:
    """A Pythia-shaped GPT-NeoX config: rotary 25 %, parallel residual, untied embeddings, no dropout."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn or 4 * d, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
        max_position_embeddings=max_pos, hidden_dropout=0.0, attention_dropout=0.0, bos_token_id=0, eos_token_id=0,
    )


def build_model_dir(out: Path, d: int, layers: int, heads: int, max_pos: int, vocab_size: int = 1024) -> Path:
    """Tokenizer + GPT-NeoX (``save_pretrained``) in ``out``, reused when already there. Vocab padded to 64."""
    import torch
    from transformers import GPTNeoXForCausalLM

    tok = build_tokenizer(out, vocab_size)
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        padded = (len(tok) + 63) // 64 * 64  # like Pythia's 50277 -> 50304
        GPTNeoXForCausalLM(neox_config(padded, d, layers, heads, max_pos)).save_pretrained(out)
    return out


def corpus(path: Path, n_docs: int, seed: int, **meta: Any) -> Path:
    """A jsonl.zst of ``n_docs`` synthetic documents, generated once (reused when present)."""
    if not path.is_file():
        write_jsonl_zst(path, make_texts(n_docs, seed), **meta)
    return path


def base_overrides(model_dir: Path, train_glob: str, out_dir: Path, seq_len: int, batch: int, steps: int,
                   name: str) -> list[str]:
    """A `rewarm train` config (as dotted overrides) with evaluation, checkpoints, wandb and progress off."""
    return [
        f"run.name={name}", f"run.out_dir={out_dir}", f"model.name_or_path={model_dir}",
        "model.attn_implementation=sdpa", f"data.seq_len={seq_len}", f"data.train.corpus.paths=[{train_glob}]",
        f"trainer.max_steps={steps}", f"trainer.micro_batch_size={batch}", "trainer.val_every_steps=0",
        "trainer.accelerator=cpu", "schedule.warmup_steps=2", "schedule.max_lr=3e-4", "schedule.min_lr=3e-5",
        "logging.wandb.mode=disabled", "logging.progress='off'", "logging.level=WARNING",
        "checkpoint.every_steps=0", "resume.mode=never",
    ]


def add_common_args(p: Any) -> None:
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test): the ratio means nothing")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where generated corpora / models are kept")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for both sides (default 1: stable on a shared machine)")


def set_threads(n: int) -> int:
    """Same torch threads for the measured stack and its baseline; returns n."""
    import torch

    torch.set_num_threads(n)
    return n


if __name__ == "__main__":
    print("benchmarks/_common.py: shared helpers, nothing to measure", file=sys.stderr)
