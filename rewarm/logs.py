"""The log of a rewarm command: our lines on stderr in one format, and the third-party lines that say nothing about
the user's run left out.

Each line left out is matched precisely: a logger's name and a message pattern (a ``logging.Filter`` on that
logger), or a warning's module and message (``warnings.filterwarnings``). No library's logger is lowered as a
whole: a deprecation in the user's model code, a tokenizer warning, Lightning's "GPU available but not used" all
still show. Where stderr is not a terminal (a log file, SLURM output, a pipe), progress bars are a line of carriage
returns per refresh: Hugging Face's bars are turned off there, wandb keeps to its essential lines, and lm-eval's bars
are turned off around an evaluation (``rewarm.tasks``). In a terminal they all stay.

Imports nothing but the standard library (and, off a terminal, ``huggingface_hub``'s switch): ``rewarm sweep``
and ``rewarm demo`` set up their log before deciding what to import."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"

# Lightning logs its info lines through this logger once ``lightning.pytorch`` is imported (before that, fabric's)
_LIGHTNING_RANK_ZERO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")

# (logger names, message pattern matched at the start of the message). Each: what it hides and why.
LOG_LINES: tuple[tuple[tuple[str, ...], str], ...] = (
    # Lightning, once per Trainer: an advertisement for its cloud logger (litlogger); says nothing about the run
    (_LIGHTNING_RANK_ZERO, r"💡 Tip: For seamless cloud logging"),
    # Lightning, once per Trainer: "TPU available: False, using: 0 TPU cores", a device the machine does not have
    # (the GPU line stays: it says which device the run uses)
    (_LIGHTNING_RANK_ZERO, r"TPU available: False, using: 0 TPU cores"),
    # Lightning, at the end of every run: "`Trainer.fit` stopped: `max_steps=N` reached.", the planned end, which
    # rewarm's own progress line and "checkpoint ... saved (end)" report (the other reasons Lightning gives, "No
    # training batches" or "max_epochs reached", are real news and stay)
    (_LIGHTNING_RANK_ZERO, r"`Trainer\.fit` stopped: `max_steps=\d+` reached\."),
    # lm-eval's HFLM, every evaluation: rewarm hands it the model in memory on purpose (RankShardedLM) and shares
    # the requests out over the ranks itself, so neither "not of type str" nor "already-initialized model, assuming
    # single-process" is about the user's run
    (("lm_eval.models.huggingface",), r"`pretrained` model kwarg is not of type `str`"),
    (("lm_eval.models.huggingface",), r"Passed an already-initialized model through `pretrained`"),
    # DeepSpeed, on import (transformers' save_pretrained imports it to unwrap a model, also in a run that does not
    # use DeepSpeed): on a machine without GPU, "Setting accelerator to CPU. If you have GPU or other accelerator,
    # we were unable to detect it." The run's device is Lightning's ("GPU available: ..., used: ..."), not this
    (("DeepSpeed",), r"Setting accelerator to CPU\. If you have GPU or other accelerator, we were unable to detect"),
)

# (message pattern, category, module pattern) for warnings.filterwarnings("ignore", ...): the message as the
# library words it, from that module only. Each: what it hides and why.
WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # Lightning (SLURMEnvironment.detect, every Trainer): "The `srun` command is available on your system but is
    # not used. HINT: ... prepend your python command with `srun`". rewarm decides for itself how a run is launched
    # (`rewarm slurm` writes the srun line for multi-task jobs; a single-task job and a login-node run need none)
    (r"The `srun` command is available on your system but is not used", Warning,
     r"lightning\.fabric\.plugins\.environments\.slurm"),
    # Lightning's own code calls torch's deprecated ``LeafSpec()`` (lightning/pytorch/utilities/_pytree.py): a
    # deprecation between two libraries, nothing the user's code or config can change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
)


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is emitted, not as it was when the handler was made
    (tests and tools swap and close it between runs in one process)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _DropLines(logging.Filter):
    """Drops a logger's records whose message starts with one of ``patterns``."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


def setup_logging(level: str = "INFO") -> None:
    """rewarm's records at ``level`` on stderr in our format, everyone else's at WARNING, minus ``LOG_LINES`` and
    ``WARNINGS``; off a terminal, no Hugging Face progress bars and a quiet wandb. Safe to call again."""
    root = logging.getLogger()
    if not any(getattr(h, "_rewarm", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        handler._rewarm = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    logging.getLogger("rewarm").setLevel(level)
    root.setLevel(logging.WARNING)
    quiet_third_party()
    if not stderr_is_terminal():
        quiet_progress()


def quiet_third_party() -> None:
    """Installs ``LOG_LINES`` (a filter per logger, once) and ``WARNINGS``."""
    by_logger: dict[str, list[str]] = {}
    for names, pattern in LOG_LINES:
        for name in names:
            by_logger.setdefault(name, []).append(pattern)
    for name, patterns in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(patterns))
    for message, category, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def quiet_progress() -> None:
    """For a log that is not a terminal: no Hugging Face Hub / transformers bars ("Loading weights", "Writing model
    shards": one line per refresh in a file), and wandb's quiet mode (no version banner, no history and summary
    panel at the end; its warnings, errors and where the run's data is still show). The user's own
    HF_HUB_DISABLE_PROGRESS_BARS or WANDB_QUIET wins."""
    os.environ.setdefault("WANDB_QUIET", "true")
    if "HF_HUB_DISABLE_PROGRESS_BARS" in os.environ:
        return
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:
        return
    disable_progress_bars()  # transformers reads it when it is imported...
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:  # ...and keeps its own switch once it is
        hf_logging.disable_progress_bar()


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False
