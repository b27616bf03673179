"""The typed run configuration: one dataclass tree, used as an OmegaConf structured config.

``load(path, overrides)`` merges a YAML file onto the schema, then dotted ``key=value`` overrides,
converts to the dataclasses and validates. Every refusal is a ``ConfigError`` naming the dotted key.
The tree is assembled from each capability's own config module (``rewarm.<capability>.config``: the component-config
pattern); this module imports nothing else of theirs, only ``rewarm.errors``, the standard library and OmegaConf
(``rewarm check`` must stay fast). The contracts in ``pyproject.toml`` ([tool.importlinter]) hold it to that.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewarm.checkpoints.config import CheckpointConfig, ResumeConfig
from rewarm.data.config import DataConfig
from rewarm.errors import ConfigError, key_prefix
from rewarm.forecast.config import ForecastConfig
from rewarm.model.config import ModelConfig
from rewarm.schedules.config import ScheduleConfig, validate_schedule
from rewarm.tasks.config import TasksConfig
from rewarm.training.config import DeepSpeedConfig, LoggingConfig, OptimizerConfig, TrainerConfig, WandbConfig

__all__ = [
    "BatchPlan", "CheckpointConfig", "DataConfig", "DeepSpeedConfig", "ForecastConfig", "LoggingConfig", "ModelConfig", "OptimizerConfig",
    "ResumeConfig", "RunConfig", "RunSection", "ScheduleConfig", "TasksConfig", "TrainerConfig", "WandbConfig",
    "batch_plan", "config_parser", "flatten", "load", "load_or_report", "to_dict", "to_yaml",
]


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
    forecast: ForecastConfig = field(default_factory=ForecastConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name

    def validate(self) -> None:
        for section in ("run", "model", "data", "trainer", "optimizer", "schedule", "checkpoint", "logging", "tasks", "forecast"):
            with key_prefix(section):
                getattr(self, section).validate()
        plan = batch_plan(self)
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
