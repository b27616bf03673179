"""Model loading: pretrained vs scratch, local revisions, attention choice, vocab check, parameter count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rewarm.errors import ConfigError
from rewarm.model.load import (
    check_vocab,
    choose_attn_implementation,
    count_parameters,
    load_model,
    load_tokenizer,
    parameter_count_from_config,
    resolve_source,
)


def test_scratch_has_same_architecture_but_fresh_weights(tiny_world) -> None:
    pre = load_model(str(tiny_world["model"]), None, init="pretrained")
    scratch = load_model(str(tiny_world["model"]), None, init="scratch", seed=1)
    again = load_model(str(tiny_world["model"]), None, init="scratch", seed=1)
    assert type(pre) is type(scratch)
    assert pre.config.to_dict()["hidden_size"] == scratch.config.hidden_size
    assert count_parameters(pre) == count_parameters(scratch)
    name = "gpt_neox.layers.0.attention.query_key_value.weight"
    p, s, a = (dict(m.named_parameters())[name] for m in (pre, scratch, again))
    assert not torch.equal(p, s)
    assert torch.equal(s, a)  # seeded


def test_parameter_count_from_config_matches_torch(tiny_world) -> None:
    model = load_model(str(tiny_world["model"]), None)
    config = json.loads((tiny_world["model"] / "config.json").read_text())
    assert parameter_count_from_config(config) == count_parameters(model)


def test_local_revision_is_a_subdirectory(tiny_world, tmp_path: Path) -> None:
    shutil.copytree(tiny_world["model"], tmp_path / "step10")
    assert resolve_source(str(tmp_path), "step10") == (str(tmp_path / "step10"), None)
    assert resolve_source("EleutherAI/pythia-410m", "step143000") == ("EleutherAI/pythia-410m", "step143000")
    with pytest.raises(ConfigError, match="model.revision"):
        resolve_source(str(tmp_path), "step99")
    with pytest.raises(ConfigError, match="model.name_or_path"):
        resolve_source(str(tmp_path / "missing"), None)


def test_attention_choice() -> None:
    assert choose_attn_implementation("auto", "cpu") == "sdpa"
    assert choose_attn_implementation("eager", "cuda") == "eager"


def test_vocab_padding_is_fine_but_too_small_embedding_is_refused(tiny_world) -> None:
    tok = load_tokenizer(str(tiny_world["model"]), None, None)
    model = load_model(str(tiny_world["model"]), None)
    assert len(tok) < model.get_input_embeddings().weight.shape[0]  # padded like Pythia's 50277 -> 50304
    check_vocab(model, tok)
    model.resize_token_embeddings(len(tok) - 10)
    with pytest.raises(ConfigError, match="model.tokenizer"):
        check_vocab(model, tok)
