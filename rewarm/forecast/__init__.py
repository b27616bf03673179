"""Forecasting loss curves: fit a continual-pre-training loss law on a few runs, predict any recipe's upstream and
downstream loss from its LR schedule (``rewarm forecast``; docs/forecasting.md).

Owns the law (``law``, pure numpy), its inputs from a run config (``inputs``: LRs through ``rewarm.schedules``,
``model.pretraining``), the fitter (``fit``, scipy), FIT.json (``fitfile``), reading runs (``runs``), the API below
(``api``) and the command (``cli``). May import: errors, the root config, model.config, schedules, numpy, scipy
(matplotlib in ``cli`` only); never training, study or demo (they import it), except ``cli``'s sweep expansion
(``rewarm.study.spec``).

Public API: ``SetForecast``, ``Fit``, ``save_fit``, ``load_fit``, ``fit_run_dirs``, ``fit_curves``,
``predict_config``, ``predict_lrs``, ``refit_offsets``, ``objective``.
"""

from __future__ import annotations

import importlib
from typing import Any

# The package is imported by the root config (rewarm.forecast.config, the `forecast` section), which stays light
# (`rewarm check` imports no numpy or scipy): the API is imported on first use.
_API = {name: "rewarm.forecast.api" for name in (
    "DEFAULT_ANNEAL", "fit_curves", "fit_run_dirs", "objective", "predict_config", "predict_lrs", "refit_offsets")}
_API.update({name: "rewarm.forecast.fitfile" for name in ("Fit", "SetFit", "SetForecast", "load_fit", "save_fit")})

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    """``rewarm.forecast.fit_run_dirs`` etc., importing numpy and scipy only when asked for."""
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rewarm.forecast' has no attribute {name!r}")
