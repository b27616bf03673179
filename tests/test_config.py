"""Config loading: YAML onto the schema, dotted overrides, and refusals that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.config import RunConfig, batch_plan, load, to_yaml
from rewarm.errors import ConfigError

BASE = ["trainer.max_steps=10", "data.train.web.paths=[a.jsonl]", "data.seq_len=16"]


def test_yaml_then_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("run: {name: a}\nschedule: {max_lr: 1.0e-3}\ntrainer: {max_steps: 5}\n"
                 "data: {train: {web: {paths: [x.jsonl], weight: 2}}}\n")
    cfg = load(p, ["schedule.max_lr=2e-3", "data.val.up.paths=[v.jsonl]", "data.val.up.role=upstream"])
    assert isinstance(cfg, RunConfig)
    assert cfg.run.name == "a" and cfg.schedule.max_lr == 2e-3 and cfg.trainer.max_steps == 5
    assert cfg.data.train["web"].weight == 2 and cfg.data.val["up"].role == "upstream"
    assert cfg.logging.wandb.mode == "offline"  # the default


def test_resume_shorthand() -> None:
    assert load(None, [*BASE, "resume=never"]).resume.mode == "never"
    assert load(None, BASE).resume.mode == "auto"
    assert load(None, [*BASE, "resume=null"]).resume.mode == "never"


@pytest.mark.parametrize("order", [1, -1])
def test_resume_shorthand_combines_with_other_resume_keys_in_either_order(order: int) -> None:
    r = load(None, [*BASE, *["resume=/x/ck", "resume.allow_config_change=true"][::order]]).resume
    assert (r.mode, r.allow_config_change) == ("/x/ck", True)


def test_resume_shorthand_in_yaml_combines_with_an_override(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("resume: /x/ck\n")
    r = load(p, [*BASE, "resume.allow_config_change=true"]).resume
    assert (r.mode, r.allow_config_change) == ("/x/ck", True)
    p.write_text("resume: {allow_config_change: true}\n")
    r = load(p, [*BASE, "resume=/y/ck"]).resume
    assert (r.mode, r.allow_config_change) == ("/y/ck", True)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["resume=/x/ck", "resume.mode=auto"], ["resume=/x/ck", "resume.mode=auto"]),
        (["resume.mode=never", "resume=/x/ck"], ["resume.mode=never", "resume=/x/ck"]),
        (["logging=off", "logging.level=DEBUG"], ["logging=off", "logging.level"]),
        (["logging.level=DEBUG", "logging=off"], ["logging=off", "logging.level"]),
    ],
)
def test_overrides_that_would_drop_one_another_are_refused_naming_both(overrides: list[str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        load(None, [*BASE, *overrides])
    assert all(n in str(e.value) for n in names)


def test_same_key_twice_keeps_the_later_and_mapping_values_merge() -> None:
    assert load(None, [*BASE, "resume=auto", "resume=never"]).resume.mode == "never"
    assert load(None, [*BASE, "resume=never", "resume.mode=never"]).resume.mode == "never"
    cfg = load(None, [*BASE, "data.train.web.weight=2", "data.train={web: {weight: 3}, b: {paths: [b.jsonl]}}"])
    assert cfg.data.train["web"].weight == 3 and cfg.data.train["web"].paths == ["a.jsonl"]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["trainer.max_stepz=3"], "trainer.max_stepz"),
        (["trainer.max_steps=abc"], "trainer.max_steps"),
        (["schedule.min_lr=1.0"], "schedule.min_lr"),
        (["model.init=random"], "model.init"),
        (["data.val.v.paths=[x]", "data.val.v.role=sideways"], "data.val.v.role"),
        (["logging.wandb.mode=loud"], "logging.wandb.mode"),
        (["trainer.precision=fp8"], "trainer.precision"),
        (["trainer.global_batch_size=3", "trainer.micro_batch_size=2"], "trainer.global_batch_size"),
        (["trainer.global_batch_tokens=20"], "trainer.global_batch_tokens"),
        (["data.seq_len=0"], "data.seq_len"),
        (["noequals"], "noequals"),
    ],
)
def test_refusals_name_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(None, [*BASE, *overrides])
    assert e.value.key == key, str(e.value)


def test_needs_steps_or_tokens() -> None:
    with pytest.raises(ConfigError) as e:
        load(None, ["data.train.web.paths=[a]"])
    assert e.value.key == "trainer.max_steps"


def test_batch_plan_derives_accumulation() -> None:
    cfg = load(None, [*BASE, "trainer.global_batch_tokens=256", "trainer.micro_batch_size=4", "trainer.devices=2",
                      "trainer.max_steps=null", "trainer.max_tokens=2560"])
    plan = batch_plan(cfg)
    assert (plan.rows_per_step, plan.grad_accum_steps, plan.world_size) == (16, 2, 2)
    assert plan.tokens_per_step == 256 and plan.max_steps == 10 and plan.total_tokens == 2560


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    cfg = load(None, [*BASE, "schedule.max_lr=5e-4"])
    p = tmp_path / "config.yaml"
    p.write_text(to_yaml(cfg))
    assert load(p) == cfg


def test_progress_off_survives_yaml_booleans(tmp_path: Path) -> None:
    assert load(None, [*BASE, "logging.progress=off"]).logging.progress == "off"
    p = tmp_path / "c.yaml"
    p.write_text("logging: {progress: off}\n")
    assert load(p, BASE).logging.progress == "off"
