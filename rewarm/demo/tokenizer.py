"""A small byte-level BPE tokenizer shaped like Pythia's (GPT-NeoX-20B's), trained on the upstream corpus only.

Like GPT-NeoX-20B: byte-level pre-tokenization without a prefix space, ``<|endoftext|>`` = id 0 (also BOS
and UNK), ``<|padding|>`` = id 1; saved as a transformers tokenizer directory (``tokenizer.json`` +
``tokenizer_config.json``) that ``AutoTokenizer.from_pretrained`` loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<|padding|>"
SPECIAL_TOKENS = (EOS, PAD)  # ids 0 and 1, as in GPT-NeoX-20B


def iter_texts(paths: list[Path]) -> Iterator[str]:
    """The ``text`` field of every record of the given ``.jsonl.zst`` files, in order."""
    from rewarm.demo.corpus import read_jsonl_zst

    for path in paths:
        for record in read_jsonl_zst(path):
            yield record["text"]


def train_bpe(texts: Iterator[str], vocab_size: int) -> object:
    """A byte-level BPE ``tokenizers.Tokenizer`` with ``vocab_size`` entries, special tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no text is ever unknown
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: object, out_dir: Path, model_max_length: int) -> Path:
    """Wrap in ``PreTrainedTokenizerFast`` (EOS = BOS = UNK = ``<|endoftext|>``) and ``save_pretrained``."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return out_dir


def build_tokenizer(train_files: list[Path], out_dir: Path, vocab_size: int = 4000, model_max_length: int = 2048) -> Path:
    """Train on ``train_files`` and save to ``out_dir``; reused when its stamp matches inputs and size."""
    stamp = _stamp(train_files, vocab_size, model_max_length)
    stamp_file = out_dir / "rewarm_demo_stamp.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        log.info("tokenizer: reusing %s", out_dir)
        return out_dir
    tok = train_bpe(iter_texts(train_files), vocab_size)
    save_tokenizer(tok, out_dir, model_max_length)
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n")
    log.info("tokenizer: trained %d-entry byte-level BPE on %d files -> %s", vocab_size, len(train_files), out_dir)
    return out_dir


def _stamp(files: list[Path], vocab_size: int, model_max_length: int) -> dict:
    """Identifies the inputs: file contents' digest plus the sizes (the cache key of a trained tokenizer)."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).read_bytes())
    return {"inputs": h.hexdigest()[:16], "vocab_size": vocab_size, "model_max_length": model_max_length}


def padded_vocab_size(n: int, multiple: int = 128) -> int:
    """Embedding rows for ``n`` tokens rounded up to a multiple (Pythia: 50277 -> 50304)."""
    return -(-n // multiple) * multiple
