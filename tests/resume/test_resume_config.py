"""The config check of a resume (rewarm.checkpoints.resume): meaning vs harmless keys, the fingerprint, refusal and override;
the ``resume=`` shorthand."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rewarm.checkpoints.resume import ResumePoint, check_config_change, config_fingerprint, diff_configs, is_harmless
from rewarm.config import load, to_dict
from rewarm.errors import ResumeError
from tests.conftest import tiny_overrides


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Path]:
    return {"root": tmp_path / "data", "model": tmp_path / "model"}  # paths only: nothing is read here


def _config(world: dict[str, Path], tmp_path: Path, **extra: object) -> dict:
    return to_dict(load(None, tiny_overrides(world, tmp_path / "runs", **extra)))


def test_harmless_changes_keep_the_fingerprint(world, tmp_path):
    base = _config(world, tmp_path)
    harmless = _config(world, tmp_path, trainer__val_every_steps=5, trainer__log_every_steps=2,
                       checkpoint__every_steps=7, checkpoint__keep_last=4, logging__level="DEBUG",
                       logging__wandb__mode="disabled", resume="never", data__cache_dir="/tmp/c", run__name="moved")
    assert config_fingerprint(harmless) == config_fingerprint(base)
    meaning, allowed = diff_configs(base, harmless)
    assert meaning == []
    assert {c.key for c in allowed} == {"trainer.val_every_steps", "trainer.log_every_steps", "checkpoint.every_steps",
                                        "checkpoint.keep_last", "logging.level", "logging.wandb.mode", "resume.mode",
                                        "data.cache_dir", "run.name"}


@pytest.mark.parametrize("key, value", [
    ("data__seq_len", 8), ("data__train__slimpajama__weight", 2.0), ("data__num_workers", 2),
    ("model__init", "scratch"), ("model__revision", "step1000"), ("schedule__max_lr", 3e-4),
    ("schedule__warmup_steps", 1), ("trainer__max_steps", 9), ("trainer__micro_batch_size", 1),
    ("trainer__global_batch_size", 4), ("run__seed", 1), ("optimizer__weight_decay", 0.0),
    ("trainer__precision", "bf16-mixed"), ("data__val__pile__max_tokens", 128),
])
def test_meaning_changes_are_refused_with_the_keys_listed(world, tmp_path, key, value):
    base = _config(world, tmp_path)
    now = _config(world, tmp_path, **{key: value}, trainer__val_every_steps=5)
    dotted = key.replace("__", ".")
    assert config_fingerprint(now) != config_fingerprint(base)
    with pytest.raises(ResumeError) as e:
        check_config_change(base, now, allow=False, source="ckpt/step00000004")
    text = str(e.value)
    assert f"{dotted}: " in text and "ckpt/step00000004" in text and "resume.allow_config_change=true" in text
    assert "val_every_steps" not in text


def test_allow_config_change_continues_and_logs_the_keys(world, tmp_path, caplog):
    base = _config(world, tmp_path)
    now = _config(world, tmp_path, schedule__max_lr=3e-4, data__seq_len=8)
    with caplog.at_level(logging.WARNING, logger="rewarm.checkpoints.resume"):
        check_config_change(base, now, allow=True, source="ckpt")
    assert "allow_config_change" in caplog.text
    assert "schedule.max_lr: 0.001 -> 0.0003" in caplog.text and "data.seq_len: 16 -> 8" in caplog.text


def test_a_source_added_or_removed_is_a_change(world, tmp_path):
    base = _config(world, tmp_path)
    now = _config(world, tmp_path, data__train__pile__paths="[/x/*.jsonl.zst]")
    meaning, _ = diff_configs(base, now)
    assert any(c.key.startswith("data.train.pile.") and "<absent>" in str(c) for c in meaning)
    with pytest.raises(ResumeError, match="data.train.pile.paths"):
        check_config_change(base, now, allow=False, source="ckpt")


def test_checkpoint_without_config_is_not_checked(world, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="rewarm.checkpoints.resume"):
        check_config_change(None, _config(world, tmp_path), allow=False, source="old-ckpt")
    assert "old-ckpt stores no config" in caplog.text


def test_every_key_is_meaning_unless_listed():
    assert not is_harmless("data.some_new_key") and not is_harmless("trainer.new_size")
    assert is_harmless("checkpoint.anything") and is_harmless("logging.wandb.tags")
    assert not is_harmless("checkpointx.y")


@pytest.mark.parametrize("value, mode", [("auto", "auto"), ("never", "never"), ("/runs/a/checkpoints/step00000010",
                                                                                "/runs/a/checkpoints/step00000010")])
def test_resume_shorthand(world, tmp_path, value, mode):
    cfg = load(None, tiny_overrides(world, tmp_path, resume=value))
    assert cfg.resume.mode == mode and cfg.resume.allow_config_change is False
    yaml = tmp_path / "c.yaml"
    yaml.write_text(f"resume: {value}\n")
    assert load(yaml, tiny_overrides(world, tmp_path)).resume.mode == mode


def test_resume_point_rows():
    assert ResumePoint(None, False).first_new_row is None
    assert ResumePoint(6, False).first_new_row == 6  # saved after row 5: row 6 is redone
    assert ResumePoint(20, True).first_new_row == 21  # the end checkpoint follows the final row 20
