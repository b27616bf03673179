"""FIT.json: the fitted constants of every validation set, their bootstrap samples, and what the fit was made on
(the base, tokenizer and validation sets a prediction must share). ``save_fit`` / ``load_fit``; a file of another
format version is refused with its version."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rewarm.errors import ConfigError

FIT_FORMAT = "rewarm-forecast-fit/1"


@dataclass(frozen=True)
class SetForecast:
    """One validation set's forecast: the final loss, its 80 % interval and the curve (step, loss)."""

    final_loss: float
    low: float
    high: float
    curve: list[tuple[int, float]]


@dataclass
class SetFit:
    """The fitted constants of one validation set (shared by all the fit's runs)."""

    role: str
    params: dict[str, float]
    samples: list[dict[str, float]] = field(default_factory=list)
    """Bootstrap refits (over runs and points): the 80 % intervals."""
    rmse: float = 0.0
    """Residual of the fit, in nats."""
    n_points: int = 0
    n_params: int = 0
    converged: bool = True


@dataclass
class Fit:
    """A fitted law. ``sets`` maps each validation set's name to its constants (``list(fit.sets)``: the names)."""

    law: str
    anneal: str
    lr_scale: float
    """LRs are divided by this (the largest LR of the fitted runs) before they enter the law."""
    sets: dict[str, SetFit]
    runs: list[str]
    base: str | None = None
    """The base model the runs start from (``scratch:...`` for scratch runs); None for external curves."""
    base_kind: str = "scratch"
    """scratch | annealed (base of unknown schedule) | known (``model.pretraining``) | curves."""
    tokenizer: str | None = None
    val: dict[str, str] = field(default_factory=dict)
    """Each set's identity (role and data) as the runs configured it; empty for external curves."""
    warnings: list[str] = field(default_factory=list)
    offsets: dict[str, float] = field(default_factory=dict)
    """Per-set offsets of one run's log loss (``refit_offsets``, in the loop); empty after ``fit``."""
    version: str = FIT_FORMAT

    def with_offsets(self, offsets: dict[str, float]) -> Fit:
        return replace(self, offsets=dict(offsets))


def save_fit(fit: Fit, path: str | Path) -> None:
    """Write ``fit`` as JSON (readable, stable key order)."""
    Path(path).write_text(json.dumps(asdict(fit), indent=1, sort_keys=True) + "\n")


def load_fit(path: str | Path) -> Fit:
    """Read a FIT.json; ConfigError (exit 2) for a missing file, bad JSON or another format version."""
    try:
        raw: Any = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such fit file (write one with `rewarm forecast fit ... --out {path}`)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError("", f"{path} is not a fit file: {e}") from None
    version = raw.get("version") if isinstance(raw, dict) else None
    if version != FIT_FORMAT:
        raise ConfigError("", f"{path} is a fit of version {version!r}; this rewarm reads {FIT_FORMAT!r}: refit it "
                              "with `rewarm forecast fit`")
    try:
        sets = {name: SetFit(**s) for name, s in raw.pop("sets").items()}
        return Fit(sets=sets, **raw)
    except (TypeError, KeyError, AttributeError) as e:
        raise ConfigError("", f"{path} is not a valid fit file ({e})") from None
