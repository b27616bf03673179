"""The module's loss, optimizer groups and metrics helpers."""

from __future__ import annotations

import math

import pytest
import torch

from rewarm.evaluation.perplexity import role_metrics, token_nll
from rewarm.model.load import load_model
from rewarm.training.module import param_groups
from rewarm.training.perf import flops_per_token, peak_flops


def test_loss_equals_hugging_face_loss(tiny_world) -> None:
    model = load_model(str(tiny_world["model"]), None).eval()
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(1, 300, (3, 17), generator=g)
    nll = token_nll(model, rows[:, :-1], rows[:, 1:])
    ours = nll.sum() / nll.numel()
    hf = model(input_ids=rows, labels=rows).loss  # HF shifts internally: predicts rows[:, 1:]
    assert ours.item() == pytest.approx(hf.item(), rel=1e-6)


def test_masked_labels_take_no_loss(tiny_world) -> None:
    model = load_model(str(tiny_world["model"]), None).eval()
    rows = torch.randint(1, 300, (1, 9))
    labels = rows[:, 1:].clone()
    labels[0, 3] = -100
    nll = token_nll(model, rows[:, :-1], labels)
    assert nll[0, 3] == 0 and (nll[0, [0, 1, 2, 4]] > 0).all()


def test_weight_decay_groups_for_gpt_neox(tiny_world) -> None:
    model = load_model(str(tiny_world["model"]), None)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    skipped = sorted(names[id(p)] for p in no_decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith(".weight") for n in decayed)
    out_name = names[id(model.get_output_embeddings().weight)]  # lm_head (transformers 5) / embed_out (4.x)
    assert "gpt_neox.embed_in.weight" in decayed and out_name in decayed
    assert "gpt_neox.layers.0.attention.query_key_value.weight" in decayed
    assert all(n.endswith(".bias") or "layernorm" in n or "final_layer_norm" in n for n in skipped)
    assert "gpt_neox.layers.0.input_layernorm.weight" in skipped and "gpt_neox.final_layer_norm.bias" in skipped
    assert len(decayed) + len(skipped) == len(names)


def test_flops_per_token_pythia_410m_hand_count() -> None:
    # L=24, d=1024, ffn=4096, V=50304, T=2048:
    # matmul params = 24 * (4*1024^2 + 2*1024*4096) + 1024*50304 = 353,501,184
    # attention     = 24 * 2 * 2 * 2048 * 1024                     = 201,326,592
    # train FLOPs   = 3 * (2 * 353,501,184 + 201,326,592)          = 2,724,986,880
    assert flops_per_token(24, 1024, 50304, 2048, 4096) == 2_724_986_880


def test_peak_flops_table() -> None:
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("Tesla T4") is None


def test_forgetting_and_adaptation_signs() -> None:
    assert role_metrics("pile", "upstream", 2.5, 2.0) == {"forgetting/pile": 0.5}
    assert role_metrics("sp", "downstream", 2.5, 3.0) == {"adaptation/sp": 0.5}
    assert role_metrics("sp", "downstream", 2.5, None) == {}
    assert math.isclose(role_metrics("pile", "upstream", 2.0, 2.0)["forgetting/pile"], 0.0)


def test_weighted_subset_loss() -> None:
    from rewarm.evaluation.perplexity import SetResult, weighted_loss

    subsets = {"a": (4.0, 2), "b": (9.0, 3), "c": (0.0, 0)}  # losses 2.0 and 3.0; c absent
    assert weighted_loss(subsets, {"a": 1.0, "b": 3.0, "c": 5.0}) == pytest.approx((1 * 2.0 + 3 * 3.0) / 4)
    assert weighted_loss(subsets, {"c": 1.0}) is None
    m = SetResult(13.0, 5, subsets).metrics("sp", {"a": 1.0, "b": 1.0})
    assert m["val/sp/loss_weighted"] == pytest.approx(2.5) and m["val/sp/loss"] == pytest.approx(13 / 5)
