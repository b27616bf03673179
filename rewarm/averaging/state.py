"""The EMA's checkpoint format, and reading it back weights-only.

One *shard* per rank that keeps an EMA (a plain dict: loadable with ``torch.load(weights_only=True)``)::

    {"format": "rewarm-ema-1", "rank", "world_size", "strategy", "decay", "updates", "last_step",
     "buffers": [fp32 tensors],
     "fragments": {hf_name: {"shape": [...], "start": s, "buffer": b, "offset": o, "numel": n}}}

Fragment: elements ``[s, s + n)`` of the flattened parameter ``hf_name`` are ``buffers[b].flatten()[o : o + n]``.
Over all shards every parameter is covered exactly once. Unsharded strategies (one process, DDP) store rank 0's
shard inside ``state.ckpt`` (``ckpt["rewarm"]["ema"]["shards"]``); sharded ones (FSDP2, DeepSpeed) write one file
per rank, ``state.ckpt/ema/rank<r>.pt``. The manifest's ``averaging`` entry lists which.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from rewarm.errors import ResumeError

FORMAT = "rewarm-ema-1"
STATE = "state.ckpt"


def shard_file(rank: int) -> str:
    """A rank's shard, relative to ``state.ckpt`` (a directory under the sharded strategies)."""
    return f"ema/rank{rank:05d}.pt"


def assemble(shards: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Full fp32 parameters (Hugging Face names) from the shards of every rank."""
    out: dict[str, torch.Tensor] = {}
    covered: dict[str, int] = {}
    for shard in shards:
        flats = [b.reshape(-1) for b in shard["buffers"]]
        for name, f in shard["fragments"].items():
            full = out.setdefault(name, torch.empty(math.prod(f["shape"]), dtype=torch.float32))
            start, n, off = f["start"], f["numel"], f["offset"]
            full[start:start + n] = flats[f["buffer"]][off:off + n]
            covered[name] = covered.get(name, 0) + n
    shapes = {name: f["shape"] for shard in shards for name, f in shard["fragments"].items()}
    for name, full in out.items():
        if covered[name] != full.numel():
            raise ResumeError(f"the EMA shards cover {covered[name]} of {full.numel()} elements of {name}")
    return {name: full.view(shapes[name]) for name, full in out.items()}


def fill_from(buffers: list[torch.Tensor], fragments: dict[str, dict[str, Any]], shard: dict[str, Any]) -> int:
    """Copy into ``buffers`` (laid out as ``fragments``: this rank's layout) every element ``shard`` (of another
    layout: another world size or strategy) holds of them; returns the number of elements copied. Resharding
    an EMA one saved shard at a time, without ever holding the whole of it."""
    flats, copied = [b.reshape(-1) for b in shard["buffers"]], 0
    for name, old in shard["fragments"].items():
        new = fragments.get(name)
        if new is None:
            continue
        lo = max(old["start"], new["start"])
        hi = min(old["start"] + old["numel"], new["start"] + new["numel"])
        if lo < hi:
            dst = buffers[new["buffer"]].view(-1)
            src = flats[old["buffer"]]
            dst[new["offset"] + lo - new["start"]:new["offset"] + hi - new["start"]] = \
                src[old["offset"] + lo - old["start"]:old["offset"] + hi - old["start"]]
            copied += hi - lo
    return copied


def ema_info(ckpt_dir: Path) -> dict[str, Any] | None:
    """The manifest's ``averaging`` entry of a checkpoint (None: it holds no EMA)."""
    from rewarm.checkpoints.store import read_valid_manifest

    manifest = read_valid_manifest(ckpt_dir)
    if manifest is None:
        raise ResumeError(f"{ckpt_dir} is not a valid rewarm checkpoint")
    info = manifest.get("averaging")
    return info if isinstance(info, dict) and info.get("ema") else None


def read_shards(ckpt_dir: Path) -> list[dict[str, Any]]:
    """Every shard of a checkpoint's EMA, loaded weights-only (a file that needs more is refused)."""
    from rewarm.faults.safe_load import weights_only_loads

    info = ema_info(ckpt_dir)
    if info is None:
        raise ResumeError(f"checkpoint {ckpt_dir} holds no EMA (the run had averaging off, or no update yet)")
    state = ckpt_dir / STATE
    with weights_only_loads(state):
        if state.is_file():
            shards = torch.load(state, map_location="cpu", weights_only=True)["rewarm"]["ema"]["shards"]
        else:
            shards = [torch.load(ckpt_dir / rel, map_location="cpu", weights_only=True) for rel in info["files"]]
    for shard in shards:
        if not isinstance(shard, dict) or shard.get("format") != FORMAT:
            raise ResumeError(f"checkpoint {ckpt_dir}: an EMA shard of an unknown format")
    return shards


def read_ema(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """The EMA of a checkpoint directory as full fp32 tensors keyed by the Hugging Face parameter names."""
    return assemble(read_shards(Path(ckpt_dir)))
