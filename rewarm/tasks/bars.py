"""lm-eval's progress bars, and those of the ``datasets`` it loads tasks with, off where stderr is not a terminal.

In a log file, SLURM output or a pipe a tqdm bar is a line of carriage returns per refresh, per task, per
evaluation. In a terminal the bars stay, as rewarm's own bar does. lm-eval 0.4.13 has no switch for the bars
below, so each is replaced around the call that draws it and put back after; the values computed are the same."""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable, Iterator
from typing import Any

from rewarm.logs import stderr_is_terminal


@contextlib.contextmanager
def no_dataset_bars() -> Iterator[None]:
    """No "Generating test split" bar per split ``datasets`` prepares while lm-eval loads a task (the user's own
    HF_DATASETS_DISABLE_PROGRESS_BARS wins)."""
    if stderr_is_terminal() or "HF_DATASETS_DISABLE_PROGRESS_BARS" in os.environ:
        yield
        return
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def no_lm_eval_bars() -> Iterator[None]:
    """Around ``lm_eval.evaluator.evaluate``: no bar per task from ``Task.build_all_requests`` (it takes no
    ``disable`` argument), and no bar and "bootstrapping for stddev" print per bootstrapped metric (perplexity,
    f1, bleu...: ``_bootstrap_internal_no_mp``, the path taken under DISABLE_MULTIPROC). The model calls' bars are
    off already (``RankShardedLM`` passes ``disable_tqdm``)."""
    if stderr_is_terminal():
        yield
        return
    import lm_eval.api.metrics as metrics
    import lm_eval.api.task as task

    bar, bootstrap = task.tqdm, metrics._bootstrap_internal_no_mp
    task.tqdm = functools.partial(bar, disable=True)
    metrics._bootstrap_internal_no_mp = _silenced(bootstrap)
    try:
        yield
    finally:
        task.tqdm, metrics._bootstrap_internal_no_mp = bar, bootstrap


def _silenced(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with what it writes to stdout and stderr (a print, a bar) swallowed: for a pure computation
    (resampling a metric) that has nothing else to say."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return fn(*args, **kwargs)

    return call
