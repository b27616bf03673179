"""``rewarm eval``: a model directory or run checkpoint on the configured validation sets, as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewarm.config import RunConfig


def load_for_eval(cfg: RunConfig, path: Path) -> Any:
    """An HF directory (config.json) loads as pretrained; anything else as a rewarm run / checkpoint."""
    from rewarm.export import load_checkpoint_model
    from rewarm.model import load_model

    if (path / "config.json").is_file():
        return load_model(str(path), None, dtype="float32", attn_implementation="sdpa")
    model, _, _ = load_checkpoint_model(path)
    return model


def evaluate_checkpoint(cfg: RunConfig, path: Path) -> dict[str, dict[str, float]]:
    import torch

    from rewarm.evaluate import evaluate_rows, perplexity
    from rewarm.model import load_tokenizer
    from rewarm.train import build_val_sets, setup_logging

    setup_logging(cfg.logging.level)
    m = cfg.model
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.tokenizer, m.trust_remote_code)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    model = load_for_eval(cfg, path).to(device).eval()
    out: dict[str, dict[str, float]] = {}
    for vs in build_val_sets(cfg, tokenizer):
        res = evaluate_rows(model, vs.rows.rows, vs.rows.token_subsets, vs.rows.subset_names,
                            batch_size=cfg.trainer.micro_batch_size, device=device)
        entry: dict[str, Any] = {"loss": res.loss, "ppl": perplexity(res.loss), "tokens": res.tokens}
        subsets = {s: {"loss": a / n, "tokens": n} for s, (a, n) in res.subsets.items() if n}
        if subsets:
            entry["subsets"] = subsets
        out[vs.name] = entry
    return out
