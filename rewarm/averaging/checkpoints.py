"""Checkpoint averaging (``rewarm average``; LAWA, Sanyal et al. 2023): the weighted mean of several checkpoints of
one run, written as a Hugging Face directory.

Which checkpoints: every source is a run directory (all its checkpoints) or a checkpoint directory; together
they are taken oldest step first, ``last`` keeps the newest K. Weights go with them in that order (normalised to
sum 1; default equal). Each checkpoint is checked (manifest, sizes, sha256) and loaded weights-only like ``rewarm
export`` does (Lightning files, DeepSpeed ZeRO shards, FSDP2 distributed checkpoints), one at a time; the sum is
kept in float64 (one rounding, at the end) and written in the run's ``model.dtype``.

Refused (``ResumeError``, exit 2), naming them: checkpoints of different runs or of different models, a corrupt or
hostile checkpoint, a weights count that differs from the checkpoints', more checkpoints asked for than there are.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewarm.checkpoints.store import MANIFEST, STATE, invalid_reason, list_checkpoints
from rewarm.errors import ConfigError, ResumeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """The checkpoints to average (oldest step first), their normalised weights, and the run they belong to."""

    checkpoints: list[Path]
    weights: list[float]
    run_dir: Path


def parse_weights(text: str) -> list[float]:
    """``"1,2,3"`` -> [1.0, 2.0, 3.0]; each finite and >= 0, at least one > 0 (else ConfigError on ``--weights``)."""
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise ConfigError("--weights", f"give numbers separated by commas (e.g. 1,1,2); got {text!r}") from None
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError("--weights", f"weights must be finite, >= 0 and not all 0; got {text!r}")
    return weights


def normalised(weights: list[float] | None, n: int) -> list[float]:
    """``weights`` scaled to sum 1 (None: n equal weights); refused when their count is not ``n``."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ResumeError(f"--weights gives {len(weights)} weights for {n} checkpoints: give one weight per "
                          "checkpoint (oldest step first)")
    total = sum(weights)
    return [w / total for w in weights]


def checkpoints_of(source: Path) -> list[Path]:
    """A run directory's checkpoint directories, or the checkpoint directory itself (also given as its
    ``state.ckpt``); anything else is refused."""
    if source.name == STATE:
        source = source.parent
    if (source / "checkpoints").is_dir() and not (source / MANIFEST).exists():
        found = list_checkpoints(source / "checkpoints")
        if not found:
            raise ResumeError(f"{source} has no checkpoint under checkpoints/")
        return found
    if (source / MANIFEST).exists() or (source / STATE).exists():
        return [source]
    raise ResumeError(f"{source} is neither a run directory (with checkpoints/) nor a checkpoint directory")


def step_of(ckpt: Path) -> int:
    name = ckpt.name
    return int(name[4:]) if name.startswith("step") and name[4:].isdigit() else -1


def select(sources: list[Path], last: int | None = None, weights: list[float] | None = None) -> Selection:
    """The checkpoints of ``sources`` (oldest first, each once), the newest ``last`` of them, their weights, and
    their run; refusals as the module says. Only the selected checkpoints are checked (deeply: sha256)."""
    found: dict[Path, Path] = {}
    for source in sources:
        for ckpt in checkpoints_of(Path(source)):
            found.setdefault(ckpt.resolve(), ckpt)
    ckpts = sorted(found.values(), key=lambda c: (step_of(c), str(c)))
    if last is not None:
        if last < 1:
            raise ConfigError("--last", f"must be >= 1; got {last}")
        if last > len(ckpts):
            raise ResumeError(f"--last {last} asks for more checkpoints than there are: {len(ckpts)} "
                              f"({', '.join(c.name for c in ckpts)}) in {', '.join(map(str, sources))}")
        ckpts = ckpts[-last:]
    for ckpt in ckpts:
        reason = invalid_reason(ckpt, deep=True)
        if reason is not None:
            raise ResumeError(f"{ckpt} is not a valid rewarm checkpoint ({reason}): refusing to average it "
                              "(name the checkpoints to average, leaving it out)")
    run_dir = same_run(ckpts)
    return Selection(ckpts, normalised(weights, len(ckpts)), run_dir)


def same_run(ckpts: list[Path]) -> Path:
    """The run directory all ``ckpts`` belong to; checkpoints of different runs are refused, naming the runs and
    their models."""
    runs: dict[Path, list[Path]] = {}
    for ckpt in ckpts:
        runs.setdefault(ckpt.resolve().parent.parent, []).append(ckpt)
    if len(runs) > 1:
        parts = [f"{run} (model {_model_name(run)}: {', '.join(c.name for c in cs)})" for run, cs in runs.items()]
        raise ResumeError("refusing to average checkpoints of different runs: " + "; ".join(parts)
                          + ". Average checkpoints of one run (an average of different runs' weights is no model "
                          "of either)")
    run_dir = next(iter(runs))
    if not (run_dir / "config.yaml").is_file():
        raise ResumeError(f"{ckpts[0]}: its run directory {run_dir} has no config.yaml (the model to load it into)")
    return run_dir


def _model_name(run_dir: Path) -> str:
    """The run's ``model.name_or_path`` (and revision) as its config.yaml says, for messages."""
    try:
        from rewarm.config import load

        m = load(run_dir / "config.yaml", ["resume=never"]).model
        return m.name_or_path + (f"@{m.revision}" if m.revision else "")
    except Exception as e:  # a message only: never let it hide the refusal
        return f"unknown ({type(e).__name__})"


def average_state_dicts(ckpts: list[Path], weights: list[float]) -> dict[str, Any]:
    """Σ w_i θ_i over the checkpoints' weights (Hugging Face keys), loaded one at a time, summed in float64.
    Weights of another model (other names or shapes than the first checkpoint's) are refused."""
    import torch

    from rewarm.checkpoints.export import model_state_dict

    total: dict[str, Any] = {}
    for i, (ckpt, w) in enumerate(zip(ckpts, weights, strict=True)):
        sd = model_state_dict(ckpt)
        if i == 0:
            total = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in sd.items()}
        _check_same_model(ckpts[0], total, ckpt, sd)
        for k, v in sd.items():
            total[k].add_(v.detach().to(torch.float64), alpha=w)
        del sd
        log.info("averaged %s (weight %.6g)", ckpt, w)
    return total


def _check_same_model(first: Path, total: dict[str, Any], ckpt: Path, sd: dict[str, Any]) -> None:
    if set(sd) != set(total):
        diff = sorted(set(sd) ^ set(total))[:5]
        raise ResumeError(f"refusing to average {first} and {ckpt}: weights of different models (keys differ: {diff})")
    shapes = [k for k, v in sd.items() if tuple(v.shape) != tuple(total[k].shape)]
    if shapes:
        k = shapes[0]
        raise ResumeError(f"refusing to average {first} and {ckpt}: weights of different models ({k}: "
                          f"{tuple(total[k].shape)} vs {tuple(sd[k].shape)})")


def average_checkpoints(sources: list[Path], out: Path, *, last: int | None = None,
                        weights: list[float] | None = None) -> Selection:
    """Average the selected checkpoints (``select``) into ``out``: ``save_pretrained`` of the run's model with the
    averaged weights in the run's ``model.dtype``, and its tokenizer."""
    import torch

    from rewarm.checkpoints.export import load_weights, run_model

    sel = select(sources, last, weights)
    averaged = average_state_dicts(sel.checkpoints, sel.weights)
    model, tokenizer, cfg = run_model(sel.run_dir)
    dtype = getattr(torch, cfg.model.dtype)
    model.to(dtype)
    load_weights(model, {k: v.to(dtype) for k, v in averaged.items()}, sel.checkpoints[-1])
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sel


def export_averaged(source: Path, out: Path) -> Path:
    """``rewarm export --averaged``: the EMA a checkpoint holds (a run directory: its newest valid checkpoint), as
    a Hugging Face directory in the run's ``model.dtype`` with its tokenizer. A checkpoint without an EMA (a run
    with averaging off, or before ``averaging.start_step``) is refused."""
    import torch

    from rewarm.averaging.state import ema_info, read_ema
    from rewarm.checkpoints.export import load_weights, model_state_dict, resolve_checkpoint, run_model

    ckpt, run_dir = resolve_checkpoint(source)
    if ema_info(ckpt) is None:
        raise ResumeError(f"{ckpt} holds no averaged weights: the run had no averaging (set averaging.ema_decay or "
                          "averaging.ema_halflife_tokens), or it saved this checkpoint before its first EMA update "
                          "(averaging.start_step). Export the raw weights without --averaged")
    model, tokenizer, cfg = run_model(run_dir)
    if any(name in model.state_dict() for name, _ in model.named_buffers()):  # persistent buffers: the checkpoint's
        load_weights(model, model_state_dict(ckpt), ckpt)
    set_parameters(model, read_ema(ckpt), ckpt)
    model.to(getattr(torch, cfg.model.dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("exported the EMA of %s to %s", ckpt, out)
    return out


def set_parameters(model: Any, weights: dict[str, Any], source: Path) -> None:
    """Copy ``weights`` (every parameter of ``model`` by name, nothing else, the same shapes) into the model."""
    import torch

    params = dict(model.named_parameters())
    missing, extra = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    wrong = [k for k in params.keys() & weights.keys() if tuple(params[k].shape) != tuple(weights[k].shape)]
    if missing or extra or wrong:
        raise ResumeError(f"{source}: the averaged weights do not match the model (missing {missing[:5]}, "
                          f"unexpected {extra[:5]}, other shapes {wrong[:5]})")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
