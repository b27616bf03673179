"""The typed run configuration: one dataclass tree, used as an OmegaConf structured config.

``load(path, overrides)`` merges a YAML file onto the schema, then dotted ``key=value`` overrides,
converts to the dataclasses and validates. Every refusal is a ``ConfigError`` naming the dotted key.
Only the standard library, OmegaConf and the section modules are imported here (``rewarm check``
must stay fast).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewarm.data.config import DataConfig
from rewarm.errors import ConfigError, key_prefix
from rewarm.schedules.config import ScheduleConfig
from rewarm.tasks.config import TasksConfig

PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed")
STRATEGIES = ("auto", "ddp", "deepspeed", "fsdp")
ATTN = ("auto", "flash_attention_2", "sdpa", "eager")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class RunSection:
    name: str = "run"
    """Run name: the run directory is <out_dir>/<name>."""
    out_dir: str = "runs"
    """Parent directory of run directories."""
    seed: int = 0
    """Seeds model init (scratch), data order and dropout."""
    deterministic: bool = False
    """torch deterministic algorithms (bitwise-reproducible CPU runs; slower on GPU)."""

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError("name", f"must be a non-empty name without '/', got {self.name!r}")


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
    """Rows per device per forward pass."""
    global_batch_size: int | None = None
    """Rows per optimizer step over all devices (default: micro_batch_size x world size)."""
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
    """Processes (GPUs) per node."""
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


@dataclass
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name

    def validate(self) -> None:
        for section in ("run", "model", "data", "trainer", "optimizer", "schedule", "checkpoint", "logging", "tasks"):
            with key_prefix(section):
                getattr(self, section).validate()
        plan = batch_plan(self)
        from rewarm.schedules import validate_schedule  # cross-section: phases vs run length

        with key_prefix("schedule"):
            validate_schedule(self.schedule, plan.max_steps, plan.tokens_per_step)


@dataclass(frozen=True)
class BatchPlan:
    """How a run is sized. tokens_per_step counts predicted tokens (rows x seq_len)."""

    world_size: int
    micro_batch_size: int
    grad_accum_steps: int
    seq_len: int
    max_steps: int

    @property
    def rows_per_step(self) -> int:
        return self.micro_batch_size * self.grad_accum_steps * self.world_size

    @property
    def tokens_per_step(self) -> int:
        return self.rows_per_step * self.seq_len

    @property
    def total_tokens(self) -> int:
        return self.tokens_per_step * self.max_steps


def batch_plan(cfg: RunConfig) -> BatchPlan:
    """Derive gradient accumulation and run length from the trainer section; refuse what does not divide."""
    t, seq_len = cfg.trainer, cfg.data.seq_len
    world = t.devices * t.num_nodes
    rows = t.global_batch_size
    if t.global_batch_tokens is not None:
        if t.global_batch_tokens % seq_len:
            raise ConfigError("trainer.global_batch_tokens", f"{t.global_batch_tokens} is not a multiple of data.seq_len={seq_len}")
        rows = t.global_batch_tokens // seq_len
    if rows is None:
        rows = t.micro_batch_size * world
    per_pass = t.micro_batch_size * world
    if rows % per_pass:
        key = "trainer.global_batch_tokens" if t.global_batch_tokens is not None else "trainer.global_batch_size"
        raise ConfigError(key, f"{rows} rows per step is not a multiple of micro_batch_size x devices x num_nodes = {per_pass}")
    accum = rows // per_pass
    tokens_per_step = rows * seq_len
    if t.max_steps is not None:
        steps = t.max_steps
    else:
        assert t.max_tokens is not None
        steps = math.ceil(t.max_tokens / tokens_per_step)
    return BatchPlan(world, t.micro_batch_size, accum, seq_len, steps)


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")


# ---------------------------------------------------------------- loading


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """YAML merged onto the schema, then ``key=value`` overrides; validated. Raises ConfigError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(RunConfig)
    try:
        layers = [schema]
        if path is not None:
            layers.append(_shorthand(_load_yaml(path)))
        if overrides:
            layers.append(_shorthand(_parse_overrides(overrides)))
        merged = OmegaConf.merge(*layers)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise _config_error(e) from None
    assert isinstance(cfg, RunConfig)
    cfg.validate()
    return cfg


def _load_yaml(path: str | Path) -> Any:
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"config file not found: {p}")
    try:
        data = OmegaConf.load(p)
    except Exception as e:  # yaml.YAMLError and friends: show the parser's position
        raise ConfigError("", f"{p} is not valid YAML: {e}") from None
    if not OmegaConf.is_dict(data):
        raise ConfigError("", f"{p} must hold a mapping of sections (run:, model:, data:, ...)")
    return data


SHORTHANDS = {"resume": "resume.mode"}
"""Override keys that stand for a longer one (``resume=PATH`` is ``resume.mode=PATH``), expanded before merging."""


def _parse_overrides(overrides: list[str] | tuple[str, ...]) -> Any:
    """The overrides as one tree. Shorthands are expanded first, so ``resume=PATH`` and other ``resume.*`` keys
    combine in any order; two overrides of which one would silently drop the other are refused."""
    from omegaconf import OmegaConf

    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(item, "an override must look like key=value, e.g. schedule.max_lr=3e-4")
    items = [(key, f"{SHORTHANDS.get(key, key)}={value}") for key, _, value in (o.partition("=") for o in overrides)]
    _check_overlaps(items)
    return OmegaConf.from_dotlist([expanded for _, expanded in items])


def _check_overlaps(items: list[tuple[str, str]]) -> None:
    """Refuse what a dotlist would resolve without a word: a shorthand and its long key with different values
    (``resume=A resume.mode=B``), or a key set to a plain value next to a key below it (``a=1 a.b=2``). The
    same key given twice keeps the later value, as in any dotlist."""
    for i, (key_i, item_i) in enumerate(items):
        full_i, _, value_i = item_i.partition("=")
        for key_j, item_j in items[i + 1 :]:
            full_j, _, value_j = item_j.partition("=")
            if full_i == full_j and key_i != key_j and value_i != value_j:
                raise ConfigError(full_i, f"given twice, as {key_i}={value_i} and {key_j}={value_j}: keep one")
            for parent, child, value in ((full_i, full_j, value_i), (full_j, full_i, value_j)):
                if child.startswith(parent + ".") and not value.lstrip().startswith("{"):
                    raise ConfigError(parent, f"{parent}={value} and {child}=... both given: one would replace "
                                      f"the other; set the keys below {parent} one by one")


def _shorthand(node: Any) -> Any:
    """``resume: auto`` is short for ``resume: {mode: auto}``; an empty ``resume`` (or ``resume=null``) is never."""
    from omegaconf import OmegaConf

    if "resume" in node and not OmegaConf.is_dict(node["resume"]):
        value = node["resume"]
        node["resume"] = {"mode": "never" if value is None else str(value)}
    elif "resume" in node and node["resume"].get("mode", "") is None:
        node["resume"]["mode"] = "never"
    return node


def _config_error(e: Any) -> ConfigError:
    key = getattr(e, "full_key", "") or ""
    msg = str(getattr(e, "msg", e)).splitlines()[0]
    if type(e).__name__ == "ConfigKeyError":
        hint = _known_keys(key)
        return ConfigError(key, f"unknown key{hint}")
    return ConfigError(key, msg)


def _known_keys(key: str) -> str:
    from omegaconf import OmegaConf

    node: Any = OmegaConf.structured(RunConfig)
    parts = key.split(".")
    for part in parts[:-1]:
        if not OmegaConf.is_dict(node) or part not in node:
            return ""
        node = node[part]
    if OmegaConf.is_dict(node) and len(node):
        return f"; known keys here: {', '.join(str(k) for k in node.keys())}"
    return ""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": leaf}``. Lists are leaves; dotted keys in the input are kept as given."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def to_yaml(cfg: RunConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(OmegaConf.structured(cfg))
    assert isinstance(out, dict)
    return out  # type: ignore[return-value]


def config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The argument parser every config-taking command starts from: ``rewarm <prog> CONFIG [key=value ...]``."""
    p = argparse.ArgumentParser(prog=f"rewarm {prog}", description=description)
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. schedule.max_lr=3e-4 trainer.max_steps=100")
    return p


def load_or_report(config: str, overrides: list[str]) -> RunConfig | None:
    """The validated config, or None after printing the refusal (the caller exits with ``EXIT_CONFIG``)."""
    try:
        return load(config, overrides)
    except ConfigError as e:
        print(f"error: invalid config: {e}", file=sys.stderr)
        return None
