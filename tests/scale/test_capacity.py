"""Whether a job fits its SLURM partition (``rewarm.launch.capacity``): ``scontrol show -o`` records and ``show
config`` parsed as SLURM 22.05 prints them (the local cluster's, verbatim, and a GPU cluster's in the same format),
the job's request read from the rendered ``#SBATCH`` lines, and each limit named with the flag to change.
The refusal against the real local cluster is in tests/slurm/test_refusal.py."""

from __future__ import annotations

import pytest

from rewarm.launch.capacity import (
    Partition,
    Request,
    Unavailable,
    check_script,
    count,
    gpus_of,
    memory_mb,
    parse_config,
    parse_records,
    problems,
    read_partition,
    request_of,
)

# `scontrol show -o partition` / `show -o node` / `show config` of slurm/local-cluster.sh (2 CPUs, 24105 MB)
LOCAL_PARTITION = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED "
    "MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO "
    "OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE "
    "JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=24105M,node=1,billing=2\n")
LOCAL_NODE = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=2  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.76 AvailableFeatures=(null) "
    "ActiveFeatures=(null) Gres=(null) NodeAddr=127.0.0.1 NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v1272 "
    "#1 SMP PREEMPT_DYNAMIC @0  RealMemory=24105 AllocMem=0 FreeMem=20067 Sockets=1 Boards=1 State=IDLE "
    "ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  BootTime=2026-12-06T02:16:10 "
    "CfgTRES=cpu=2,mem=24105M,billing=2 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0\n")
LOCAL_CONFIG = "Configuration data as of 2026-12-06T05:12:14\nDefMemPerCPU            = 12052\n" \
               "MaxMemPerNode           = UNLIMITED\nSelectTypeParameters    = CR_CPU_MEMORY\n"
# a GPU cluster: partition gpu (4 nodes of 4 A100s, 64 CPUs; one of them drained, still counted), cpu (2 nodes)
GPU_PARTITIONS = (
    "PartitionName=gpu AllowGroups=ALL Default=NO MaxNodes=3 MaxCPUsPerNode=UNLIMITED Nodes=g[01-04] State=UP "
    "TotalCPUs=256 TotalNodes=4 JobDefaults=DefMemPerGPU=65536 DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED\n"
    "PartitionName=cpu AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxCPUsPerNode=UNLIMITED Nodes=c[1-2] State=UP "
    "TotalCPUs=256 TotalNodes=2 JobDefaults=(null) DefMemPerCPU=2000 MaxMemPerNode=UNLIMITED\n")
GPU_NODES = "".join(
    f"NodeName={n} Arch=x86_64 CPUAlloc=0 CPUEfctv={cpus} CPUTot={cpus} Gres={gres} RealMemory={mem} "
    f"OS=Linux 5.14.0 #1 SMP State={state} Partitions={parts}\n"
    for n, cpus, gres, mem, state, parts in [
        ("g01", 64, "gpu:a100:4(S:0-1)", 512000, "IDLE", "gpu"), ("g02", 64, "gpu:a100:4(S:0-1)", 512000, "MIXED", "gpu"),
        ("g03", 64, "gpu:a100:2(S:0),gpu:v100:2(S:1)", 384000, "IDLE", "gpu"),
        ("g04", 64, "gpu:a100:4(S:0-1)", 256000, "DRAINED", "gpu"), ("c1", 128, "(null)", 256000, "IDLE", "cpu"),
        ("c2", 128, "(null)", 256000, "IDLE", "cpu")])
GPU_CONFIG = "DefMemPerCPU            = 4000\n"


def runner(partitions: str, nodes: str, config: str):
    outputs = {"partition": partitions, "node": nodes, "config": config}
    return lambda args: outputs[args[-1]]


def script(**directives: object) -> str:
    lines = ["#!/bin/bash", "# a comment", *(f"#SBATCH --{k.replace('_', '-')}={v}" for k, v in directives.items()),
             "", "set -e", "#SBATCH --nodes=99"]  # after the first command: not a directive (sbatch stops there)
    return "\n".join(lines) + "\n"


def test_records_keep_values_with_spaces() -> None:
    node = parse_records(LOCAL_NODE)[0]
    assert node["OS"] == "Linux 6.18.44-fc-v1272 #1 SMP PREEMPT_DYNAMIC @0"
    assert (node["CPUEfctv"], node["RealMemory"], node["Gres"], node["Partitions"]) == ("2", "24105", "(null)", "debug")
    assert node["AllocTRES"] == "" and parse_records("\n\n") == []
    assert parse_config(LOCAL_CONFIG)["DefMemPerCPU"] == "12052"


def test_amounts() -> None:
    assert [memory_mb(v) for v in ("24105", "24105M", "64G", "1T", "512K", "UNLIMITED", "(null)", None)] == \
        [24105, 24105, 65536, 1048576, 0, None, None, None]
    with pytest.raises(ValueError, match="not a memory size"):
        memory_mb("lots")
    assert [count(v) for v in ("8", "1-4", "a100:4", "UNLIMITED", None)] == [8, 1, 4, None, None]
    assert [gpus_of(g) for g in ("(null)", "gpu:4", "gpu:a100:4(S:0-1)", "gpu:a100:2(S:0),gpu:v100:2(S:1),shard:8",
                                 "gpu")] == [0, 4, 4, 4, 1]


def test_request_from_the_rendered_directives() -> None:
    req = request_of(script(nodes=2, ntasks_per_node=4, gpus_per_node=4, cpus_per_task=8, mem="64G"))
    assert req == Request(nodes=2, tasks_per_node=4, cpus_per_task=8, gpus_per_node=4, mem_mb=65536)
    assert req.cpus_per_node == 32 and request_of("#!/bin/bash\nsrun x\n") == Request()


def test_local_cluster_default_cpus_refused_with_the_flag() -> None:
    run = runner(LOCAL_PARTITION, LOCAL_NODE, LOCAL_CONFIG)
    part = read_partition(None, run)
    assert (part.name, part.def_mem_per_cpu, [(n.cpus, n.memory_mb, n.gpus) for n in part.nodes]) == \
        ("debug", 12052, [(2, 24105, 0)])
    found = check_script(script(nodes=1, ntasks_per_node=1, cpus_per_task=8), run)
    assert found == ["partition debug: the largest node has 2 CPUs, the job asks 8 per node (trainer.devices=1 "
                     "task(s) per node × --cpus-per-task 8); use --cpus-per-task 2 or less"]  # its memory follows
    assert check_script(script(cpus_per_task=2), run) == []  # 2 × DefMemPerCPU 12052 = 24104 MB <= 24105
    assert check_script(script(ntasks_per_node=2, cpus_per_task=1), run) == []
    two = check_script(script(ntasks_per_node=2, cpus_per_task=2, nodes=2, mem="30G", gpus_per_node=2), run)
    assert [line.split(", the job")[0] for line in two] == [
        "partition debug: the largest node has 2 CPUs", "partition debug: no node has a GPU (none lists gpu in its Gres)",
        "partition debug: the largest node has 24105 MB of memory", "partition debug has 1 node"]
    assert "use --cpus-per-task 1 or less" in two[0] and "use trainer.accelerator=cpu" in two[1]
    assert "(--mem 30720M); use --mem 24105M or less" in two[2] and "use trainer.num_nodes=1 or less" in two[3]
    assert check_script(script(partition="gpu"), run) == [
        "no partition 'gpu' on this cluster (partitions: debug); give --partition NAME"]


def test_gpu_partition_limits() -> None:
    run = runner(GPU_PARTITIONS, GPU_NODES, GPU_CONFIG)
    cpu = read_partition(None, run)
    assert (cpu.name, cpu.def_mem_per_cpu, len(cpu.nodes)) == ("cpu", 2000, 2)  # the partition's default wins
    gpu = read_partition("gpu", run)
    assert (gpu.max_nodes, gpu.def_mem_per_gpu, [n.gpus for n in gpu.nodes]) == (3, 65536, [4, 4, 4, 4])
    ok = script(partition="gpu", nodes=3, ntasks_per_node=4, gpus_per_node=4, cpus_per_task=16)
    assert check_script(ok, run) == []  # 4 GPUs × DefMemPerGPU 64 GB = 256 GB on every node (g04 drained: counted)
    assert check_script(ok.replace("--nodes=3", "--nodes=4"), run) == [
        "partition gpu allows 3 node(s) per job (MaxNodes), the job asks 4 (trainer.num_nodes=4); use "
        "trainer.num_nodes=3 or less (and more trainer.devices per node)"]
    eight = check_script(ok.replace("=4\n", "=8\n"), run)
    assert eight == ["partition gpu: the largest node has 64 CPUs, the job asks 128 per node (trainer.devices=8 task(s) "
                     "per node × --cpus-per-task 16); use --cpus-per-task 8 or less",
                     "partition gpu: the largest node has 4 GPUs (Gres), the job asks 8 per node (trainer.devices=8); "
                     "use trainer.devices=4 or less (and more trainer.num_nodes)",
                     "partition gpu: the largest node has 512000 MB of memory, the job asks 524288 MB per node (8 GPUs "
                     "× DefMemPerGPU 65536 MB, the partition's default); use --mem 512000M or less"]
    big = script(partition="gpu", nodes=3, ntasks_per_node=4, gpus_per_node=4, cpus_per_task=16, mem="400G")
    assert check_script(big, run) == [  # each node fits alone, but only two have 400 GB
        "partition gpu: only 2 of its 4 nodes can hold 64 CPUs, 4 GPUs and 409600 MB each, the job asks 3 such nodes "
        "(trainer.num_nodes=3); use trainer.num_nodes=2 or less"]


def test_partition_limits_per_node() -> None:
    part = Partition("p", read_partition(None, runner(LOCAL_PARTITION, LOCAL_NODE, LOCAL_CONFIG)).nodes,
                     max_cpus_per_node=1, max_mem_per_node=1000)
    found = problems(part, Request(cpus_per_task=2, mem_mb=2000))
    assert found == ["partition p: allows 1 CPUs per node (MaxCPUsPerNode), the job asks 2 per node (trainer.devices=1 "
                     "task(s) per node × --cpus-per-task 2); use --cpus-per-task 1 or less",
                     "partition p: allows 1000 MB per node (MaxMemPerNode), the job asks 2000 MB per node (--mem 2000M); "
                     "use --mem 1000M or less"]
    assert problems(Partition("empty", ()), Request()) == ["partition empty has no node"]


def test_no_slurm_means_no_check(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Unavailable, match="scontrol not found"):
        check_script(script(cpus_per_task=8))
