"""Model and tokenizer loading: a Hugging Face causal LM (GPT-NeoX for Pythia), pretrained or from scratch.

Below ``build_*`` nothing reads the config: plain arguments only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rewarm.data.tokenizer import load_tokenizer, resolve_source
from rewarm.errors import ConfigError

log = logging.getLogger(__name__)

# The tokenizer is loaded by the data pipeline's module (``rewarm tokenize`` needs it without the model); it is
# named here too, beside the model it belongs to.
__all__ = ["check_vocab", "choose_attn_implementation", "count_parameters", "load_model", "load_tokenizer",
           "parameter_count_from_config", "read_model_config", "resolve_source"]

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def choose_attn_implementation(requested: str, device_type: str) -> str:
    """``auto``: flash-attn 2 on CUDA when importable, else SDPA."""
    if requested != "auto":
        return requested
    if device_type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def load_model(
    name_or_path: str,
    revision: str | None,
    *,
    init: str = "pretrained",
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    seed: int = 0,
) -> Any:
    """``init='pretrained'`` loads weights via ``AutoModelForCausalLM.from_pretrained``; ``'scratch'`` builds the
    same architecture with fresh weights drawn under ``seed``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    src, rev = resolve_source(name_or_path, revision)
    torch_dtype = getattr(torch, DTYPES[dtype])
    kwargs: dict[str, Any] = {"revision": rev, "trust_remote_code": trust_remote_code}
    if init == "pretrained":
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, attn_implementation=attn_implementation, **kwargs)
    else:
        config = AutoConfig.from_pretrained(src, **kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(
                config, dtype=torch_dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code
            )
    model.train()  # from_pretrained returns eval mode; dropout (if any) must act in training
    model.config.use_cache = False  # packed rows + position_ids need use_cache=False (DESIGN §3)
    log.info("model %s (%s, %s): %.1fM parameters, attention %s", src, init, dtype, count_parameters(model) / 1e6,
             attn_implementation)
    return model


def check_vocab(model: Any, tokenizer: Any) -> None:
    """Pythia's tokenizer has 50277 tokens and its embedding 50304 rows: fine. The reverse is an error."""
    rows = model.get_input_embeddings().weight.shape[0]
    n = len(tokenizer)
    if n > rows:
        raise ConfigError("model.tokenizer", f"tokenizer has {n} tokens but the model's embedding only {rows} rows")
    if n < rows:
        log.info("tokenizer has %d tokens, embedding %d rows (padding rows are never targets)", n, rows)


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_count_from_config(config: dict[str, Any]) -> int | None:
    """Parameters of a GPT-NeoX from its config.json alone (for `rewarm check`, no torch import)."""
    if config.get("model_type") != "gpt_neox":
        return None
    d, n_layers, v = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    ffn = config.get("intermediate_size", 4 * d)
    per_layer = (
        2 * 2 * d  # two LayerNorms (weight + bias)
        + d * 3 * d + 3 * d  # fused QKV
        + d * d + d  # attention output
        + d * ffn + ffn + ffn * d + d  # MLP
    )
    embed = v * d * (1 if config.get("tie_word_embeddings", False) else 2)
    return n_layers * per_layer + embed + 2 * d  # + final LayerNorm


def read_model_config(name_or_path: str, revision: str | None) -> dict[str, Any] | None:
    """config.json of a local model directory (None for a hub id: not fetched by `rewarm check`)."""
    import json

    try:
        src, _ = resolve_source(name_or_path, revision)
    except ConfigError:
        raise
    path = Path(src) / "config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())
