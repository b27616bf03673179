"""``rewarm.logs``: each filter hides its own line and nothing else of the same logger or warning; a real
third-party warning (a deprecated torch call in the user's code, a tokenizer warning) still reaches the log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from rewarm.logs import LOG_LINES, WARNINGS, quiet_third_party, setup_logging

REPO = Path(__file__).resolve().parents[1]
RANK_ZERO = "lightning.pytorch.utilities.rank_zero"
HFLM = "lm_eval.models.huggingface"

# (logger, message as the library writes it, hidden?)
RECORDS = [
    (RANK_ZERO, "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](https://pypi"
                ".org/project/litlogger/) to enable LitLogger, which logs metrics and artifacts automatically to the "
                "Lightning Experiments platform.", True),
    ("lightning.fabric.utilities.rank_zero", "💡 Tip: For seamless cloud logging and experiment tracking", True),
    (RANK_ZERO, "TPU available: False, using: 0 TPU cores", True),
    (RANK_ZERO, "`Trainer.fit` stopped: `max_steps=6` reached.", True),
    (HFLM, "`pretrained` model kwarg is not of type `str`. Many other model arguments may be ignored. Please do not "
           "launch via accelerate or use `parallelize=True` if passing an existing model this way.", True),
    (HFLM, "Passed an already-initialized model through `pretrained`, assuming single-process call to evaluate() or "
           "custom distributed integration", True),
    ("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.",
     True),
    # the same loggers' other lines: real news about the run
    (RANK_ZERO, "GPU available: True (cuda), used: True", False),
    (RANK_ZERO, "TPU available: True, using: 8 TPU cores", False),
    (RANK_ZERO, "`Trainer.fit` stopped: No training batches.", False),
    (RANK_ZERO, "`Trainer.fit` stopped: `max_epochs=1` reached.", False),
    (HFLM, "Failed to get model SHA for /some/path at revision main", False),
    ("DeepSpeed", "Setting accelerator to CUDA failed: no driver", False),
    ("lm_eval.api.task", "[Task: mine] metric acc is defined, but aggregation is not.", False),
]


@pytest.mark.parametrize(("logger", "message", "hidden"), RECORDS)
def test_each_filter_hides_its_line_only(logger: str, message: str, hidden: bool) -> None:
    setup_logging("INFO")
    got: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: got.append(r.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        log.warning(message)
    finally:
        log.removeHandler(handler)
    assert got == ([] if hidden else [message])


def test_every_log_filter_is_exercised() -> None:
    import re

    for _, pattern in LOG_LINES:
        assert any(h and re.match(pattern, m) for _, m, h in RECORDS), pattern


SRUN = ("The `srun` command is available on your system but is not used. HINT: If your intention is to run Lightning "
        "on SLURM, prepend your python command with `srun` like so: srun python train.py ...")
LEAF = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()`"


WARNED = [
    (SRUN, UserWarning, "lightning.fabric.plugins.environments.slurm", True),
    (LEAF, FutureWarning, "lightning.pytorch.utilities._pytree", True),
    # the same messages from anywhere else (the user's code) still show
    (SRUN, UserWarning, "my_launcher", False),
    (LEAF, FutureWarning, "my_model", False),
    # and anything else Lightning warns about
    ("GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.", UserWarning,
     "lightning.pytorch.trainer.setup", False),
]


@pytest.mark.parametrize(("message", "category", "module", "hidden"), WARNED)
def test_warnings_hidden_only_from_their_module(message: str, category: type[Warning], module: str,
                                                hidden: bool) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn_explicit(message, category, "file.py", 1, module=module)
    assert [str(w.message) for w in seen] == ([] if hidden else [message])


def test_every_warning_filter_is_exercised() -> None:
    import re

    for message, _, module in WARNINGS:
        assert any(h and re.match(message, m) and re.match(module, mod) for m, _, mod, h in WARNED), message


REAL_WARNINGS = """
import sys
from rewarm.logs import setup_logging

setup_logging("INFO")
from torch.utils._pytree import LeafSpec
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained(sys.argv[1])
tok.model_max_length = 8
tok("word " * 40)  # longer than the model can take: transformers warns
LeafSpec()  # a deprecated torch call in the user's code (the one Lightning's own code makes is hidden)
"""


def test_real_third_party_warnings_still_show(tiny_world, tmp_path) -> None:
    """After setup_logging, in a process whose stderr is a pipe: the tokenizer's warning and torch's deprecation."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", REAL_WARNINGS, str(tiny_world["model"])], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Token indices sequence length is longer than the specified maximum sequence length" in res.stderr
    assert "FutureWarning: `isinstance(treespec, LeafSpec)` is deprecated" in res.stderr
