"""CLI latency: wall time of ``rewarm --help`` and ``rewarm check CONFIG`` as fresh subprocesses.

Each command is run ``--repeats`` times, alternated with a bare interpreter start (``python -c pass``, the
floor every Python CLI pays) so the machine's noise falls on all three; medians are reported. The import
contract is checked too: ``python -X importtime -m rewarm check CONFIG`` must not import Lightning,
DeepSpeed or wandb (the script exits 1 if it does) — heavy modules it does import are listed.

Also ``train_startup_s``: a real ``rewarm train`` subprocess (tiny GPT-NeoX, one optimizer step, no validation,
wandb or progress bar) from its launch to the end of its first optimizer step, the median of ``--train-repeats``
runs. The end of the step is read from the run itself: metrics.csv gets the step's row as soon as the step is
done (a one-step run emits it at once; later ones defer it a step), and that row is the file's last write, so
its modification time, against the wall clock read just before the launch, is the figure (what follows, the end
checkpoint, the Hugging Face export and the interpreter's exit, is not counted). It is what a user waits for
before a run trains: interpreter, torch, Lightning and transformers imports, model, tokenizer, data pipeline.

Output: ``help_s=``, ``check_s=``, ``python_startup_s=``, ``train_startup_s=``, then the last line
``cli_latency=<max(help_s, check_s)>`` in seconds. Target < 2 s each (help and check).

    .venv/bin/python benchmarks/cli_latency.py [--quick] [--repeats N] [--train-repeats N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as C

FORBIDDEN = ("lightning", "pytorch_lightning", "deepspeed", "wandb")
HEAVY = ("torch", "transformers", "datasets", "numpy", "pyarrow", "tokenizers") + FORBIDDEN


def rewarm_cmd() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m rewarm``."""
    script = Path(sys.executable).parent / "rewarm"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rewarm"]


def cache_train(cache: Path) -> Path:
    """The glob of write_config's training shards."""
    return cache / "cli_corpus" / "train" / "*.jsonl.zst"


def write_config(cache: Path) -> Path:
    """A small valid run config whose files exist (check_paths is part of `rewarm check`)."""
    model = C.build_model_dir(cache / "model_d64_l2", 64, 2, 4, 2048)
    train = C.corpus(cache / "cli_corpus" / "train" / "00.jsonl.zst", 200, seed=11)
    val = C.corpus(cache / "cli_corpus" / "val.jsonl.zst", 100, seed=12)
    cfg = cache / "cli_check.yaml"
    cfg.write_text(f"""run: {{name: cli, out_dir: {cache / 'runs'}}}
model: {{name_or_path: {model}}}
data:
  seq_len: 128
  train: {{corpus: {{paths: ["{train.parent}/*.jsonl.zst"]}}}}
  val: {{held: {{paths: ["{val}"], role: upstream, max_tokens: 4096}}}}
trainer: {{max_steps: 1000, micro_batch_size: 4, val_every_steps: 100}}
schedule: {{name: cosine, max_lr: 3.0e-4, min_lr: 3.0e-5, warmup_steps: 10}}
""")
    return cfg


def wall(cmd: list[str]) -> float:
    """Seconds of one subprocess run; it must exit 0."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return dt


def train_startup(cache: Path, model: Path, train_glob: str) -> float:
    """Seconds from launching a one-step `rewarm train` to the end of its optimizer step (module docstring)."""
    out = cache / "startup_runs"
    shutil.rmtree(out, ignore_errors=True)
    empty = cache / "empty.yaml"
    empty.write_text("{}\n")
    overrides = C.base_overrides(model, train_glob, out, seq_len=128, batch=4, steps=1, name="startup")
    t0 = time.time()  # wall clock, as file modification times are
    proc = subprocess.run(rewarm_cmd() + ["train", str(empty), *overrides, "schedule.warmup_steps=0"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"rewarm train exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    metrics = out / "startup" / "metrics.csv"
    rows = metrics.read_text().splitlines()[1:]
    if len(rows) != 1 or not rows[0].startswith("0,"):
        raise SystemExit(f"expected the one row of step 0 in {metrics}, found {rows}")
    return metrics.stat().st_mtime_ns / 1e9 - t0


def imported_modules(cfg: Path) -> set[str]:
    """Top-level packages imported by `rewarm check CONFIG` (from ``-X importtime``)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "rewarm", "check", str(cfg)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"rewarm check failed:\n{proc.stderr[-2000:]}")
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p)
    p.add_argument("--repeats", type=int, default=5, help="runs of each command (alternated)")
    p.add_argument("--train-repeats", type=int, default=3, help="one-step `rewarm train` runs (train_startup_s)")
    args = p.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    cfg = write_config(args.cache)
    C.print_machine()
    mods = imported_modules(cfg)
    bad = sorted(m for m in FORBIDDEN if m in mods)
    print(f"`rewarm check` imports (heavy ones): {sorted(m for m in HEAVY if m in mods) or 'none'}", flush=True)
    if bad:
        print(f"FAIL: `rewarm check` imports {bad}", flush=True)
        raise SystemExit(1)
    cmds = {"help": rewarm_cmd() + ["--help"], "check": rewarm_cmd() + ["check", str(cfg)],
            "python_startup": [sys.executable, "-c", "pass"]}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for r in range(repeats):
        order = list(cmds) if r % 2 == 0 else list(reversed(cmds))
        for k in order:
            times[k].append(wall(cmds[k]))
    med = {k: C.median(v) for k, v in times.items()}
    for k in cmds:
        print(f"{k}_s={med[k]:.3f}", flush=True)
    train_glob = str(cache_train(args.cache))
    starts = [train_startup(args.cache, args.cache / "model_d64_l2", train_glob)
              for _ in range(1 if args.quick else args.train_repeats)]
    print(f"train_startup_s={C.median(starts):.3f}", flush=True)
    worst = max(med["help"], med["check"])
    C.print_result("cli_latency", worst, f"< 2 s each ({'met' if worst < 2 else 'MISSED'}); "
                   f"help {med['help'] / med['python_startup']:.1f}x and check "
                   f"{med['check'] / med['python_startup']:.1f}x a bare interpreter start")
    return worst


if __name__ == "__main__":
    main(sys.argv[1:])
