"""FLOPs per token and device peaks, for ``perf/mfu``. Import-light (used by `rewarm check`)."""

from __future__ import annotations

# Dense bf16 tensor-core peak FLOP/s per device (no sparsity), from the vendors' data sheets.
PEAK_BF16_FLOPS = {
    "A100": 312e12,
    "H100": 989e12,  # SXM; the PCIe card is lower (756e12) and is matched first below
    "H100 PCIe": 756e12,
    "H200": 989e12,
}


def peak_flops(device_name: str) -> float | None:
    """Peak bf16 FLOP/s of a CUDA device from its name (e.g. 'NVIDIA H100 80GB HBM3'), None when unknown."""
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if all(part in device_name for part in key.split()):
            return PEAK_BF16_FLOPS[key]
    return None


def flops_per_token(num_layers: int, hidden_size: int, vocab_size: int, seq_len: int,
                    intermediate_size: int | None = None) -> float:
    """Training FLOPs per token (forward + backward = 3 x forward), counting matmuls only (PaLM appendix B
    convention, with the non-embedding parameters counted exactly for GPT-NeoX):

    forward per token = 2 * (layer matmul params + output projection params) + attention scores and values
    - layer matmul params per layer: QKV 3d^2 + out d^2 + MLP 2 d ffn
    - output (unembedding) projection: d * vocab
    - attention: QK^T and AV, 2 * 2 * seq_len * d per layer (causal masking not discounted)
    """
    d, ffn = hidden_size, intermediate_size or 4 * hidden_size
    matmul_params = num_layers * (4 * d * d + 2 * d * ffn) + d * vocab_size
    attention = num_layers * 2 * 2 * seq_len * d
    return 3.0 * (2.0 * matmul_params + attention)
