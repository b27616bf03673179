"""The ``model.*`` section of the run config: which causal LM, how it is loaded and built.

Standard library only (``rewarm check`` imports it); the loading itself is ``rewarm.model.load``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rewarm.errors import ConfigError

ATTN = ("auto", "flash_attention_2", "sdpa", "eager")


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

    def validate(self) -> None:
        if not self.name_or_path:
            raise ConfigError("name_or_path", "must name a hub id or a local directory")
        _choice("init", self.init, ("pretrained", "scratch"))
        _choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        _choice("attn_implementation", self.attn_implementation, ATTN)


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")
