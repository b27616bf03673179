"""trainer.on_nonfinite on real faults: a poisoned batch (a token whose input embedding is NaN, see
nonfinite_world.py) and an LR that really diverges. stop: ends at that step with an error naming the step, the
LR and the batch's sources, saves nothing of the broken state, and resume=auto with a lower LR goes on; skip:
the update is dropped (weights, AdamW moments and step counters bit-identical), counted in train/skipped_steps,
and the run stops after trainer.max_skipped_steps consecutive skips. Two DDP ranks decide alike."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pytest
import torch

from rewarm.cli import main
from rewarm.config import batch_plan, load
from rewarm.schedules import build_lr_fn
from rewarm.training.metrics import read_metrics
from tests.conftest import tiny_overrides
from tests.faults.nonfinite_world import build_poisoned_world


@pytest.fixture(scope="module")
def poisoned(tiny_world, tmp_path_factory) -> dict[str, Path]:
    return build_poisoned_world(tiny_world, tmp_path_factory.mktemp("poison"))


def poisoned_overrides(world, poisoned, out: Path, **extra) -> list[str]:
    base = {"model__name_or_path": poisoned["model"], "data__train__slimpajama__paths": f"[{poisoned['train']}]",
            "trainer__max_steps": 10, "trainer__val_every_steps": 0, "checkpoint__every_steps": 1,
            "checkpoint__keep_last": 20, "logging__wandb__mode": "disabled",
            "data__streams": 1}  # one stream reads the file in order: the poison is document ``poison_at`` of it
    return tiny_overrides(world, out, **{**base, **extra})


def skipped_steps(rows: list[dict[str, str]]) -> list[int]:
    """Steps whose update was skipped: where the cumulative train/skipped_steps grows."""
    counts = [(int(r["step"]), int(float(r["train/skipped_steps"]))) for r in rows if r["train/skipped_steps"]]
    return [s for (s, n), (_, prev) in zip(counts, [(-1, 0), *counts], strict=False) if n > prev]


def train_state(ckpt: Path) -> tuple[dict, list]:
    """(model weights, AdamW state per parameter: exp_avg, exp_avg_sq, step) of a Lightning checkpoint."""
    state = torch.load(ckpt / "state.ckpt", weights_only=True)
    return state["state_dict"], list(state["optimizer_states"][0]["state"].values())


def assert_same(a, b) -> None:
    assert a.keys() == b.keys() if isinstance(a, dict) else len(a) == len(b)
    for x, y in (zip(a.values(), b.values(), strict=True) if isinstance(a, dict) else zip(a, b, strict=True)):
        if isinstance(x, dict):
            assert_same(x, y)
        else:
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)  # bit-identical (NaN rows included)


def test_skip_drops_the_update_and_leaves_adam_untouched(tiny_world, poisoned, empty_yaml, tmp_path):
    out = tmp_path / "runs"
    assert main(["train", str(empty_yaml), *poisoned_overrides(tiny_world, poisoned, out,
                                                              trainer__on_nonfinite="skip")]) == 0
    rows = read_metrics(out / "t" / "metrics.csv")
    skipped = skipped_steps(rows)
    assert skipped and skipped[0] > 0, rows  # the poisoned document is not in the first batch
    ckpts = out / "t" / "checkpoints"
    for s in skipped:  # checkpoint step{s} = state before step s, step{s+1} = after it
        assert not math.isfinite(float(rows[s]["train/loss"] or "nan"))  # metrics.csv writes NaN as empty
        before, after = train_state(ckpts / f"step{s:08d}"), train_state(ckpts / f"step{s + 1:08d}")
        assert_same(before[0], after[0])  # weights
        assert_same(before[1], after[1])  # exp_avg, exp_avg_sq and the step counter of every parameter
    good = next(s for s in range(1, 9) if s not in skipped)
    w0, w1 = train_state(ckpts / f"step{good:08d}")[0], train_state(ckpts / f"step{good + 1:08d}")[0]
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if "lm_head" in k)  # other steps train
    assert int(float(rows[9]["train/skipped_steps"])) == len(skipped)


def test_skip_stops_after_max_skipped_steps(tiny_world, poisoned, empty_yaml, tmp_path, capsys):
    rc = main(["train", str(empty_yaml), *poisoned_overrides(
        tiny_world, poisoned, tmp_path / "runs", trainer__on_nonfinite="skip", trainer__max_skipped_steps=1)])
    assert rc == 1
    assert "1 consecutive steps skipped (trainer.max_skipped_steps=1)" in capsys.readouterr().err


def test_stop_on_a_poisoned_batch_keeps_the_last_good_checkpoint(tiny_world, poisoned, empty_yaml, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", str(empty_yaml), *poisoned_overrides(tiny_world, poisoned, out)]) == 1
    err = capsys.readouterr().err
    m = re.search(r"error: non-finite loss or gradient at step (\d+) \(LR ([0-9.e+-]+), .*"
                  r"this rank's batch: slimpajama: 2 rows\)", err)
    assert m, err
    step = int(m.group(1))
    run_dir = out / "t"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir())[-1] == f"step{step:08d}"  # nothing after
    rows = read_metrics(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(step))  # every good step, flushed
    assert all(math.isfinite(float(r["train/loss"])) for r in rows)
    assert not (run_dir / "summary.json").exists()
    cfg = load(str(empty_yaml), poisoned_overrides(tiny_world, poisoned, out))
    lr = build_lr_fn(cfg.schedule, 10, batch_plan(cfg).tokens_per_step)(step)
    assert float(m.group(2)) == pytest.approx(lr, rel=1e-3)  # the LR of that step, as printed


def test_a_diverging_lr_stops_and_resume_with_a_lower_lr_goes_on(tiny_world, empty_yaml, tmp_path, capsys, caplog):
    """Warmup towards max_lr=100 diverges for real (NaN gradients at step 4); the checkpoint of step 3 is the
    newest; resume=auto with max_lr=1e-3 and resume.allow_config_change=true finishes from it, logged."""
    common = {"trainer__max_steps": 12, "schedule__warmup_steps": 10, "schedule__min_lr": 1e-5,
              "trainer__val_every_steps": 0, "checkpoint__every_steps": 3, "logging__wandb__mode": "disabled"}
    out = tmp_path / "runs"
    assert main(["train", str(empty_yaml), *tiny_overrides(tiny_world, out, schedule__max_lr=100, **common)]) == 1
    err = capsys.readouterr().err
    m = re.search(r"non-finite loss or gradient at step (\d+) \(LR ([0-9.e+-]+),", err)
    assert m, err
    step = int(m.group(1))
    assert step > 3 and float(m.group(2)) == pytest.approx(100 * step / 10)
    ckpts = sorted(p.name for p in (out / "t" / "checkpoints").iterdir())
    assert ckpts[-1] == f"step{3 * (step // 3):08d}" and int(ckpts[-1][4:]) <= step
    first = read_metrics(out / "t" / "metrics.csv")
    with caplog.at_level(logging.WARNING, logger="rewarm"):
        assert main(["train", str(empty_yaml), *tiny_overrides(tiny_world, out, schedule__max_lr=1e-3, **common),
                     "resume.allow_config_change=true"]) == 0
    assert "resume.allow_config_change=true: continuing from" in caplog.text
    assert "schedule.max_lr: 100.0 -> 0.001" in caplog.text
    rows = read_metrics(out / "t" / "metrics.csv")
    resumed_at = int(ckpts[-1][4:])
    assert rows[:resumed_at] == first[:resumed_at]
    assert [int(r["step"]) for r in rows] == list(range(13))
    assert float(rows[resumed_at]["optim/lr"]) == pytest.approx(1e-3 * resumed_at / 10)  # the new LR at once
    assert all(math.isfinite(float(r["train/loss"])) for r in rows[:-1])


@pytest.mark.slow
def test_two_ddp_ranks_take_the_same_decision(tiny_world, empty_yaml, tmp_path):
    """The poisoned document lands on one rank only; its NaN reaches both ranks' global gradient norm, so both
    skip the same step (a differing decision would hang the next collective or fork the weights), and with
    on_nonfinite=stop both stop at the same step with the error."""
    from tests.faults.test_strategy_resume import torchrun_train
    from tests.scale.helpers import tail

    poisoned = build_poisoned_world(tiny_world, tmp_path / "world", docs=8, files=2)  # a file per rank
    extra = {"trainer__accelerator": "cpu", "trainer__devices": 2, "trainer__strategy": "ddp",
             "trainer__global_batch_size": 4, "trainer__max_steps": 16, "data__streams": 2}  # a stream per file
    out, log = tmp_path / "skip", tmp_path / "skip.log"
    assert torchrun_train(empty_yaml, poisoned_overrides(tiny_world, poisoned, out, trainer__on_nonfinite="skip",
                                                         **extra), log) == 0, tail(log)
    rows = read_metrics(out / "t" / "metrics.csv")
    skipped = skipped_steps(rows)
    assert skipped and skipped[0] > 0, tail(log)
    ckpts = out / "t" / "checkpoints"
    for s in skipped:
        before, after = train_state(ckpts / f"step{s:08d}"), train_state(ckpts / f"step{s + 1:08d}")
        assert_same(before[0], after[0])
        assert_same(before[1], after[1])
    text = log.read_text()
    assert text.count("update skipped") == 2 * len(skipped)  # each rank logged each skip
    assert text.count("loss nan on this rank") == len(skipped)  # the NaN was on one rank only

    out, log = tmp_path / "stop", tmp_path / "stop.log"
    assert torchrun_train(empty_yaml, poisoned_overrides(tiny_world, poisoned, out, **extra), log) != 0
    errors = re.findall(r"error: non-finite loss or gradient at step (\d+)", log.read_text())
    assert errors == [str(skipped[0])] * 2, tail(log)  # both ranks, the same step
