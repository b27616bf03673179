"""Where this rank's EMA comes from, and how averaged weights are swapped in for an evaluation, per strategy.

A *source* lists the live tensors whose EMA this rank keeps (``tensors``), says which part of which parameter each
holds (``fragments``: the checkpoint format of ``rewarm.averaging.state``), and swaps averaged values into the
weights the forward pass reads, then back (``swap_in`` / ``restore``; collectives: every rank calls them):

- ``ParamSource`` (one process, DDP): the parameters themselves. DDP with ``device: cpu`` keeps the EMA on rank 0
  only; its swap broadcasts rank 0's average to the other ranks.
- ``FSDPSource`` (FSDP2): each parameter's local shard (a DTensor's local tensor, dim-0 sharded), never gathered;
  the forward all-gathers the swapped shards as it does the weights.
- ``Zero12Source`` (DeepSpeed ZeRO-1/2): the engine's fp32 master partitions (the flat partition this rank owns);
  the swap writes the rank's partition of the replicated low-precision weights and all-gathers it, as DeepSpeed
  does after a step; the restore writes them back from the fp32 master weights.
- ``Zero3Source`` (DeepSpeed ZeRO-3): the fp32 partitions of the parameters; the swap writes the parameter
  partitions (``ds_tensor``) and refreshes the persistent (small, always gathered) parameters, as after a step.

Restores are exact: a weight swapped out is written back bit for bit (from a copy, or from the fp32 master that
DeepSpeed itself casts from).
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _names(model: torch.nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _fragment(shape: Any, start: int, buffer: int, offset: int, numel: int) -> dict[str, Any]:
    return {"shape": [int(n) for n in shape], "start": int(start), "buffer": int(buffer), "offset": int(offset),
            "numel": int(numel)}


def _dist() -> Any:
    import torch.distributed as dist

    return dist


class ParamSource:
    """Single process or DDP: every rank holds the whole parameters. ``holder``: whether this rank keeps an EMA
    (DDP with ``device: cpu``: rank 0 only); ``broadcast``: the swap sends rank 0's average to every rank."""

    kind = "single"
    sharded = False

    def __init__(self, model: torch.nn.Module, *, world_size: int, rank: int, device: str) -> None:
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        self.kind = "ddp" if world_size > 1 else "single"
        self.broadcast = world_size > 1 and device == "cpu"
        self.holder = rank == 0 or not self.broadcast
        self._backup: list[torch.Tensor] = []

    def tensors(self) -> list[torch.Tensor]:
        return [p.detach() for p in self.params] if self.holder else []

    def fragments(self) -> dict[str, dict[str, Any]]:
        if not self.holder:
            return {}
        return {n: _fragment(p.shape, 0, i, 0, p.numel()) for i, (n, p) in enumerate(self.named)}

    @torch.no_grad()
    def swap_in(self, avg: list[torch.Tensor]) -> None:
        weights = [p.detach() for p in self.params]
        self._backup = [w.clone() for w in weights]
        if self.holder:
            torch._foreach_copy_(weights, [a.to(w.device) for a, w in zip(avg, weights, strict=True)])
        if self.broadcast:
            for w in weights:
                _dist().broadcast(w, src=0)

    @torch.no_grad()
    def restore(self) -> None:
        torch._foreach_copy_([p.detach() for p in self.params], self._backup)
        self._backup = []


class FSDPSource:
    """FSDP2: the local shard of each DTensor parameter (``Shard(0)``: a contiguous range of the flat parameter)."""

    kind = "fsdp"
    sharded = True
    holder = True

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._backup: list[torch.Tensor] = []

    def _named(self) -> list[tuple[str, Any]]:
        """The sharded (DTensor) parameters: FSDP2 registers unsharded ones in their place while a module is
        unsharded (after a forward of the root, or a checkpoint load), so reshard first, then read them."""
        self._reshard()
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def tensors(self) -> list[torch.Tensor]:
        return [p.to_local().detach() for _, p in self._named()]

    def fragments(self) -> dict[str, dict[str, Any]]:
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        out = {}
        for i, (name, p) in enumerate(self._named()):
            local_shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
            row = math.prod(p.shape[1:])
            out[name] = _fragment(p.shape, offset[0] * row if p.dim() else 0, i, 0, math.prod(local_shape))
        return out

    def _reshard(self) -> None:
        """Free parameters a forward left unsharded (the root keeps them after a forward): the next forward
        gathers them from the shards, which hold what it must see."""
        for m in self.model.modules():
            reshard = getattr(m, "reshard", None)
            if reshard is not None and type(m).__name__.startswith("FSDP"):
                reshard()

    @torch.no_grad()
    def swap_in(self, avg: list[torch.Tensor]) -> None:
        local = self.tensors()
        self._backup = [t.clone() for t in local]
        torch._foreach_copy_(local, [a.to(t.device) for a, t in zip(avg, local, strict=True)])

    @torch.no_grad()
    def restore(self) -> None:
        torch._foreach_copy_(self.tensors(), self._backup)  # tensors(): reshards what the evaluation gathered
        self._backup = []


class Zero12Source:
    """DeepSpeed ZeRO-1/2: ``single_partition_of_fp32_groups`` (this rank's fp32 master partition of each flat
    parameter group); the low-precision weights (``bit16_groups_flat``) are replicated views of the parameters."""

    sharded = True
    holder = True

    def __init__(self, optimizer: Any, model: torch.nn.Module, stage: int) -> None:
        self.opt = optimizer
        self.model = model
        self.kind = f"deepspeed-{stage}"

    def tensors(self) -> list[torch.Tensor]:
        return list(self.opt.single_partition_of_fp32_groups)

    def _pid(self, i: int) -> int:
        return _dist().get_rank(group=self.opt.real_dp_process_group[i])

    def fragments(self) -> dict[str, dict[str, Any]]:
        names, out = _names(self.model), {}
        for i, flat in enumerate(self.opt.bit16_groups_flat):
            size = self.opt.partition_size[i]
            lo = self._pid(i) * size
            for p in self.opt.round_robin_bit16_groups[i]:
                a = (p.data_ptr() - flat.data_ptr()) // flat.element_size()  # p's elements in the flat group
                first, last = max(a, lo), min(a + p.numel(), lo + size)
                if first < last:
                    out[names[id(p)]] = _fragment(p.shape, first - a, i, first - lo, last - first)
        return out

    @torch.no_grad()
    def _write(self, values: list[torch.Tensor]) -> None:
        dist = _dist()
        for i, parts in enumerate(self.opt.parallel_partitioned_bit16_groups):
            mine = parts[self._pid(i)]
            mine.copy_(values[i].to(mine.device))
            group = self.opt.real_dp_process_group[i]
            if dist.get_world_size(group=group) > 1:
                dist.all_gather(list(parts), mine.clone(), group=group)

    def swap_in(self, avg: list[torch.Tensor]) -> None:
        self._write(avg)

    def restore(self) -> None:
        self._write(self.tensors())  # DeepSpeed's own update: low-precision weights = cast of the fp32 master


class Zero3Source:
    """DeepSpeed ZeRO-3: ``fp32_partitioned_groups_flat`` (fp32 copies of this rank's parameter partitions, in the
    layout of ``fp16_partitioned_groups_flat``, of which every ``param.ds_tensor`` is a view)."""

    kind = "deepspeed-3"
    sharded = True
    holder = True

    def __init__(self, optimizer: Any, model: torch.nn.Module) -> None:
        self.opt = optimizer
        self.model = model

    def tensors(self) -> list[torch.Tensor]:
        return list(self.opt.fp32_partitioned_groups_flat)

    def fragments(self) -> dict[str, dict[str, Any]]:
        names, out = _names(self.model), {}
        rank = _dist().get_rank(group=self.opt.dp_process_group)
        for i, flat in enumerate(self.opt.fp16_partitioned_groups_flat):
            for p in self.opt.fp16_groups[i]:
                part = p.ds_tensor
                size = part.ds_numel
                offset = (part.data_ptr() - flat.data_ptr()) // flat.element_size()
                numel = max(0, min(size, p.ds_numel - rank * size))
                if numel:
                    out[names[id(p)]] = _fragment(p.ds_shape, rank * size, i, offset, numel)
        return out

    @torch.no_grad()
    def _write(self, values: list[torch.Tensor]) -> None:
        for flat, v in zip(self.opt.fp16_partitioned_groups_flat, values, strict=True):
            flat.copy_(v.to(flat.device))
        persistent = self.opt.persistent_parameters
        if persistent:  # small parameters stay gathered between steps: refresh them as DeepSpeed's _post_step does
            persistent[0].all_gather(persistent)

    def swap_in(self, avg: list[torch.Tensor]) -> None:
        self._write(avg)

    def restore(self) -> None:
        self._write(self.tensors())


def build_source(strategy: Any, model: torch.nn.Module, *, world_size: int, rank: int, device: str) -> Any:
    """The source for the trainer's strategy (after its setup: engines built, parameters sharded)."""
    engine = getattr(strategy, "deepspeed_engine", None) if hasattr(strategy, "zero_stage_3") else None
    if engine is not None:
        stage = int(engine.zero_optimization_stage())
        if stage == 3:
            return Zero3Source(engine.optimizer, model)
        return Zero12Source(engine.optimizer, model, stage)
    if any(hasattr(p, "device_mesh") and hasattr(p, "to_local") for p in model.parameters()):
        return FSDPSource(model)
    return ParamSource(model, world_size=world_size, rank=rank, device=device)
