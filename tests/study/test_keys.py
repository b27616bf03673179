"""Value formatting, key shortening and name sanitizing used by sweep names and comparison labels."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from rewarm.config import flatten
from rewarm.study.keys import format_float, format_value, name_value, sanitize, short_keys, unique


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (3e-4, "3e-4"),
        (1.5e-4, "1.5e-4"),
        (6e-4, "6e-4"),
        (3e-5, "3e-5"),
        (1e-8, "1e-8"),
        (0.1, "0.1"),
        (0.05, "0.05"),
        (2.5, "2.5"),
        (1.0, "1.0"),
        (1000.0, "1e3"),
    ],
)
def test_format_float_is_short(x: float, text: str) -> None:
    assert format_float(x) == text


@pytest.mark.parametrize(
    "value",
    [
        3e-4,
        1.5e-4,
        0.1,
        1e3,
        7,
        True,
        False,
        None,
        "step143000",
        "scratch",
        "1e-3",
        "true",
        "a b: c",
        "x,y",
        [1, 2],
        ["data/a.jsonl", "data/b.jsonl"],
        {"paths": ["x.jsonl"], "weight": 0.05},
        123456789.0,
        -2e-7,
    ],
)
def test_format_value_round_trips_through_omegaconf(value: object) -> None:
    parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"k={format_value(value)}"]))["k"]
    assert parsed == value
    assert type(parsed) is type(value)


def test_short_keys_use_shortest_unique_suffix_and_keep_a_parent_for_generic_leaves() -> None:
    keys = [
        "schedule.max_lr",
        "schedule.warmup_steps",
        "data.train.up.weight",
        "data.train.down.weight",
        "model.init",
        "schedule.name",
        "optimizer.betas",
        "x.betas",
    ]
    assert short_keys(keys) == {
        "schedule.max_lr": "max_lr",
        "schedule.warmup_steps": "warmup_steps",
        "data.train.up.weight": "up.weight",
        "data.train.down.weight": "down.weight",
        "model.init": "init",
        "schedule.name": "schedule",
        "optimizer.betas": "optimizer.betas",
        "x.betas": "x.betas",
    }


def test_short_keys_fall_back_to_the_whole_key() -> None:
    assert short_keys(["a.name", "a"]) == {"a.name": "a.name", "a": "a"}


def test_flatten_nested_and_dotted() -> None:
    assert flatten({"a": {"b": 1, "c.d": [1]}, "e": {}, "f": None}) == {"a.b": 1, "a.c.d": [1], "e": {}, "f": None}


def test_sanitize_and_name_value() -> None:
    assert sanitize("max_lr-3e-4_warmup_steps-10") == "max_lr-3e-4_warmup_steps-10"
    assert sanitize("a/b c:d") == "a-b-c-d"
    long = sanitize("x" * 200)
    assert len(long) <= 80 and long != sanitize("x" * 201)
    assert name_value('["data/up/val.jsonl.zst", /x/y/]') == "val.jsonl.zst+y"
    assert name_value("3e-4") == "3e-4"


def test_unique_suffixes_repeats_only() -> None:
    assert unique(["a", "b", "a", "a", "a-2"]) == ["a", "b", "a-3", "a-4", "a-2"]
