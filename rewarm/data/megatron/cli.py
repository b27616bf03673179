"""The config edge of ``rewarm tokenize``: the source and tokenizer of a run config, the files, the sidecar."""

from __future__ import annotations

import logging
from typing import Any

from rewarm.errors import ConfigError

logger = logging.getLogger(__name__)
# Documents per encode call: as the bare batch tokenizer's 1000 (a run's tokenize_batch_docs is smaller, to
# bound a DataLoader worker's memory; here one process holds ``workers + 1`` such batches).
TOKENIZE_BATCH_DOCS = 1000


def run_tokenize(cfg: Any, name: str, out: str, workers: int = 2, progress: bool = True) -> str:
    """Tokenize source ``name`` of ``cfg`` into ``out``.bin / .idx / .json; returns a one-line summary."""
    import numpy as np

    from rewarm.data.loader import eos_of, tokenizer_hash, vocab_len
    from rewarm.data.megatron.format import token_dtype
    from rewarm.data.megatron.tokenize import find_source, tokenize_files, write_sidecar
    from rewarm.data.sources import expand_paths
    from rewarm.data.tokenizer import load_tokenizer

    if workers < 1:
        raise ConfigError("--workers", f"must be >= 1, got {workers}")
    key, src = find_source(cfg.data, name)
    files = expand_paths(src.resolved_paths(), key=f"{key}.paths")
    m = cfg.model
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.tokenizer, m.trust_remote_code)
    result = tokenize_files(src, files, tokenizer, out, on_bad_record=cfg.data.on_bad_record,
                            batch_docs=max(cfg.data.tokenize_batch_docs, TOKENIZE_BATCH_DOCS), workers=workers,
                            progress=progress)
    dtype = np.dtype(token_dtype(vocab_len(tokenizer))).name
    write_sidecar(out, m.tokenizer or m.name_or_path, tokenizer_hash(tokenizer), files, result, dtype,
                  eos_of(tokenizer))
    return (f"wrote {out}.bin / .idx / .json: {result.documents:,} documents, {result.tokens:,} tokens ({dtype}), "
            f"{result.skipped} bad records skipped, {result.tokens_per_second:,.0f} tok/s")


def tokenize_main(argv: list[str]) -> int:
    """``rewarm tokenize CONFIG --source NAME --out PREFIX``."""
    from rewarm.config import config_parser, load_or_report
    from rewarm.errors import EXIT_CONFIG, DataError, report

    p = config_parser("tokenize", "Tokenize a configured text source once into GPT-NeoX / Megatron .bin + .idx.")
    p.add_argument("--source", required=True, help="the text source to read: train.NAME, val.NAME, or NAME (the training source "
                   "when data.train and data.val both have NAME)")
    p.add_argument("--out", required=True, help="output path prefix: writes PREFIX.bin, PREFIX.idx, PREFIX.json")
    p.add_argument("--workers", type=int, default=2, help="batches of documents encoded at once (default 2)")
    args = p.parse_args(argv)
    cfg = load_or_report(args.config, args.overrides)
    if cfg is None:
        return EXIT_CONFIG
    from rewarm.logs import setup_logging

    setup_logging(cfg.logging.level)  # which source a bare --source took, the bad records skipped
    try:
        print(run_tokenize(cfg, args.source, args.out, args.workers))
    except (ConfigError, DataError) as e:
        return report(e)
    return 0
