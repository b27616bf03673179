"""The ``averaging.*`` section of the run config: an EMA of the weights, updated in the training loop.

Standard library only (``rewarm check`` imports it); the EMA itself is ``rewarm.averaging.averager``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewarm.errors import ConfigError

DEVICES = ("same", "cpu")


@dataclass
class AveragingConfig:
    ema_decay: float | None = None
    """EMA decay d per update: avg <- d * avg + (1 - d) * weights, in fp32 (0 <= d < 1). Set this or
    ema_halflife_tokens (not both); neither = no averaging."""
    ema_halflife_tokens: int | None = None
    """EMA halflife in training tokens h: d = 0.5 ** (tokens per update / h), tokens per update = global batch
    rows x seq_len x every_steps. Set this or ema_decay (not both)."""
    every_steps: int = 1
    """Update the EMA every N optimizer steps (counted from start_step)."""
    start_step: int = 0
    """First step whose weights enter the EMA (its first update sets avg = weights); also where an EMA turned on
    at a resume starts, if later."""
    device: str = "same"
    """same (the EMA lives beside the weights: every DDP rank keeps a copy; FSDP2 / ZeRO shards it like the
    weights) | cpu (host memory; under DDP on rank 0 only)."""

    @property
    def enabled(self) -> bool:
        return self.ema_decay is not None or self.ema_halflife_tokens is not None

    def validate(self) -> None:
        if self.ema_decay is not None and self.ema_halflife_tokens is not None:
            raise ConfigError("ema_decay", "averaging.ema_decay and averaging.ema_halflife_tokens are both set: "
                              "give one of the two")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay", f"must be in [0, 1), got {self.ema_decay} (e.g. 0.999)")
        if self.ema_halflife_tokens is not None and self.ema_halflife_tokens <= 0:
            raise ConfigError("ema_halflife_tokens", f"must be > 0 tokens, got {self.ema_halflife_tokens}")
        if self.every_steps < 1:
            raise ConfigError("every_steps", f"must be >= 1, got {self.every_steps}")
        if self.start_step < 0:
            raise ConfigError("start_step", f"must be >= 0, got {self.start_step}")
        if self.device not in DEVICES:
            raise ConfigError("device", f"must be one of {', '.join(DEVICES)}, got {self.device!r}")

    def decay(self, tokens_per_step: int) -> float:
        """The decay per update: ``ema_decay``, or 0.5 ** (tokens per update / ema_halflife_tokens)."""
        if self.ema_decay is not None:
            return float(self.ema_decay)
        if self.ema_halflife_tokens is None:
            raise ValueError("averaging is off")
        return 0.5 ** (tokens_per_step * self.every_steps / self.ema_halflife_tokens)
