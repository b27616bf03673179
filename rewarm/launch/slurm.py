"""SLURM batch scripts for a config: rendered from the shipped templates, with resources taken from the config, and submit it with ``sbatch``.

The templates are ``slurm/train.sbatch`` and ``slurm/sweep.sbatch``, shipped with the package. Rendering rewrites
their ``#SBATCH`` directives: nodes = ``trainer.num_nodes``, tasks and GPUs per node = ``trainer.devices``
(one task per GPU), the job name from ``run.name`` (or the sweep file), the log next to the runs, and the
array size from the number of run lines of a sweep file. Scheduler-only settings (time limit, partition,
account, CPUs per task) are options of this command. Every sweep line is validated with the config before
anything is submitted. Imports neither Lightning nor torch.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from rewarm.config import RunConfig, load
from rewarm.errors import ConfigError
from rewarm.resources import resource

TEMPLATE_DIR = resource("slurm")  # installed with the package, or the checkout's
_DIRECTIVE = re.compile(r"^#SBATCH\s+--([A-Za-z-]+)(?:[=\s]\s*(\S.*?))?\s*$")


@dataclass(frozen=True)
class SlurmOptions:
    """Scheduler settings that are not part of a run's meaning (not in the config)."""

    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    cpus_per_task: int = 8
    signal_seconds: int = 120  # SIGUSR1 this long before the time limit: enough to save a checkpoint
    mem: str | None = None  # memory per node (sbatch --mem); None: the template's line, else the partition's default


def sweep_lines(text: str) -> list[list[str]]:
    """The run lines of a sweep file (blank and '#' lines skipped, as slurm/sweep.sbatch does), split on spaces."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def directives(cfg: RunConfig, opts: SlurmOptions, *, job_name: str, output: str, array_size: int | None = None,
               ) -> dict[str, str | None]:
    """``#SBATCH`` values for a config (None = remove the directive)."""
    t = cfg.trainer
    gpus = None if t.accelerator == "cpu" else str(t.devices)
    out: dict[str, str | None] = {
        "job-name": job_name, "nodes": str(t.num_nodes), "ntasks-per-node": str(t.devices), "gpus-per-node": gpus,
        "cpus-per-task": str(opts.cpus_per_task), "time": opts.time, "signal": f"USR1@{opts.signal_seconds}",
        "output": output, "partition": opts.partition, "account": opts.account,
    }
    if opts.mem is not None:
        out["mem"] = opts.mem
    if array_size is not None:
        out["array"] = f"0-{array_size - 1}"
    return out


def render(template: str, values: dict[str, str | None]) -> str:
    """Rewrite the ``#SBATCH --key=value`` lines of ``template``: a key in ``values`` gets its value (None
    removes the line), keys the template lacks are added after its last directive; other lines are kept."""
    lines, last, seen = template.splitlines(), -1, set()
    out: list[str] = []
    for line in lines:
        m = _DIRECTIVE.match(line)
        if m and m.group(1) in values:
            seen.add(m.group(1))
            value = values[m.group(1)]
            if value is None:
                continue
            line = f"#SBATCH --{m.group(1)}={value}"
        out.append(line)
        if m:
            last = len(out) - 1
    extra = [f"#SBATCH --{k}={v}" for k, v in values.items() if v is not None and k not in seen]
    if last < 0:
        raise ValueError("the template has no #SBATCH directive")
    out[last + 1:last + 1] = extra
    return "\n".join(out) + "\n"


def check_sweep(config: str, overrides: list[str], runs: list[list[str]], base: RunConfig) -> list[str]:
    """Load every run of a sweep (ConfigError names the line); all runs must share the job's resources and
    have distinct run names. Returns the run names."""
    if not runs:
        raise ConfigError("--sweep", "the sweep file has no run line (one line of key=value overrides per run)")
    names = []
    for i, line in enumerate(runs):
        try:
            cfg = load(config, [*overrides, *line])
        except ConfigError as e:
            raise ConfigError(f"--sweep line {i}", str(e)) from None
        if (cfg.trainer.devices, cfg.trainer.num_nodes) != (base.trainer.devices, base.trainer.num_nodes):
            raise ConfigError(f"--sweep line {i}", "trainer.devices / trainer.num_nodes must be the same for "
                              "every run of an array job; give them once, before --sweep")
        names.append(cfg.run.name)
    if len(set(names)) != len(names):
        raise ConfigError("--sweep", f"two runs share a run.name ({names}); give each line its own run.name")
    return names


def _run_names(runs: list[list[str]], stem: str) -> list[list[str]]:
    """Mirror of slurm/sweep.sbatch: a line without run.name gets run.name=<stem>-<index>."""
    return [line if any(x.startswith("run.name=") for x in line) else [*line, f"run.name={stem}-{i}"]
            for i, line in enumerate(runs)]


def prepare(cfg: RunConfig, config: str, args: argparse.Namespace, opts: SlurmOptions,
             ) -> tuple[str, Path, list[str]]:
    """(rendered script, where it goes, the sbatch command)."""
    out_dir = Path(cfg.run.out_dir).resolve()
    if args.sweep:
        sweep = Path(args.sweep).resolve()
        runs = sweep_lines(sweep.read_text())
        check_sweep(config, args.overrides, _run_names(runs, sweep.stem), cfg)
        values = directives(cfg, opts, job_name=f"rewarm-{sweep.stem}", array_size=len(runs),
                            output=str(out_dir / "slurm-%x-%A_%a.out"))
        template, path = args.template_dir / "sweep.sbatch", out_dir / "slurm" / f"{sweep.stem}.sbatch"
        cmd_args = [str(sweep), config]
    else:
        values = directives(cfg, opts, job_name=cfg.run.name, output=str(out_dir / cfg.run.name / "slurm-%j.out"))
        template, path = args.template_dir / "train.sbatch", out_dir / cfg.run.name / "slurm" / "train.sbatch"
        cmd_args = [config]
    if not template.is_file():
        raise ConfigError("--template-dir", f"{template} not found: run from a rewarm checkout or give --template-dir")
    path = args.out or path
    return render(template.read_text(), values), path, ["sbatch", str(path), *cmd_args, *args.overrides]
