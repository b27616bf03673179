"""Helpers: run directories built by hand, in the trainer's format (config.yaml from the real config schema,
metrics.csv with empty cells where a metric was not measured); a ``rewarm`` command run without some package."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

from rewarm.config import load, to_yaml

TOKENS_PER_STEP = 256
BASE = [
    "trainer.max_steps=20",
    "trainer.val_every_steps=5",
    "data.seq_len=64",
    "data.train.code.paths=[corpora/code/train/*.jsonl.zst]",
    "data.val.prose.paths=[corpora/prose/val.jsonl.zst]",
    "data.val.prose.role=upstream",
    "data.val.code.paths=[corpora/code/val.jsonl.zst]",
    "data.val.code.role=downstream",
]


def curves(step: int, max_steps: int, max_lr: float) -> dict[str, float]:
    """Made-up but plausible losses: upstream rises with the LR, downstream falls with it (nats/token)."""
    frac = step / max_steps
    up = 3.0 + 400.0 * max_lr * math.sqrt(frac)
    down = 5.0 - (1.0 + 1000.0 * max_lr) * frac
    return {"prose": up, "code": down}


def metrics_rows(max_steps: int, max_lr: float, val_every: int, with_columns: bool) -> list[dict[str, object]]:
    rows = []
    for step in range(max_steps + 1):
        row: dict[str, object] = {"step": step, "tokens": step * TOKENS_PER_STEP}
        if step > 0:
            row |= {"train/loss": 4.0 - step * 0.01, "optim/lr": max_lr * (1 - 0.9 * step / max_steps)}
        if step % val_every == 0 or step == max_steps:
            losses = curves(step, max_steps, max_lr)
            for name, loss in losses.items():
                row |= {f"val/{name}/loss": loss, f"val/{name}/ppl": math.exp(loss)}
            if with_columns:
                start = curves(0, max_steps, max_lr)
                row |= {
                    "forgetting/prose": losses["prose"] - start["prose"],
                    "adaptation/code": start["code"] - losses["code"],
                }
        rows.append(row)
    return rows


def write_run(
    root: Path,
    name: str,
    overrides: list[str] = (),
    *,
    max_lr: float = 3e-4,
    with_columns: bool = True,
    finished: bool = True,
    rows: list[dict[str, object]] | None = None,
) -> Path:
    """A run directory <root>/<name> as the trainer leaves it."""
    cfg = load(
        None,
        [
            *BASE,
            f"run.name={name}",
            f"run.out_dir={root}",
            f"schedule.max_lr={max_lr}",
            f"schedule.min_lr={max_lr / 10}",
            *overrides,
        ],
    )
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    rows = (
        rows
        if rows is not None
        else metrics_rows(cfg.trainer.max_steps, max_lr, cfg.trainer.val_every_steps, with_columns)
    )
    write_csv(run_dir / "metrics.csv", rows)
    if finished:
        (run_dir / "summary.json").write_text("{}\n")
    return run_dir


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    header = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, restval="")
        w.writeheader()
        w.writerows(rows)


HIDE = '''import sys


class _Hidden:
    """A meta path finder as it was, minus the hidden packages: for them it finds nothing, as when they are not
    installed (an import raises ModuleNotFoundError, importlib.util.find_spec returns None)."""

    def __init__(self, finder, hidden):
        self.finder, self.hidden = finder, hidden

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.hidden or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [_Hidden(f, HIDDEN) for f in sys.meta_path]
'''


def without(packages: list[str], argv: list[str], cwd: Path, setup: str = "", timeout: float = 600,
            ) -> subprocess.CompletedProcess[str]:
    """``rewarm ARGV`` in a child process in which ``packages`` (top-level import names) cannot be imported, as if
    they were not installed; ``setup``: Python code run before the command (test sizes)."""
    code = HIDE.replace("HIDDEN", repr(set(packages))) + setup + "\nfrom rewarm.cli import main\nsys.exit(main())\n"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
