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

from rewarm.forecast.api import (
    DEFAULT_ANNEAL,
    fit_curves,
    fit_run_dirs,
    objective,
    predict_config,
    predict_lrs,
    refit_offsets,
)
from rewarm.forecast.fitfile import Fit, SetFit, SetForecast, load_fit, save_fit

__all__ = [
    "DEFAULT_ANNEAL", "Fit", "SetFit", "SetForecast", "fit_curves", "fit_run_dirs", "load_fit", "objective",
    "predict_config", "predict_lrs", "refit_offsets", "save_fit",
]
