"""The ``trainer.*``, ``optimizer.*`` and ``logging.*`` sections of the run config: how a run steps, its AdamW
settings, and what it reports (progress, log level, wandb).

Standard library only (``rewarm check`` imports it); the Trainer assembly is ``rewarm.training.run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rewarm.errors import ConfigError, key_prefix

PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed")
STRATEGIES = ("auto", "ddp", "deepspeed", "fsdp")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class DeepSpeedConfig:
    stage: int = 2
    """ZeRO stage: 1 | 2 | 3."""
    offload_optimizer: bool = False
    """Keep optimizer state in CPU memory."""
    offload_params: bool = False
    """Keep parameters in CPU memory (stage 3 only)."""
    allgather_bucket_size: int = 200_000_000
    """Elements all-gathered at once (ZeRO-2/3 parameter gathering); larger = fewer, bigger messages."""
    reduce_bucket_size: int = 200_000_000
    """Elements reduced at once (gradient reduce-scatter); larger = fewer, bigger messages."""
    config_file: str | None = None
    """A DeepSpeed JSON merged on top of the generated config."""

    def validate(self) -> None:
        _choice("stage", self.stage, (1, 2, 3))
        if self.offload_params and self.stage != 3:
            raise ConfigError("offload_params", "needs trainer.deepspeed.stage=3")


@dataclass
class TrainerConfig:
    max_steps: int | None = None
    """Optimizer steps of the run (or give max_tokens)."""
    max_tokens: int | None = None
    """Training tokens of the run; steps = max_tokens / tokens per step (must divide)."""
    micro_batch_size: int = 1
    """Rows per device per forward pass (may change on resume when the global batch is kept: elastic resume)."""
    global_batch_size: int | None = None
    """Rows per optimizer step over all devices (default: micro_batch_size x world size). Set it to resume on
    another number of devices or nodes (elastic resume keeps it; accumulation is recomputed)."""
    global_batch_tokens: int | None = None
    """Tokens per optimizer step (rows x seq_len); exclusive with global_batch_size."""
    val_every_steps: int = 1000
    """Evaluate every N optimizer steps (also at step 0 and at the end); 0 = only at start and end."""
    log_every_steps: int = 1
    """Write a metrics row every N optimizer steps."""
    precision: str = "32-true"
    """32-true | bf16-mixed | bf16-true | 16-mixed."""
    accelerator: str = "auto"
    """auto | cpu | gpu."""
    devices: int = 1
    """Processes (GPUs) per node (may change on resume when the global batch is kept: elastic resume)."""
    num_nodes: int = 1
    """Nodes (SLURM: --nodes); world size = devices x num_nodes."""
    strategy: str = "auto"
    """auto | ddp | deepspeed | fsdp."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = off)."""
    on_nonfinite: str = "stop"
    """A step whose loss or global gradient norm is NaN / inf: stop = end the run at that step with an error
    naming the step, the LR and the batch's sources (no checkpoint of the broken state; continue from the last
    good one with resume=auto, e.g. with a lower LR and resume.allow_config_change=true) | skip = drop that
    optimizer update (weights and AdamW moments untouched), count it in train/skipped_steps (not with
    strategy=deepspeed, whose engine takes the step before the norm is known). Every rank decides alike."""
    max_skipped_steps: int = 10
    """With on_nonfinite=skip: stop with an error after this many consecutive skipped steps."""
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)

    def validate(self) -> None:
        if (self.max_steps is None) == (self.max_tokens is None):
            raise ConfigError("max_steps", "give exactly one of trainer.max_steps and trainer.max_tokens")
        for key in ("max_steps", "max_tokens", "global_batch_size", "global_batch_tokens"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(key, f"must be > 0, got {value}")
        if self.global_batch_size is not None and self.global_batch_tokens is not None:
            raise ConfigError("global_batch_tokens", "give global_batch_size or global_batch_tokens, not both")
        for key in ("micro_batch_size", "devices", "num_nodes", "log_every_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(key, f"must be >= 1, got {getattr(self, key)}")
        if self.val_every_steps < 0:
            raise ConfigError("val_every_steps", f"must be >= 0, got {self.val_every_steps}")
        if self.grad_clip < 0:
            raise ConfigError("grad_clip", f"must be >= 0, got {self.grad_clip}")
        _choice("precision", self.precision, PRECISIONS)
        _choice("accelerator", self.accelerator, ("auto", "cpu", "gpu"))
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("on_nonfinite", self.on_nonfinite, ("stop", "skip"))
        if self.max_skipped_steps < 1:
            raise ConfigError("max_skipped_steps", f"must be >= 1, got {self.max_skipped_steps}")
        if self.on_nonfinite == "skip" and self.strategy == "deepspeed":
            raise ConfigError("on_nonfinite", "skip is not available with strategy=deepspeed (its engine applies the "
                              "update before the gradient norm is known); use on_nonfinite=stop")
        with key_prefix("deepspeed"):
            self.deepspeed.validate()


@dataclass
class OptimizerConfig:
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas (Gupta et al.: 0.9, 0.95)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay; never applied to biases and norm weights."""
    fused: bool | None = None
    """Fused AdamW kernel; default: on for CUDA."""

    def validate(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError("betas", f"must be two numbers in [0, 1), got {self.betas}")
        if self.eps <= 0:
            raise ConfigError("eps", f"must be > 0, got {self.eps}")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass
class WandbConfig:
    mode: str = "offline"
    """offline (default, no network) | online | disabled."""
    project: str = "rewarm"
    """wandb project."""
    entity: str | None = None
    """wandb entity (team or user); default: yours."""
    group: str | None = None
    """wandb group (a sweep's runs share one)."""
    tags: list[str] = field(default_factory=list)
    """wandb tags."""
    name: str | None = None
    """Display name; default: run.name."""

    def validate(self) -> None:
        _choice("mode", self.mode, WANDB_MODES)


@dataclass
class LoggingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: str = "auto"
    """auto (a bar in a terminal, plain lines otherwise) | bar | lines | off."""
    level: str = "INFO"
    """Log level of rewarm's own messages (DEBUG, INFO, WARNING)."""

    def validate(self) -> None:
        if self.progress == "False":  # YAML 1.1 reads a bare `off` as false
            self.progress = "off"
        _choice("progress", self.progress, ("auto", "bar", "lines", "off"))
        with key_prefix("wandb"):
            self.wandb.validate()


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")
