"""One ``TaskEvaluator.evaluate``: the model is back in its mode (HFLM's constructor calls ``model.eval()``), the
RNG streams are where they were, the values repeat; lm-eval keys become rewarm metric names."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rewarm.tasks.build import build_task_evaluator
from rewarm.tasks.config import TasksConfig
from rewarm.tasks.results import metric_name, row_metrics
from tests.tasks.conftest import GROUP, MC, PPL


@pytest.fixture(scope="module")
def evaluator(task_dir):
    return build_task_evaluator(TasksConfig(names=[GROUP], include_paths=[str(task_dir)], batch_size=4,
                                            bootstrap_iters=20, limit=6))


@pytest.mark.parametrize("mode", [True, False])
def test_mode_and_rng_untouched(evaluator, tiny_world, mode) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_world["model"]).train(mode)
    tok = AutoTokenizer.from_pretrained(tiny_world["model"])
    pad = tok.pad_token
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    first = evaluator.evaluate(model, tok)  # the first call also builds the HFLM (which calls model.eval())
    assert model.training is mode
    again = evaluator.evaluate(model, tok)
    assert model.training is mode
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    assert first.values == again.values and set(first.values) == {MC, PPL, GROUP}
    assert first.requests == {MC: 24, PPL: 6} and first.documents == {MC: 6, PPL: 6}
    assert tok.pad_token == pad  # HFLM sets a pad token on a copy, not on the caller's tokenizer


def test_metric_names() -> None:
    assert metric_name("acc,none") == "acc"
    assert metric_name("acc_stderr,none") == "acc_stderr"
    assert metric_name("exact_match,strict-match") == "exact_match_strict-match"
    assert metric_name("exact_match_stderr,flexible-extract") == "exact_match_flexible-extract_stderr"
    assert metric_name("alias") is None and metric_name("sample_len") is None
    assert row_metrics({"arc_easy": {"acc": 0.5, "acc_norm": None}}) == {"task/arc_easy/acc": 0.5}
