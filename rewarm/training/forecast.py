"""The forecast in the loop: with ``forecast.fit: FIT.json`` a running job logs, at every validation,
``forecast/<set>/final_loss`` and its 80 % interval (``forecast/<set>/final_loss_low``, ``_high``).

The fitted law's shared constants stay as ``rewarm forecast fit`` found them; only this run's offset per set is
refitted on its own validation losses so far (``rewarm.forecast`` ``refit_offsets``), then the final loss is
predicted from the run's config (its schedule through ``rewarm.schedules``). A forecast reads the losses the module
has just measured and changes nothing of the training: no torch or global RNG draw, no data, on host only.
After a resume, the losses measured before the checkpoint come from the run's metrics.csv.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

SUFFIXES = ("final_loss", "final_loss_low", "final_loss_high")


def forecast_columns(sets: list[str]) -> list[str]:
    """The metrics.csv columns of the forecast: three per validation set."""
    return [f"forecast/{s}/{suffix}" for s in sets for suffix in SUFFIXES]


class ForecastCallback(L.Callback):
    """Registers itself as an evaluation listener of the module (``RewarmModule.eval_listeners``)."""

    def __init__(self, fit: Any, cfg: Any, sets: list[str], run_dir: Path | None = None) -> None:
        self.fit, self.cfg, self.sets, self.run_dir = fit, cfg, list(sets), run_dir
        self.observed: dict[str, dict[int, float]] = {s: {} for s in self.sets}  # set -> step -> loss
        self.columns = forecast_columns(self.sets)
        self._warned = False

    @classmethod
    def from_config(cls, cfg: Any, sets: list[str]) -> ForecastCallback:
        """Load ``forecast.fit`` and check it against the run (ConfigError naming ``forecast.fit`` otherwise:
        another version, another base model, validation sets it has not seen), before any training."""
        from rewarm.errors import ConfigError
        from rewarm.forecast import load_fit, predict_config

        try:
            fit = load_fit(cfg.forecast.fit)
            predict_config(fit, cfg)  # refuses a base model or validation sets the fit has not seen
        except ConfigError as e:
            raise ConfigError("forecast.fit", f"{cfg.forecast.fit}: {e}") from None
        except FileNotFoundError:
            raise ConfigError("forecast.fit", f"{cfg.forecast.fit} does not exist (rewarm forecast fit ... --out "
                              "FIT.json writes it)") from None
        return cls(fit, cfg, sets, cfg.run_dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        listeners = getattr(pl_module, "eval_listeners", None)
        if listeners is not None and self.on_validation not in listeners:
            listeners.append(self.on_validation)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed run: the points measured before its checkpoint, from metrics.csv."""
        if trainer.global_step > 0 and self.run_dir is not None:
            self.observed = earlier_losses(self.run_dir / "metrics.csv", self.sets, before=trainer.global_step)

    def on_validation(self, step: int, losses: dict[str, float]) -> dict[str, float]:
        """This validation's losses joined to the run's curve; the forecast's metrics (empty when it fails: a
        forecast must never stop a training run)."""
        for s in self.sets:
            if s in losses and math.isfinite(losses[s]):
                self.observed[s][step] = float(losses[s])
        try:
            return self.forecast()
        except Exception as e:  # noqa: BLE001 - logged once; the run goes on without forecasts
            if not self._warned:
                log.warning("forecast at step %d failed (%s: %s); the run goes on without it", step,
                            type(e).__name__, e)
                self._warned = True
            return {}

    def forecast(self) -> dict[str, float]:
        from rewarm.forecast import predict_config, refit_offsets

        fit = refit_offsets(self.fit, self.cfg, {s: sorted(points.items()) for s, points in self.observed.items()})
        out: dict[str, float] = {}
        for s, f in predict_config(fit, self.cfg).items():
            if s in self.sets:
                out.update({f"forecast/{s}/final_loss": float(f.final_loss),
                            f"forecast/{s}/final_loss_low": float(f.low),
                            f"forecast/{s}/final_loss_high": float(f.high)})
        return out


def earlier_losses(path: Path, sets: list[str], *, before: int) -> dict[str, dict[int, float]]:
    """``val/<set>/loss`` by step of the rows of metrics.csv below step ``before`` (a resumed run's own past)."""
    out: dict[str, dict[int, float]] = {s: {} for s in sets}
    if not path.is_file():
        return out
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(float(row.get("step") or "nan"))
            except ValueError:
                continue
            for s in sets:
                text = row.get(f"val/{s}/loss")
                if step < before and text not in (None, ""):
                    out[s][step] = float(text)  # a step written twice: the later row
    return out
