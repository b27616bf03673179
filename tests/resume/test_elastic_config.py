"""Elastic resume, the checks before any compute (rewarm.checkpoints.resume): which keys a checkpoint with a recorded
layout lets change, the global batch compared as rows per optimizer step, the arithmetic when it cannot be kept,
the one log line, old checkpoints held to their world size, and the loop counters moved to a new accumulation."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.checkpoints.resume import (
    GLOBAL_BATCH,
    Layout,
    ResumePoint,
    check_config_change,
    check_world_size,
    elastic_line,
    manifest_info,
)
from rewarm.config import batch_plan, keep_batch_hint, load, to_dict
from rewarm.errors import ConfigError, ResumeError
from rewarm.training.module import rescale_batch_progress
from tests.conftest import tiny_overrides


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Path]:
    return {"root": tmp_path / "data", "model": tmp_path / "model"}  # paths only: nothing is read here


def _cfg(world: dict[str, Path], tmp_path: Path, **extra: object):
    return load(None, tiny_overrides(world, tmp_path / "runs", **extra))


def _layout(cfg) -> Layout:
    plan = batch_plan(cfg)
    return Layout(plan.world_size, plan.micro_batch_size, plan.grad_accum_steps, 64)


@pytest.mark.parametrize("now_extra", [
    {"trainer__devices": 1, "trainer__global_batch_size": 4},  # 2 ranks -> 1, accumulation 1 -> 2
    {"trainer__devices": 4, "trainer__global_batch_size": 4, "trainer__micro_batch_size": 1},
    {"trainer__num_nodes": 2, "trainer__devices": 1, "trainer__global_batch_size": 4},
    {"trainer__global_batch_tokens": 64, "trainer__devices": 1},  # the same 4 rows x 16 tokens, set otherwise
])
def test_layout_keys_change_freely_when_the_rows_per_step_stay(world, tmp_path, now_extra, caplog):
    was = _cfg(world, tmp_path, trainer__devices=2, trainer__global_batch_size=4)
    now = _cfg(world, tmp_path, **now_extra)
    check_config_change(to_dict(was), to_dict(now), allow=False, source="ckpt",
                        layouts=(_layout(was), _layout(now)))
    assert "allow_config_change" not in caplog.text


def test_implicit_global_batch_that_changes_is_refused_with_the_arithmetic(world, tmp_path):
    was = _cfg(world, tmp_path, trainer__devices=2)  # global batch left to its default: 2 rows x 2 ranks
    now = _cfg(world, tmp_path, trainer__devices=1)
    with pytest.raises(ResumeError) as e:
        check_config_change(to_dict(was), to_dict(now), allow=False, source="ckpt",
                            layouts=(_layout(was), _layout(now)))
    text = str(e.value)
    assert f"{GLOBAL_BATCH}: 4 -> 2" in text, text
    assert "2 rows x accumulation 1 x 2 ranks = 4 rows" in text and "2 rows x accumulation 1 x 1 rank = 2 rows" in text
    assert "trainer.global_batch_size=4" in text and "trainer.devices" not in text.split("(")[0]
    # allowed: a meaning change like any other, logged
    check_config_change(to_dict(was), to_dict(now), allow=True, source="ckpt", layouts=(_layout(was), _layout(now)))


def test_old_checkpoints_keep_the_layout_keys_as_meaning_keys(world, tmp_path):
    was = _cfg(world, tmp_path, trainer__devices=2, trainer__global_batch_size=4)
    now = _cfg(world, tmp_path, trainer__devices=2, trainer__global_batch_size=4, trainer__micro_batch_size=1)
    with pytest.raises(ResumeError, match=r"trainer\.micro_batch_size: 2 -> 1"):
        check_config_change(to_dict(was), to_dict(now), allow=False, source="ckpt")  # no layouts: as before


def test_old_checkpoint_on_another_world_size_is_refused_naming_both(world, tmp_path):
    was = _cfg(world, tmp_path, trainer__devices=2, trainer__global_batch_size=4)
    manifest = {"step": 4, "config": to_dict(was)}  # written before layouts were recorded
    check_world_size(manifest, Layout(2, 1, 2), "ckpt/step00000004")  # the same world size: fine
    with pytest.raises(ResumeError) as e:
        check_world_size(manifest, Layout(1, 2, 2), "ckpt/step00000004")
    text = str(e.value)
    assert "before elastic resume" in text and "on 2 ranks (trainer.devices=2 x trainer.num_nodes=1)" in text
    assert "this run has 1 rank" in text and "trainer.devices=2 trainer.num_nodes=1" in text


def test_the_elastic_line():
    assert elastic_line(Layout(2, 2, 1, 64), Layout(1, 2, 2, 64)) == (
        "elastic resume: 2 ranks -> 1 rank, accumulation 1 -> 2, streams 64 unchanged")
    assert elastic_line(Layout(1, 2, 4, 64), Layout(4, 2, 1, 64)) == (
        "elastic resume: 1 rank -> 4 ranks, accumulation 4 -> 1, streams 64 unchanged")
    assert elastic_line(Layout(2, 2, 1, 64), Layout(2, 1, 2, 64)) == (
        "elastic resume: 2 ranks unchanged, accumulation 1 -> 2, micro-batch 2 -> 1 rows, streams 64 unchanged")
    assert elastic_line(Layout(2, 2, 1, 64), Layout(2, 2, 1, 64)) is None


def test_manifest_records_the_layout_and_the_point_knows_a_world_change(world, tmp_path):
    cfg = _cfg(world, tmp_path, trainer__devices=2)
    info = manifest_info(to_dict(cfg), _layout(cfg))
    saved = Layout.from_dict(info["layout"])
    assert saved == _layout(cfg) and info["layout"]["rows_per_step"] == 4
    point = ResumePoint(6, False, saved)
    assert point.world_changed(Layout(1, 2, 2, 64)) and not point.world_changed(Layout(2, 1, 2, 64))
    assert not ResumePoint(6, False).world_changed(Layout(1, 2, 2, 64))  # an old checkpoint: nothing to reshard


def test_a_global_batch_that_cannot_be_kept_names_the_arithmetic(world, tmp_path):
    with pytest.raises(ConfigError) as e:
        batch_plan(_cfg(world, tmp_path, trainer__devices=3, trainer__global_batch_size=4))
    text = str(e.value)
    assert "micro_batch_size x devices x num_nodes = 2 x 3 x 1 = 6" in text
    assert "4 rows cannot be split evenly over 3 ranks" in text and "(1, 2, 4)" in text
    assert keep_batch_hint(8, 2, 3).endswith("set trainer.global_batch_size=8 and trainer.micro_batch_size to one "
                                             "of 1, 2, 4 (accumulation 4, 2, 1), not 3")


def test_batch_progress_moves_to_the_new_accumulation():
    """Saved after step 5 with accumulation 1 (in train_batch_end: completed one behind); resumed with 2."""
    ckpt = {"loops": {"fit_loop": {"epoch_loop.batch_progress": {
        "total": {"ready": 5, "started": 5, "processed": 5, "completed": 4},
        "current": {"ready": 5, "started": 5, "processed": 5, "completed": 4}, "is_last_batch": False}}}}
    rescale_batch_progress(ckpt, steps=5, saved_accum=1, accum=2)
    progress = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert progress["total"] == {"ready": 10, "started": 10, "processed": 10, "completed": 9}
    assert progress["current"] == progress["total"]
