"""Sweep specs: a YAML file of override sets, expanded into named runs (run by ``rewarm.study.sweep``).

Spec format (all keys optional, but at least one of ``grid`` / ``runs``)::

    name: lr-warmup            # the sweep's name: wandb group and sub-directory of run.out_dir
    base: {trainer.max_steps: 200}          # overrides applied to every run (not part of the names)
    runs:                                   # explicit runs, first
      - {name: constant, schedule.name: constant, schedule.max_lr: 3e-5}
      - "model.init=scratch"
    grid:                                   # then the cartesian product (a list of grids: each in turn)
      schedule.max_lr: [1.5e-4, 3e-4, 6e-4]
      schedule.warmup_steps: [0, 10]

Run names come from the run's own overrides: ``max_lr-3e-4_warmup_steps-10`` (each key shortened to its
shortest dotted suffix that is unique among the sweep's keys, sanitized for file names, repeated names
suffixed ``-2``), unless the entry gives ``name:``.
"""

from __future__ import annotations

import itertools
import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewarm.config import flatten
from rewarm.errors import ConfigError
from rewarm.study.keys import format_value, name_value, sanitize, short_keys, unique

log = logging.getLogger(__name__)

SPEC_KEYS = ("name", "base", "runs", "grid")
MANAGED_KEYS = ("run.name", "logging.wandb.group", "resume", "resume.mode")
"""Keys the sweep sets itself for every run; a sweep spec may not set them."""


@dataclass
class SweepRun:
    """One run of a sweep: its name (the run directory's name) and its ``key=value`` overrides."""

    name: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class SweepSpec:
    """A parsed sweep file: its name (None: use the file's stem) and its expanded runs."""

    name: str | None
    runs: list[SweepRun]


# A run before naming: (key, value text) pairs of its own overrides, and an explicit name or None.
_Pairs = list[tuple[str, str]]


def load_sweep(path: str | Path) -> list[SweepRun]:
    """Read and expand a sweep YAML file. Raises ConfigError (key relative to the spec) on a bad spec."""
    return read_sweep(path).runs


def read_sweep(path: str | Path) -> SweepSpec:
    """Like ``load_sweep`` but keeps the sweep's name (the file's stem when the spec has no ``name:``)."""
    spec = _load_yaml(Path(path))
    runs = expand_sweep(spec)
    return SweepSpec(str(spec.get("name") or Path(path).stem), runs)


def sweep_group(path: str | Path) -> str:
    """The sweep's name as used for the wandb group and the sweep directory."""
    name = read_sweep(path).name
    return sanitize(name) if name else "sweep"


def expand_sweep(spec: Mapping[str, Any]) -> list[SweepRun]:
    """Spec mapping -> runs (``runs:`` entries first, then each grid's product), named and with ``base:`` first."""
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(str(unknown[0]), f"unknown sweep key; known keys: {', '.join(SPEC_KEYS)}")
    base = [f"{k}={v}" for k, v in _entry_pairs(spec.get("base") or {}, "base")[0]]
    entries: list[tuple[_Pairs, str | None]] = []
    for i, entry in enumerate(_as_list(spec.get("runs"), "runs")):
        entries.append(_entry_pairs(entry, f"runs[{i}]"))
    grids = spec.get("grid")
    for i, grid in enumerate(_as_list(grids, "grid")):
        where = "grid" if isinstance(grids, Mapping) else f"grid[{i}]"
        entries.extend((pairs, None) for pairs in _grid_points(grid, where))
    if not entries:
        raise ConfigError("", "the sweep has no runs: give `grid:` (key -> list of values) and/or `runs:`")
    names = _names(entries)
    return [SweepRun(n, base + [f"{k}={v}" for k, v in pairs]) for n, (pairs, _) in zip(names, entries, strict=True)]


def run_name(pairs: _Pairs, short: Mapping[str, str] | None = None) -> str:
    """``[("schedule.max_lr", "3e-4"), ("schedule.warmup_steps", "10")]`` -> ``max_lr-3e-4_warmup_steps-10``."""
    if not pairs:
        return "base"
    short = short or short_keys(k for k, _ in pairs)
    return sanitize("_".join(f"{short[k]}-{name_value(v)}" for k, v in pairs))


def _names(entries: list[tuple[_Pairs, str | None]]) -> list[str]:
    short = short_keys(k for pairs, _ in entries for k, _ in pairs)
    explicit = [n for _, n in entries if n is not None]
    dup = {n for n in explicit if explicit.count(n) > 1}
    if dup:
        raise ConfigError("runs", f"run name {sorted(dup)[0]!r} is given twice; names must be unique")
    derived = [name if name is not None else run_name(pairs, short) for pairs, name in entries]
    names = unique(derived)
    for old, new in zip(derived, names, strict=True):
        if old != new:
            log.warning("two sweep runs would both be named %r: the later one is named %r", old, new)
    return names


def _grid_points(grid: Any, where: str) -> list[_Pairs]:
    """The cartesian product of a grid: ``{key: [v1, v2], ...}`` (keys dotted or nested; a value that
    is a mapping is a bundle of overrides under its key)."""
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(where, "a grid is a mapping from a dotted key to a list of values")
    axes = []
    for key, values in flatten(grid).items():  # lists are leaves: the grid's axes
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"{where}.{key}", "has an empty list of values")
        axes.append([_value_pairs(key, v, f"{where}.{key}") for v in values])
    return [[p for pairs in point for p in pairs] for point in itertools.product(*axes)]


def _value_pairs(key: str, value: Any, where: str) -> _Pairs:
    if isinstance(value, Mapping):
        pairs = [(f"{key}.{k}", format_value(v)) for k, v in flatten(value).items()]
    else:
        pairs = [(key, format_value(value))]
    for k, _ in pairs:
        _check_key(k, where)
    return pairs


def _entry_pairs(entry: Any, where: str) -> tuple[_Pairs, str | None]:
    """A run entry (mapping, or string ``"k=v k=v"``, or list of such strings) -> (pairs, explicit name)."""
    if isinstance(entry, str):
        entry = {"overrides": shlex.split(entry)}
    elif isinstance(entry, list):
        entry = {"overrides": entry}
    if not isinstance(entry, Mapping):
        raise ConfigError(where, f"must be a mapping of overrides or a string 'key=value ...', got {entry!r}")
    entry = dict(entry)
    name = entry.pop("name", None)
    raw = entry.pop("overrides", None) or []
    pairs = [_split_override(item, where) for item in ([raw] if isinstance(raw, str) else raw)]
    named = [v for k, v in pairs if k == "name"]
    pairs = [(k, v) for k, v in pairs if k != "name"]
    name = name if name is not None else (named[-1] if named else None)
    for key, value in flatten(entry).items():
        pairs.extend(_value_pairs(key, value, where))
    return pairs, (_check_name(str(name), where) if name is not None else None)


def _split_override(item: Any, where: str) -> tuple[str, str]:
    text = str(item)
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise ConfigError(where, f"an override must look like key=value, got {text!r}")
    if key != "name":
        _check_key(key, where)
    return key, value


def _check_key(key: str, where: str) -> None:
    if key in MANAGED_KEYS:
        raise ConfigError(f"{where}.{key}", "is set by the sweep itself (give a run `name:` instead of run.name)")


def _check_name(name: str, where: str) -> str:
    if sanitize(name) != name:
        raise ConfigError(f"{where}.name", f"{name!r} is not usable as a directory name; try {sanitize(name)!r}")
    return name


def _as_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return value
    raise ConfigError(where, f"must be a list (or a mapping for grid:), got {type(value).__name__}")


def _load_yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf  # OmegaConf's loader reads 3e-4 as a float (plain PyYAML does not)

    if not path.is_file():
        raise ConfigError("", f"sweep file not found: {path}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # yaml errors carry the position
        raise ConfigError("", f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path} must hold a mapping with grid: and/or runs:")
    return data


def override_line(overrides: list[str]) -> str:
    """Overrides as one shell-quoted line (a line of a SLURM job array's overrides file)."""
    return " ".join(shlex.quote(o) for o in overrides)
