"""The ``checkpoint.*`` and ``resume.*`` sections of the run config: when a run saves, what it keeps, where it
resumes from.

Standard library only (``rewarm check`` imports it); saving and resuming are ``rewarm.checkpoints.store`` and
``rewarm.checkpoints.resume``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewarm.errors import ConfigError


@dataclass
class CheckpointConfig:
    every_steps: int = 1000
    """Save a resumable checkpoint every N optimizer steps (0 = only at the end and on signals)."""
    every_minutes: float = 0.0
    """Also save when this many minutes passed since the last save (0 = off)."""
    keep_last: int = 2
    """Keep the newest K checkpoints."""
    keep_every: int = 0
    """Also keep every checkpoint whose step is a multiple of M (0 = none)."""
    hf_every_steps: int = 0
    """Also export a Hugging Face directory hf/step<N>/ every N steps (like Pythia's revisions)."""

    def validate(self) -> None:
        for key in ("every_steps", "keep_every", "hf_every_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(key, f"must be >= 0, got {getattr(self, key)}")
        if self.keep_last < 1:
            raise ConfigError("keep_last", f"must be >= 1, got {self.keep_last}")
        if self.every_minutes < 0:
            raise ConfigError("every_minutes", f"must be >= 0, got {self.every_minutes}")


@dataclass
class ResumeConfig:
    mode: str = "auto"
    """auto (newest valid checkpoint of the run dir, else fresh) | never | a checkpoint path.
    ``resume=<value>`` is accepted as a shorthand for ``resume.mode=<value>``."""
    allow_config_change: bool = False
    """Allow resuming with changes that alter the run's meaning (logged)."""
