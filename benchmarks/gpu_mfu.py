"""GPU throughput and MFU of a Pythia-410M-shaped GPT-NeoX at sequence length 2048 in bf16.

Model: 24 layers, d=1024, 16 heads, ffn 4096, vocab 50304, rotary 25 %, parallel residual, untied
embeddings (Pythia-410M), fresh weights. One training step = forward + backward + grad clip 1.0 + fused
AdamW, on random token rows (no data pipeline: this is the model's limit on the device). Attention: SDPA,
and flash-attn 2 when ``flash_attn`` is importable. MFU = tokens/s x ``rewarm.training.perf.flops_per_token`` /
``rewarm.training.perf.peak_flops(device name)``. Target >= 0.45 on one H100.

Without CUDA it prints why it skips and ends with ``gpu_mfu=nan`` (exit 0). Last line: ``gpu_mfu=<best MFU>``.

    .venv/bin/python benchmarks/gpu_mfu.py [--batch 8] [--steps 20] [--precision bf16-mixed|bf16-true]
                                           [--compile] [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import _common as C

PYTHIA_410M = {"d": 1024, "layers": 24, "heads": 16, "ffn": 4096, "vocab": 50304}
SEQ = 2048


def attn_backends() -> list[str]:
    """sdpa always; flash_attention_2 when flash-attn is installed."""
    out = ["sdpa"]
    try:
        import flash_attn  # noqa: F401

        out.append("flash_attention_2")
    except ImportError:
        print("flash-attn not installed: measuring SDPA only (pip install 'rewarm[flash]' on a CUDA machine)")
    return out


def build(attn: str, precision: str, compile_: bool, shape: dict[str, int]) -> tuple[Any, Any]:
    """(model on cuda, fused AdamW). bf16-true: bf16 weights; bf16-mixed: fp32 weights under autocast."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = C.neox_config(shape["vocab"], shape["d"], shape["layers"], shape["heads"], SEQ, ffn=shape["ffn"])
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=dtype).cuda()
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    if compile_:
        model = torch.compile(model)
    return model, opt


def step(model: Any, opt: Any, x: Any, precision: str) -> None:
    import torch
    import torch.nn.functional as F

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        logits = model(input_ids=x[:, :-1], use_cache=False).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure(attn: str, args: argparse.Namespace, shape: dict[str, int]) -> float:
    """Training tokens/s over ``args.steps`` steps after ``args.warmup`` warm-up steps."""
    import torch

    model, opt = build(attn, args.precision, args.compile, shape)
    x = torch.randint(0, shape["vocab"], (args.batch, SEQ + 1), device="cuda")
    for _ in range(args.warmup):
        step(model, opt, x, args.precision)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(model, opt, x, args.precision)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() / 2**30
    del model, opt
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    tps = args.batch * SEQ * args.steps / dt
    print(f"{attn}: {dt / args.steps * 1e3:.1f} ms/step, {tps:,.0f} tokens/s, peak memory {mem:.1f} GiB", flush=True)
    return tps


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p)
    p.add_argument("--batch", type=int, default=8, help="rows of 2048 tokens per step")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--precision", choices=("bf16-mixed", "bf16-true"), default="bf16-mixed")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = p.parse_args(argv)
    import torch

    from rewarm.training.perf import flops_per_token, peak_flops

    C.print_machine()
    if not torch.cuda.is_available():
        print("skipped: no CUDA device here (run this on a GPU machine)", flush=True)
        print("gpu_mfu=nan")
        return math.nan
    C.quiet_logs()
    shape = dict(PYTHIA_410M, layers=2) if args.quick else PYTHIA_410M
    if args.quick:
        args.steps, args.warmup, args.batch = 2, 1, 1
    name = torch.cuda.get_device_name()
    peak = peak_flops(name)
    fpt = flops_per_token(shape["layers"], shape["d"], shape["vocab"], SEQ, shape["ffn"])
    print(f"model: Pythia-410M shape {shape}, seq {SEQ}, batch {args.batch}, {args.precision}, "
          f"compile={args.compile}; {fpt / 1e9:.2f} GFLOP/token; peak {peak or float('nan'):.3g} FLOP/s ({name})",
          flush=True)
    best = math.nan
    for attn in attn_backends():
        tps = measure(attn, args, shape)
        mfu = tps * fpt / peak if peak else math.nan
        print(f"{attn}: MFU {mfu:.3f}", flush=True)
        best = mfu if math.isnan(best) else max(best, mfu)
    if peak is None:
        print(f"unknown peak FLOP/s for {name!r}: add it to rewarm.training.perf.PEAK_BF16_FLOPS", flush=True)
    C.print_result("gpu_mfu", best, f">= 0.45 on one H100 ({'met' if best >= 0.45 else 'MISSED'})")
    return best


if __name__ == "__main__":
    main(sys.argv[1:])
