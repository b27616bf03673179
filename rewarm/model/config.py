"""The ``model.*`` section of the run config: which causal LM, how it is loaded and built.

Standard library only (``rewarm check`` imports it); the loading itself is ``rewarm.model.load``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rewarm.errors import ConfigError

ATTN = ("auto", "flash_attention_2", "sdpa", "eager")
PRETRAINING_PRESETS = ("pythia",)
#: Pythia's peak LR by model size (Biderman et al. 2023, Table 6; EleutherAI/pythia configs): NeoX clamped cosine over
#: 143000 steps, 1 % warmup, floor 0.1 x peak.
PYTHIA_MAX_LR = {"14m": 1e-3, "31m": 1e-3, "70m": 1e-3, "160m": 6e-4, "410m": 3e-4, "1b": 3e-4, "1.4b": 2e-4,
                 "2.8b": 1.6e-4, "6.9b": 1.2e-4, "12b": 1.2e-4}
PYTHIA_STEPS = 143_000


@dataclass
class PretrainingConfig:
    """How the base model was pre-trained: its LR schedule and how far along it the loaded checkpoint is. The
    forecast (``rewarm forecast``) continues the base's forward and annealing areas with the run's. Unset: the base
    is taken as fully annealed."""

    preset: str | None = None
    """pythia: Pythia's own schedule, by the model's size (from name_or_path, or ``size``) and the revision's step."""
    size: str | None = None
    """preset=pythia: the model size (70m, 160m, 410m, 1b, 1.4b, 2.8b, 6.9b, 12b); default: read from name_or_path."""
    schedule: str | None = None
    """The base's schedule family (a ``schedule.name``: cosine | neox_cosine | linear | constant | wsd ...)."""
    max_lr: float | None = None
    """The base's peak LR."""
    min_lr: float | None = None
    """The base's floor LR (default 0.1 x max_lr)."""
    warmup_steps: int = 0
    """The base's linear warmup, in its optimizer steps."""
    total_steps: int | None = None
    """Length of the base's whole schedule in its optimizer steps (neox_cosine: also its decay T)."""
    steps_done: int | None = None
    """Steps of that schedule behind the loaded checkpoint; default: N of a revision ``stepN``, else total_steps."""

    @property
    def given(self) -> bool:
        return self.preset is not None or self.schedule is not None

    def validate(self) -> None:
        if self.preset is not None:
            _choice("preset", self.preset, PRETRAINING_PRESETS)
            if self.size is not None:
                _choice("size", self.size, tuple(PYTHIA_MAX_LR))
            return
        if self.schedule is None:
            for key in ("size", "max_lr", "min_lr", "total_steps", "steps_done"):
                if getattr(self, key) is not None:
                    raise ConfigError(key, "needs schedule (the base's schedule family) or preset=pythia")
            return
        if self.max_lr is None or not self.max_lr > 0:
            raise ConfigError("max_lr", f"the base's peak LR is required with schedule and must be > 0, got {self.max_lr}")
        if self.total_steps is None or self.total_steps < 1:
            raise ConfigError("total_steps", f"the length of the base's schedule is required and must be >= 1, got "
                              f"{self.total_steps}")
        if self.min_lr is not None and not 0 <= self.min_lr <= self.max_lr:
            raise ConfigError("min_lr", f"must be in [0, max_lr={self.max_lr}], got {self.min_lr}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ConfigError("warmup_steps", f"must be in [0, total_steps={self.total_steps}], got {self.warmup_steps}")
        if self.steps_done is not None and not 0 <= self.steps_done:
            raise ConfigError("steps_done", f"must be >= 0, got {self.steps_done}")


def revision_step(revision: str | None) -> int | None:
    """N of a revision named ``stepN`` (Pythia's checkpoints), else None."""
    m = re.fullmatch(r"step(\d+)", revision or "")
    return int(m.group(1)) if m else None


def pythia_size(name_or_path: str) -> str | None:
    """The size in a Pythia model name (``EleutherAI/pythia-410m-deduped`` -> 410m), else None."""
    m = re.search(r"pythia-(\d+(?:\.\d+)?[mb])", name_or_path.lower())
    return m.group(1) if m else None


@dataclass
class ModelConfig:
    name_or_path: str = "EleutherAI/pythia-410m"
    """Hugging Face hub id or local directory of a causal LM (GPT-NeoX for Pythia)."""
    revision: str | None = None
    """Hub revision (e.g. step143000); for a local directory, the subdirectory <name_or_path>/<revision>."""
    init: str = "pretrained"
    """pretrained: load the weights; scratch: same architecture, fresh weights (seeded by run.seed)."""
    tokenizer: str | None = None
    """Tokenizer hub id or directory; default: the model's."""
    dtype: str = "float32"
    """Dtype of the weights as loaded: float32 | bfloat16 | float16."""
    attn_implementation: str = "auto"
    """auto (flash-attn on CUDA when installed, else sdpa) | flash_attention_2 | sdpa | eager."""
    activation_checkpointing: bool = False
    """Recompute activations in backward (gradient checkpointing) to save memory."""
    compile: bool = False
    """torch.compile the model."""
    trust_remote_code: bool = False
    """Allow model code from the hub repository (off unless set)."""
    pretraining: PretrainingConfig = field(default_factory=PretrainingConfig)
    """The base's own pre-training schedule (used by ``rewarm forecast``; unset: the base is taken as fully annealed)."""

    def validate(self) -> None:
        if not self.name_or_path:
            raise ConfigError("name_or_path", "must name a hub id or a local directory")
        _choice("init", self.init, ("pretrained", "scratch"))
        _choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        _choice("attn_implementation", self.attn_implementation, ATTN)
        try:
            self.pretraining.validate()
            self._check_pythia()
        except ConfigError as e:
            raise ConfigError(f"pretraining.{e.key}", e.message) from None

    def _check_pythia(self) -> None:
        p = self.pretraining
        if p.preset != "pythia":
            return
        size = p.size or pythia_size(self.name_or_path)
        if size not in PYTHIA_MAX_LR:
            raise ConfigError("size", f"cannot tell the Pythia size from name_or_path={self.name_or_path!r}: give "
                              f"model.pretraining.size ({', '.join(PYTHIA_MAX_LR)})")
        step = revision_step(self.revision)
        if self.revision is not None and step is None:
            raise ConfigError("preset", f"Pythia's revisions are stepN; model.revision={self.revision!r} is not")
        if step is not None and step > PYTHIA_STEPS:
            raise ConfigError("preset", f"Pythia trained {PYTHIA_STEPS} steps; model.revision={self.revision!r} is past them")


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")
