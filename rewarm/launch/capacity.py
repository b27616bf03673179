"""Whether a SLURM job can ever start: what the partition's nodes hold, read from ``scontrol``, against what the
rendered batch script asks per node.

``sbatch`` accepts a job that asks more CPUs per node than any node of the partition has (or more nodes than
the partition holds) and leaves it pending for good (reason ``PartitionConfig`` / ``PartitionNodeLimit``).
``rewarm slurm`` reads the partition (``scontrol show -o partition``), its nodes (``scontrol show -o node``:
``CPUEfctv``/``CPUTot``, ``RealMemory``, GPUs from ``Gres``) and the cluster's memory defaults (``scontrol show
config``: ``DefMemPerCPU``/``DefMemPerNode``, unless the partition sets its own), and names each limit the job
exceeds with the flag to change. Where ``scontrol`` is missing (a laptop) or no controller answers, nothing is
checked. Imports neither Lightning nor torch.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace

_DIRECTIVE = re.compile(r"^#SBATCH\s+--([A-Za-z-]+)(?:[=\s]\s*(\S+))?")
_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9_/:.]*)=(.*)$")
_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
# where each per-node amount of the rendered script comes from: the flag (or key) to change
SOURCE = {"nodes": "trainer.num_nodes", "ntasks-per-node": "trainer.devices", "gpus-per-node": "trainer.devices",
          "cpus-per-task": "--cpus-per-task", "mem": "--mem"}

Runner = Callable[[list[str]], str]  # runs a SLURM command, returns its stdout; raises OSError when it fails


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[Node, ...]
    max_nodes: int | None = None  # None: unlimited
    max_cpus_per_node: int | None = None
    max_mem_per_node: int | None = None  # MB
    def_mem_per_cpu: int | None = None  # MB, the partition's or else the cluster's default
    def_mem_per_node: int | None = None
    def_mem_per_gpu: int | None = None


@dataclass(frozen=True)
class Request:
    """What the batch script asks: nodes, and per node tasks, CPUs, GPUs and memory (MB; None: the defaults)."""

    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem_mb: int | None = None  # --mem (per node); 0: all of a node's memory
    mem_per_cpu_mb: int | None = None
    mem_per_gpu_mb: int | None = None

    @property
    def cpus_per_node(self) -> int:
        return self.tasks_per_node * self.cpus_per_task


class Unavailable(Exception):
    """No SLURM to ask (``scontrol`` missing, or no controller answers): the job is not checked."""


def parse_records(text: str) -> list[dict[str, str]]:
    """The records of ``scontrol show -o ...``, one per line, as key -> value. A value may hold spaces (``OS=Linux
    6.1 #1 SMP``): a word without ``=`` belongs to the value before it."""
    records = []
    for line in text.splitlines():
        record: dict[str, str] = {}
        key = None
        for word in line.split():
            m = _KEY.match(word)
            if m:
                key = m.group(1)
                record[key] = m.group(2)
            elif key is not None:
                record[key] += f" {word}"
        if record:
            records.append(record)
    return records


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config``: lines ``Key = value``."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def memory_mb(value: str | None) -> int | None:
    """``24105``, ``24105M``, ``64G``, ``1T`` -> MB (sbatch's unit when none is given); None for unset/unlimited."""
    if value is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", value.strip().upper())
    if not m:
        if value.strip().upper() in ("", "UNLIMITED", "N/A", "NONE", "(NULL)", "0+"):
            return None
        raise ValueError(f"{value!r} is not a memory size (e.g. 24000, 24000M, 64G)")
    return int(float(m.group(1)) * _UNITS[m.group(2) or "M"])


def count(value: str | None) -> int | None:
    """A count: ``8``, ``1-4`` (the least), ``a100:4`` (the number after the type); unset or ``UNLIMITED`` -> None."""
    numbers = re.findall(r"\d+", value or "")
    if not numbers:
        return None
    return int(numbers[-1]) if ":" in (value or "") else int(numbers[0])


def gpus_of(gres: str | None) -> int:
    """GPUs of a node's ``Gres``: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``gpu:a100:2,gpu:v100:2,shard:8`` -> 4, 4, 4."""
    total = 0
    for entry in re.sub(r"\([^)]*\)", "", gres or "").split(","):
        parts = entry.strip().split(":")
        if parts[0] == "gpu":
            total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


def request_of(script: str) -> Request:
    """The request of a batch script's ``#SBATCH`` lines (sbatch reads them up to the first command)."""
    d: dict[str, str] = {}
    for line in script.splitlines():
        if line.strip() and not line.startswith("#"):
            break
        m = _DIRECTIVE.match(line)
        if m and m.group(2) is not None:
            d[m.group(1)] = m.group(2)
    return Request(nodes=count(d.get("nodes")) or 1, tasks_per_node=count(d.get("ntasks-per-node")) or 1,
                   cpus_per_task=count(d.get("cpus-per-task")) or 1, gpus_per_node=count(d.get("gpus-per-node")) or 0,
                   mem_mb=memory_mb(d["mem"]) if "mem" in d else None, mem_per_cpu_mb=memory_mb(d.get("mem-per-cpu")),
                   mem_per_gpu_mb=memory_mb(d.get("mem-per-gpu")))


def node_of(record: dict[str, str]) -> Node:
    cpus = count(record.get("CPUEfctv")) or count(record.get("CPUTot")) or count(record.get("CPUs")) or 0
    return Node(record.get("NodeName", "?"), cpus, memory_mb(record.get("RealMemory")) or 0, gpus_of(record.get("Gres")))


def partition_of(name: str | None, partitions: list[dict[str, str]], nodes: list[dict[str, str]],
                 config: dict[str, str]) -> Partition:
    """The partition ``name`` (None: the default one) with its nodes and memory defaults. ValueError names the
    partitions there are when ``name`` is not one of them."""
    names = [p.get("PartitionName", "") for p in partitions]
    chosen = [p for p in partitions if (p.get("PartitionName") == name if name else p.get("Default") == "YES")]
    if not chosen:
        which = f"no partition {name!r}" if name else "no default partition"
        raise ValueError(f"{which} on this cluster (partitions: {', '.join(names) or 'none'}); give --partition NAME")
    p = chosen[0]
    members = tuple(node_of(n) for n in nodes if p["PartitionName"] in n.get("Partitions", "").split(","))
    job_defaults = dict(kv.split("=", 1) for kv in p.get("JobDefaults", "").split(",") if "=" in kv)

    def default(key: str) -> int | None:
        return memory_mb(p.get(key)) or memory_mb(config.get(key))

    # the partition's default (per CPU, node or GPU: one of them) replaces the cluster's
    own = memory_mb(p.get("DefMemPerCPU")) or memory_mb(p.get("DefMemPerNode")) or job_defaults.get("DefMemPerGPU")
    return Partition(p["PartitionName"], members, max_nodes=count(p.get("MaxNodes")),
                     max_cpus_per_node=count(p.get("MaxCPUsPerNode")), max_mem_per_node=memory_mb(p.get("MaxMemPerNode")),
                     def_mem_per_cpu=memory_mb(p.get("DefMemPerCPU")) if own else default("DefMemPerCPU"),
                     def_mem_per_node=memory_mb(p.get("DefMemPerNode")) if own else default("DefMemPerNode"),
                     def_mem_per_gpu=memory_mb(job_defaults.get("DefMemPerGPU")))


def memory_asked(part: Partition, req: Request) -> tuple[int | None, str]:
    """MB per node the job gets (None: no memory limit asked, 0: all of a node's) and where that comes from."""
    if req.mem_mb is not None:
        return req.mem_mb, f"--mem {req.mem_mb}M"
    if req.mem_per_cpu_mb is not None:
        return req.mem_per_cpu_mb * req.cpus_per_node, f"{req.cpus_per_node} CPUs × --mem-per-cpu {req.mem_per_cpu_mb}M"
    if req.mem_per_gpu_mb is not None:
        return req.mem_per_gpu_mb * req.gpus_per_node, f"{req.gpus_per_node} GPUs × --mem-per-gpu {req.mem_per_gpu_mb}M"
    if part.def_mem_per_gpu and req.gpus_per_node:
        return part.def_mem_per_gpu * req.gpus_per_node, (f"{req.gpus_per_node} GPUs × DefMemPerGPU "
                                                          f"{part.def_mem_per_gpu} MB, the partition's default")
    if part.def_mem_per_cpu:
        return part.def_mem_per_cpu * req.cpus_per_node, (f"{req.cpus_per_node} CPUs × DefMemPerCPU "
                                                          f"{part.def_mem_per_cpu} MB, the partition's default")
    if part.def_mem_per_node:
        return part.def_mem_per_node, f"DefMemPerNode {part.def_mem_per_node} MB, the partition's default"
    return None, ""


def _cpu_problem(part: Partition, req: Request) -> str | None:
    largest, cap = max(n.cpus for n in part.nodes), _cpu_cap(part)
    if req.cpus_per_node <= cap:
        return None
    has = (f"allows {cap} CPUs per node (MaxCPUsPerNode)" if cap < largest
           else f"the largest node has {largest} CPU{'s' * (largest != 1)}")
    asks = (f"the job asks {req.cpus_per_node} per node (trainer.devices={req.tasks_per_node} task(s) per node × "
            f"--cpus-per-task {req.cpus_per_task})")
    fix = (f"use --cpus-per-task {cap // req.tasks_per_node} or less" if cap >= req.tasks_per_node
           else f"use trainer.devices={cap} or less per node (and more trainer.num_nodes)")
    return f"{has}, {asks}; {fix}"


def _gpu_problem(part: Partition, req: Request) -> str | None:
    largest = max(n.gpus for n in part.nodes)
    if req.gpus_per_node <= largest:
        return None
    if largest == 0:
        return (f"no node has a GPU (none lists gpu in its Gres), the job asks {req.gpus_per_node} per node "
                f"(trainer.devices={req.gpus_per_node}); use trainer.accelerator=cpu or another --partition")
    return (f"the largest node has {largest} GPU{'s' * (largest != 1)} (Gres), the job asks {req.gpus_per_node} per "
            f"node (trainer.devices={req.gpus_per_node}); use trainer.devices={largest} or less (and more "
            f"trainer.num_nodes)")


def _cpu_cap(part: Partition) -> int:
    largest = max(n.cpus for n in part.nodes)
    return min(largest, part.max_cpus_per_node or largest)


def _memory_problem(part: Partition, req: Request) -> str | None:
    """Memory asked beyond the largest node; amounts per CPU are counted for the CPUs a node can give (too many
    CPUs are the CPU problem, and fixing it fixes their memory)."""
    cpus = min(req.cpus_per_node, _cpu_cap(part))
    if cpus < req.cpus_per_node:
        req = replace(req, tasks_per_node=1, cpus_per_task=cpus)
    asked, why = memory_asked(part, req)
    largest = max(n.memory_mb for n in part.nodes)
    cap = min(largest, part.max_mem_per_node or largest)
    if not asked or asked <= cap:
        return None
    has = (f"allows {cap} MB per node (MaxMemPerNode)" if cap < largest
           else f"the largest node has {largest} MB of memory")
    fix = f"use --mem {cap}M or less"
    if req.mem_mb is None and part.def_mem_per_cpu and why.endswith("default"):
        fix += f", or at most {cap // part.def_mem_per_cpu} CPUs per node (--cpus-per-task)"
    return f"{has}, the job asks {asked} MB per node ({why}); {fix}"


def problems(part: Partition, req: Request) -> list[str]:
    """Why no set of the partition's nodes can ever hold the job (empty: it can start once they are free)."""
    where = f"partition {part.name}"
    if not part.nodes:
        return [f"{where} has no node"]
    out = [f"{where}: {p}" for p in (_cpu_problem(part, req), _gpu_problem(part, req), _memory_problem(part, req)) if p]
    limit = min(len(part.nodes), part.max_nodes or len(part.nodes))
    if req.nodes > limit:
        has = (f"allows {limit} node(s) per job (MaxNodes)" if limit < len(part.nodes)
               else f"has {limit} node{'s' * (limit != 1)}")
        out.append(f"{where} {has}, the job asks {req.nodes} (trainer.num_nodes={req.nodes}); use "
                   f"trainer.num_nodes={limit} or less (and more trainer.devices per node)")
    if not out:
        asked, _ = memory_asked(part, req)
        fit = [n for n in part.nodes if n.cpus >= req.cpus_per_node and n.gpus >= req.gpus_per_node
               and (not asked or n.memory_mb >= asked)]
        if len(fit) < req.nodes:
            out.append(f"{where}: only {len(fit)} of its {len(part.nodes)} nodes can hold {req.cpus_per_node} CPUs, "
                       f"{req.gpus_per_node} GPUs and {asked or 0} MB each, the job asks {req.nodes} such nodes "
                       f"(trainer.num_nodes={req.nodes}); use trainer.num_nodes={len(fit)} or less")
    return out


def scontrol(args: list[str]) -> str:
    """stdout of ``scontrol ARGS``; Unavailable when it is missing or fails (no controller answers)."""
    if shutil.which("scontrol") is None:
        raise Unavailable("scontrol not found")
    try:
        res = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"scontrol {' '.join(args)}: {e}") from None
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        raise Unavailable(f"scontrol {' '.join(args)}: {last}")
    return res.stdout


def read_partition(name: str | None, run: Runner = scontrol) -> Partition:
    """The partition ``name`` (None: the default) as the controller describes it. Raises Unavailable, or
    ValueError for a partition the cluster does not have."""
    return partition_of(name, parse_records(run(["show", "-o", "partition"])),
                        parse_records(run(["show", "-o", "node"])), parse_config(run(["show", "config"])))


def check_script(script: str, run: Runner = scontrol) -> list[str]:
    """Why the batch script ``script`` can never start on its partition (``--partition``, else the default one);
    empty when it can. Raises Unavailable when there is no SLURM to ask."""
    m = re.search(r"^#SBATCH\s+--partition[=\s]\s*(\S+)", script, flags=re.M)
    try:
        part = read_partition(m.group(1) if m else None, run)
    except ValueError as e:
        return [str(e)]
    return problems(part, request_of(script))

