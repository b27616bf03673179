"""``rewarm slurm CONFIG [key=value ...] [--sweep FILE] [--dry-run | --submit]``: render a SLURM batch script
(``rewarm.launch.slurm``) and submit it with ``sbatch``. Imports neither Lightning nor torch."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from rewarm.config import load
from rewarm.errors import ConfigError, report
from rewarm.launch.capacity import Unavailable, check_script, memory_mb
from rewarm.launch.slurm import TEMPLATE_DIR, SlurmOptions, prepare


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewarm slurm", description="Render (and submit) a SLURM batch script for a "
                                "config: nodes = trainer.num_nodes, GPUs and tasks per node = trainer.devices.")
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, passed on to `rewarm train`")
    p.add_argument("--sweep", metavar="FILE", help="one run per line of key=value overrides: a job array")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the script and the sbatch command (default)")
    mode.add_argument("--submit", action="store_true", help="write the script and submit it with sbatch")
    d = SlurmOptions()
    p.add_argument("--time", default=d.time, help=f"time limit (default {d.time})")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--account", help="SLURM account")
    p.add_argument("--cpus-per-task", type=int, default=d.cpus_per_task,
                   help=f"CPU cores per GPU task (default {d.cpus_per_task})")
    p.add_argument("--mem", help="memory per node, sbatch's --mem (e.g. 64G; default: the partition's, "
                   "DefMemPerCPU x CPUs per node)")
    p.add_argument("--signal-seconds", type=int, default=d.signal_seconds,
                   help=f"SIGUSR1 this many seconds before the limit (default {d.signal_seconds})")
    p.add_argument("--template-dir", type=Path, default=TEMPLATE_DIR, help="where train.sbatch / sweep.sbatch are")
    p.add_argument("--out", type=Path, help="where to write the script (default: under the run directory)")
    return p


def _check_options(opts: SlurmOptions) -> None:
    if opts.cpus_per_task < 1:
        raise ConfigError("--cpus-per-task", f"must be >= 1, got {opts.cpus_per_task}")
    try:
        memory_mb(opts.mem)
    except ValueError as e:
        raise ConfigError("--mem", str(e)) from None


def _check_cluster(script: str, *, submit: bool) -> None:
    """A job that no node of its partition can hold is refused at --submit (sbatch would queue it for good) and
    warned about in a dry run; not checked where no SLURM answers."""
    try:
        found = check_script(script)
    except Unavailable as e:
        if submit:
            print(f"rewarm slurm: the partition's nodes were not checked ({e})", file=sys.stderr)
        return
    if not found:
        return
    if submit:
        raise ConfigError("", "this job could never start (sbatch would accept it and leave it pending):\n  "
                          + "\n  ".join(found))
    for line in found:
        print(f"warning: this job could never start: {line}", file=sys.stderr)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    opts = SlurmOptions(args.time, args.partition, args.account, args.cpus_per_task, args.signal_seconds, args.mem)
    config = str(Path(args.config).resolve())
    try:
        _check_options(opts)
        cfg = load(config, args.overrides)
        script, path, cmd = prepare(cfg, config, args, opts)
        _check_cluster(script, submit=args.submit)
    except (ConfigError, OSError, ValueError) as e:
        return report(e)
    if not args.submit:
        print(script, end="")
        print(f"# would write {path} and run:\n# {shlex.join(cmd)}")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o755)
    print(f"wrote {path}\n{shlex.join(cmd)}", flush=True)
    return subprocess.run(cmd, check=False).returncode
