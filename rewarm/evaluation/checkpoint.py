"""``rewarm eval``: a model directory, run checkpoint or hub id on the configured validation sets (and lm-eval
tasks, ``rewarm.tasks``), as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewarm.config import RunConfig


def load_for_eval(cfg: RunConfig, path: Path, revision: str | None = None) -> Any:
    """An HF directory (config.json; with ``revision``: its subdirectory) or a hub id (no such local path) loads as
    pretrained; anything else as a rewarm run / checkpoint."""
    from rewarm.checkpoints.export import load_checkpoint_model
    from rewarm.model.load import load_model

    if revision is not None or (path / "config.json").is_file() or not path.exists():
        return load_model(str(path), revision, dtype="float32", attn_implementation="sdpa")
    model, _, _ = load_checkpoint_model(path)
    return model


def evaluate_checkpoint(cfg: RunConfig, path: Path, *, tasks: list[str] | None = None, limit: int | None = None,
                        revision: str | None = None) -> dict[str, Any]:
    """``{set: {loss, ppl, tokens, subsets}}``, plus ``"tasks": {task: {metric: value}}`` when lm-eval tasks are
    named (``tasks``, else ``cfg.tasks.names``; ``limit`` overrides ``tasks.limit``)."""
    import torch

    from rewarm.evaluation.perplexity import evaluate_rows, perplexity
    from rewarm.evaluation.valsets import build_val_sets
    from rewarm.logs import setup_logging
    from rewarm.model.load import load_tokenizer
    from rewarm.tasks.build import build_task_evaluator

    setup_logging(cfg.logging.level)
    m = cfg.model
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.tokenizer, m.trust_remote_code)
    task_eval = build_task_evaluator(cfg.tasks, tasks, limit)  # before the model: bad names refused first
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    model = load_for_eval(cfg, path, revision).to(device).eval()
    out: dict[str, dict[str, float]] = {}
    for vs in build_val_sets(cfg, tokenizer):
        res = evaluate_rows(model, vs.rows.rows, vs.rows.token_subsets, vs.rows.subset_names,
                            batch_size=cfg.trainer.micro_batch_size, device=device)
        entry: dict[str, Any] = {"loss": res.loss, "ppl": perplexity(res.loss), "tokens": res.tokens}
        subsets = {s: {"loss": a / n, "tokens": n} for s, (a, n) in res.subsets.items() if n}
        if subsets:
            entry["subsets"] = subsets
        out[vs.name] = entry
    if task_eval is not None:
        out["tasks"] = task_eval.evaluate(model, tokenizer).values
    return out
