"""The schedule section: section-alone refusals with the key named, OmegaConf structured use, and loading
through ``rewarm.config.load`` (where the key gets its ``schedule.`` prefix)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rewarm import config as rc
from rewarm.errors import ConfigError
from rewarm.schedules import FAMILIES, FAMILY_NAMES, plan_phases
from rewarm.schedules.config import DURATIONS, ScheduleConfig, duration_keys


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"name": "cosin"}, "name"),
        ({"max_lr": 0.0}, "max_lr"),
        ({"min_lr": -1e-5}, "min_lr"),
        ({"max_lr": 1e-4, "min_lr": 2e-4}, "min_lr"),
        ({"warmup_start_lr": -1.0}, "warmup_start_lr"),
        ({"warmup_start_lr": 1.0}, "warmup_start_lr"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 10, "warmup_fraction": 0.1}, "warmup_fraction"),
        ({"decay_fraction": 1.5}, "decay_fraction"),
        ({"cooldown_tokens": -5}, "cooldown_tokens"),
        ({"anneal_steps": 1, "anneal_tokens": 1}, "anneal_tokens"),
        ({"zero_lr_steps": -1}, "zero_lr_steps"),
        ({"name": "wsd", "cooldown_shape": "sqrt"}, "cooldown_shape"),
        ({"name": "wsd", "cooldown_shape": "inverse_sqrt"}, "cooldown_shape"),
        ({"name": "infinite", "cooldown_shape": "1-sqrt"}, "cooldown_shape"),
        ({"inv_sqrt_alpha": 0.0}, "inv_sqrt_alpha"),
        ({"timescale_steps": 0}, "timescale_steps"),
        ({"constant_lr": -1.0}, "constant_lr"),
    ],
)
def test_section_refusals_name_the_key(kw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        ScheduleConfig(**kw).validate()
    assert e.value.key == key
    assert e.value.message


def test_defaults_validate_and_constant_ignores_min_lr() -> None:
    ScheduleConfig().validate()
    ScheduleConfig(name="constant", max_lr=1e-5).validate()  # Gupta's 3e-5 baseline style: min_lr unused


def test_every_field_has_a_docstring() -> None:
    source = inspect.getsource(ScheduleConfig)
    for f in dataclasses.fields(ScheduleConfig):
        after = source.split(f"\n    {f.name}:", 1)[1].split("\n", 2)[1].strip()
        assert after.startswith('"""'), f"{f.name} has no docstring"


def test_registry_and_duration_keys_are_consistent() -> None:
    assert tuple(FAMILIES) == FAMILY_NAMES
    names = {f.name for f in dataclasses.fields(ScheduleConfig)}
    for phase in DURATIONS:
        assert set(duration_keys(phase)) <= names


def test_works_as_an_omegaconf_structured_config() -> None:
    schema = OmegaConf.structured(ScheduleConfig)
    merged = OmegaConf.merge(
        schema, OmegaConf.from_dotlist(["name=wsd", "cooldown_fraction=0.1", "warmup_tokens=4.096e3"])
    )
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, ScheduleConfig) and cfg.cooldown_fraction == 0.1 and cfg.warmup_tokens == 4096
    phases = plan_phases(cfg, 100, 1024)
    assert [p.name for p in phases] == ["warmup", "stable", "cooldown"] and phases[0].end_step == 4


def test_load_resolves_every_family_from_yaml(run_yaml) -> None:  # noqa: ANN001
    path = run_yaml(
        max_steps=200,
        name="infinite",
        warmup_fraction=0.05,
        cooldown_tokens=20 * 32,
        constant_lr=1.5e-4,
        anneal_fraction=0.1,
        zero_lr_steps=3,
    )
    cfg = rc.load(path, ["schedule.name=infinite"])
    plan = rc.batch_plan(cfg)
    assert plan.tokens_per_step == 32  # seq_len 16 x micro batch 2
    phases = plan_phases(cfg.schedule, plan.max_steps, plan.tokens_per_step)
    edges = [(p.name, p.start_step, p.end_step) for p in phases]
    assert edges == [
        ("zero_lr", 0, 3),
        ("warmup", 3, 13),
        ("cooldown", 13, 33),
        ("constant", 33, 180),
        ("anneal", 180, 200),
    ]
    for name in FAMILY_NAMES:  # keys a family does not read are ignored: one YAML serves a sweep over families
        rc.load(path, [f"schedule.name={name}"])


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["schedule.warmup_steps=500"], "schedule.warmup_steps"),
        (["schedule.warmup_steps=abc"], "schedule.warmup_steps"),
        (["schedule.name=wsd", "schedule.cooldown_shape=square"], "schedule.cooldown_shape"),
        (["schedule.name=nope"], "schedule.name"),
        (["schedule.decay_tokens=1000000"], "schedule.decay_tokens"),
    ],
)
def test_load_refuses_with_the_dotted_key(run_yaml, overrides: list[str], key: str) -> None:  # noqa: ANN001
    path: Path = run_yaml(max_steps=100)
    with pytest.raises(ConfigError) as e:
        rc.load(path, overrides)
    assert e.value.key == key
