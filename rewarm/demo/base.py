"""The demo's tiny Pythia-shaped base model, pre-trained on upstream from scratch through ``rewarm.training.run.run``.

The architecture is Pythia's in miniature (GPT-NeoX: rotary on 25 % of each head, parallel residual,
untied embeddings, no dropout, vocabulary padded to a multiple of 128 above the tokenizer's size as
50277 -> 50304). The pre-training is an ordinary rewarm run (``model.init=scratch``, linear warmup +
cosine to 0.1 x peak, Gupta et al.'s min LR) whose ``hf/step<N>/`` exports are kept like Pythia's
revisions; the final model is ``<base run>/hf``. A stamp file makes a second ``rewarm demo`` reuse it.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rewarm.demo.corpus import CorpusPaths
from rewarm.demo.tokenizer import padded_vocab_size

log = logging.getLogger(__name__)

BASE_VERSION = 1


@dataclass(frozen=True)
class ModelShape:
    """A GPT-NeoX in miniature. Parameters ~ 2 x vocab x hidden (untied embeddings) + 12 x layers x hidden^2."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 2048

    def gpt_neox_config(self, vocab_rows: int, eos_id: int = 0) -> Any:
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(
            vocab_size=vocab_rows, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, intermediate_size=4 * self.hidden_size,
            rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True, tie_word_embeddings=False,
            max_position_embeddings=self.max_positions, hidden_dropout=0.0, attention_dropout=0.0,
            initializer_range=0.02, layer_norm_eps=1e-5, bos_token_id=eos_id, eos_token_id=eos_id,
        )


@dataclass(frozen=True)
class BaseRecipe:
    """How the base model is pre-trained (on the upstream training split only)."""

    shape: ModelShape = ModelShape()
    seq_len: int = 64
    batch_size: int = 16
    """Rows per optimizer step (tokens per step = batch_size x seq_len)."""
    steps: int = 600
    max_lr: float = 3e-3
    """Peak LR; min LR = 0.1 x peak (the LR the base ends at, as Pythia's 3e-5 = 0.1 x 3e-4)."""
    warmup_fraction: float = 0.05
    revision_every: int = 150
    """Export hf/step<N>/ every N steps (Pythia: every 1000)."""
    val_tokens: int = 8192
    val_every: int = 100
    seed: int = 0

    @property
    def min_lr(self) -> float:
        return 0.1 * self.max_lr


def write_init_dir(tokenizer_dir: Path, out_dir: Path, shape: ModelShape) -> Path:
    """A model directory for ``model.init=scratch``: the tokenizer plus a GPT-NeoX config.json (no weights)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = shape.gpt_neox_config(padded_vocab_size(len(tok)), eos_id=tok.eos_token_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return out_dir


def base_config(recipe: BaseRecipe, corpus: CorpusPaths, init_dir: Path, out_dir: Path, name: str) -> dict[str, Any]:
    """The pre-training run as a config mapping (written to YAML and loaded by ``rewarm.config.load``)."""
    val = {"preset": "pile", "root": str(corpus.root / "pile"), "role": "upstream", "max_tokens": recipe.val_tokens}
    return {
        "run": {"name": name, "out_dir": str(out_dir), "seed": recipe.seed},
        "model": {"name_or_path": str(init_dir), "init": "scratch"},
        "data": {
            "seq_len": recipe.seq_len, "num_workers": 0, "cache_dir": str(out_dir / ".cache"),
            "train": {"pile": {"preset": "pile", "root": str(corpus.root / "pile"), "weight": 1.0}},
            "val": {"pile": val},
        },
        "trainer": {"max_steps": recipe.steps, "micro_batch_size": recipe.batch_size, "accelerator": "cpu",
                    "val_every_steps": recipe.val_every},
        "schedule": {"name": "cosine", "max_lr": recipe.max_lr, "min_lr": recipe.min_lr,
                     "warmup_fraction": recipe.warmup_fraction},
        "checkpoint": {"every_steps": 0, "hf_every_steps": recipe.revision_every},
        "resume": {"mode": "never"},
        "logging": {"wandb": {"mode": "disabled"}, "progress": "off"},
    }


def build_base(cache: Path, corpus: CorpusPaths, tokenizer_dir: Path, recipe: BaseRecipe, name: str = "base") -> Path:
    """Pre-train (or reuse) the base model; returns its run directory (final model in ``hf/``)."""
    from omegaconf import OmegaConf

    from rewarm.config import load
    from rewarm.training.run import run

    run_dir = cache / name
    stamp = {"recipe": asdict(recipe), "corpus": _read_json(corpus.manifest).get("fingerprint"),
             "tokenizer": _read_json(tokenizer_dir / "rewarm_demo_stamp.json"), "v": BASE_VERSION}
    stamp = json.loads(json.dumps(stamp))  # as it reads back from the file
    if _read_json(run_dir / "rewarm_demo_stamp.json") == stamp and (run_dir / "hf" / "config.json").is_file():
        log.info("base model: reusing %s", run_dir)
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    init_dir = write_init_dir(tokenizer_dir, cache / f"{name}-init", recipe.shape)
    config_path = cache / f"{name}.yaml"
    config_path.write_text(OmegaConf.to_yaml(OmegaConf.create(base_config(recipe, corpus, init_dir, cache, name))))
    log.info("base model: pre-training %s from scratch on upstream (%d steps)", run_dir, recipe.steps)
    out = run(load(config_path))
    (out / "rewarm_demo_stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
    return out


def revisions(base_run: Path) -> list[str]:
    """The kept intermediate revisions, oldest first: ``["step150", "step300", ...]``."""
    found = [p.name for p in (base_run / "hf").glob("step*") if p.name[4:].isdigit()]
    return sorted(found, key=lambda r: int(r[4:]))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
