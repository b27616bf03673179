"""``rewarm slurm CONFIG [key=value ...] [--sweep FILE] [--dry-run | --submit]``: render a SLURM batch script
(``rewarm.launch.slurm``) and submit it with ``sbatch``. Imports neither Lightning nor torch."""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path

from rewarm.config import load
from rewarm.errors import ConfigError, report
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
    p.add_argument("--signal-seconds", type=int, default=d.signal_seconds,
                   help=f"SIGUSR1 this many seconds before the limit (default {d.signal_seconds})")
    p.add_argument("--template-dir", type=Path, default=TEMPLATE_DIR, help="where train.sbatch / sweep.sbatch are")
    p.add_argument("--out", type=Path, help="where to write the script (default: under the run directory)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    opts = SlurmOptions(args.time, args.partition, args.account, args.cpus_per_task, args.signal_seconds)
    config = str(Path(args.config).resolve())
    try:
        cfg = load(config, args.overrides)
        script, path, cmd = prepare(cfg, config, args, opts)
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
