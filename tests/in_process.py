"""``rewarm ARGS`` run inside the test process, through ``rewarm.cli.main``, where a subprocess adds nothing but
the 10-20 s of importing torch, Lightning and transformers again. Output comes back like a subprocess's
(exit code, stdout, stderr; optionally appended to a log file) and what a run changes process-wide is put back
afterwards, so the next test starts as in a fresh process: environment variables, the working directory, the
handlers of the signals a run catches, logging handlers and levels, torch's thread count, a wandb run, a
torch.distributed process group.

Not for what needs a process of its own: a kill or a signal, several ranks, a fresh interpreter's imports, or
the one test per user command that runs it exactly as typed (those stay subprocesses)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
LOGGERS = ("", "rewarm", "lightning", "lightning.pytorch", "lightning.fabric", "transformers", "datasets")
# what the subprocess helpers of the tests set: no wandb, one intra-op thread (bitwise-comparable runs)
RUN_ENV = {"WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}


@contextlib.contextmanager
def restored_process(threads: int | None = 1) -> Iterator[None]:
    """Run a block as a fresh ``rewarm`` process would see the process, then undo what it changed."""
    import torch

    env, cwd = dict(os.environ), os.getcwd()
    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    loggers = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in LOGGERS}
    old_threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    os.environ.update(RUN_ENV)
    try:
        yield
    finally:
        _end_run_state()
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])  # run.deterministic=true
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for s, h in handlers.items():
            signal.signal(s, h)
        for n, (level, hs) in loggers.items():
            logger = logging.getLogger(n)
            logger.setLevel(level)
            logger.handlers[:] = hs


def _end_run_state() -> None:
    """A wandb run or a process group left by a run that stopped early (the CLI ends both on its normal path)."""
    from rewarm.faults.wandb_guard import finish_wandb

    finish_wandb()
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_cli(args: list[str], *, log: Path | None = None, threads: int | None = 1) -> subprocess.CompletedProcess:
    """``rewarm ARGS`` in this process: a CompletedProcess (returncode, stdout, stderr) as ``subprocess.run(...,
    capture_output=True, text=True)`` returns it. With ``log``, the output is also appended to that file (the
    subprocess helpers of the tests write their logs there), headed like theirs."""
    from rewarm.cli import main

    out, err = io.StringIO(), io.StringIO()
    with restored_process(threads), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse, or a preempted run's exit code
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"\n===== (in process) rewarm {' '.join(args)}\n{out.getvalue()}{err.getvalue()}")
    return subprocess.CompletedProcess(["rewarm", *args], code, out.getvalue(), err.getvalue())
