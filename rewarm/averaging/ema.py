"""The EMA arithmetic on lists of tensors: avg <- d * avg + (1 - d) * weights, kept in fp32.

Done as one fused ``torch._foreach_lerp_`` over all tensors (avg + (1 - d) * (weights - avg)): a few passes over
memory per update. With d = 0 the average *is* the weights, exactly (lerp with weight 1 returns its end point).
"""

from __future__ import annotations

import torch


def init_average(sources: list[torch.Tensor], device: str) -> list[torch.Tensor]:
    """fp32 copies of ``sources`` (the first update: avg = weights); ``device``: same | cpu."""
    return [s.detach().to(device="cpu" if device == "cpu" else s.device, dtype=torch.float32, copy=True)
            for s in sources]


@torch.no_grad()
def update_average(avg: list[torch.Tensor], sources: list[torch.Tensor], decay: float) -> None:
    """In place: ``avg[i] <- decay * avg[i] + (1 - decay) * sources[i]`` (sources of any dtype / device)."""
    if not avg:
        return
    srcs = [s.detach() if s.dtype == a.dtype and s.device == a.device else s.detach().to(a.device, a.dtype)
            for a, s in zip(avg, sources, strict=True)]
    torch._foreach_lerp_(avg, srcs, 1.0 - decay)
