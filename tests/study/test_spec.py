"""Sweep files: expansion (grid product, explicit runs, base) and run naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.errors import ConfigError
from rewarm.study.sweep import SweepRun, expand_sweep, load_sweep, read_sweep, sweep_group


def test_grid_is_the_cartesian_product_in_order_with_names_from_overrides() -> None:
    runs = expand_sweep({"grid": {"schedule.max_lr": [1.5e-4, 3e-4], "schedule.warmup_steps": [0, 10]}})
    assert runs == [
        SweepRun("max_lr-1.5e-4_warmup_steps-0", ["schedule.max_lr=1.5e-4", "schedule.warmup_steps=0"]),
        SweepRun("max_lr-1.5e-4_warmup_steps-10", ["schedule.max_lr=1.5e-4", "schedule.warmup_steps=10"]),
        SweepRun("max_lr-3e-4_warmup_steps-0", ["schedule.max_lr=3e-4", "schedule.warmup_steps=0"]),
        SweepRun("max_lr-3e-4_warmup_steps-10", ["schedule.max_lr=3e-4", "schedule.warmup_steps=10"]),
    ]


def test_nested_grid_keys_equal_dotted_ones() -> None:
    nested = expand_sweep({"grid": {"schedule": {"max_lr": [1e-4, 2e-4]}}})
    assert nested == expand_sweep({"grid": {"schedule.max_lr": [1e-4, 2e-4]}})


def test_runs_first_then_grid_with_base_in_front_and_not_in_names() -> None:
    spec = {
        "base": {"trainer": {"max_steps": 20}},
        "grid": {"schedule.max_lr": [3e-4]},
        "runs": [
            {"name": "constant", "schedule.name": "constant", "schedule.max_lr": 3e-5},
            "model.init=scratch run.seed=1",
            {"model": {"revision": "step1000"}},
            {},
        ],
    }
    runs = expand_sweep(spec)
    assert [r.name for r in runs] == ["constant", "init-scratch_seed-1", "revision-step1000", "base", "max_lr-3e-4"]
    assert runs[0].overrides == ["trainer.max_steps=20", "schedule.name=constant", "schedule.max_lr=3e-5"]
    assert runs[1].overrides == ["trainer.max_steps=20", "model.init=scratch", "run.seed=1"]
    assert all(r.overrides[0] == "trainer.max_steps=20" for r in runs)


def test_grid_value_mapping_is_a_bundle_and_generic_leaves_keep_their_parent() -> None:
    spec = {
        "grid": {
            "data.train.replay": [{"paths": ["corpora/up/train/00.jsonl.zst"], "weight": 0.05}],
            "schedule": [{"name": "constant", "max_lr": 3e-5}, {"name": "cosine", "max_lr": 3e-4}],
        }
    }
    runs = expand_sweep(spec)
    assert runs[0].overrides == [
        "data.train.replay.paths=[corpora/up/train/00.jsonl.zst]",
        "data.train.replay.weight=0.05",
        "schedule.name=constant",
        "schedule.max_lr=3e-5",
    ]
    assert runs[0].name == "replay.paths-00.jsonl.zst_replay.weight-0.05_schedule-constant_max_lr-3e-5"


def test_colliding_keys_are_told_apart_by_their_parents() -> None:
    runs = expand_sweep({"runs": [{"data.train.up.weight": 1}, {"data.train.down.weight": 1}]})
    assert [r.name for r in runs] == ["up.weight-1", "down.weight-1"]


def test_repeated_derived_names_get_a_suffix_and_explicit_repeats_are_refused() -> None:
    runs = expand_sweep({"runs": ["run.seed=1", "run.seed=1", {"name": "x"}]})
    assert [r.name for r in runs] == ["seed-1", "seed-1-2", "x"]
    with pytest.raises(ConfigError, match="twice"):
        expand_sweep({"runs": [{"name": "x"}, {"name": "x", "run.seed": 2}]})


def test_names_are_file_name_safe() -> None:
    runs = expand_sweep({"runs": [{"model.name_or_path": "/models/pythia 70m/"}, "model.tokenizer=a/b:c"]})
    for run in runs:
        assert "/" not in run.name and " " not in run.name and ":" not in run.name
    assert runs[0].name == "name_or_path-pythia-70m"


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"grid": {"x": [1]}, "typo": 1}, "typo"),
        ({}, ""),
        ({"grid": {"schedule.max_lr": []}}, "grid.schedule.max_lr"),
        ({"runs": ["schedule.max_lr"]}, "runs[0]"),
        ({"runs": [{"run.name": "x"}]}, "runs[0].run.name"),
        ({"runs": [{"name": "a/b"}]}, "runs[0].name"),
        ({"grid": [{"a": [1]}, "oops"]}, "grid[1]"),
    ],
)
def test_bad_specs_are_refused_with_the_key(spec: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        expand_sweep(spec)
    assert info.value.key == key


def test_load_sweep_reads_yaml_floats_and_the_name(tmp_path: Path) -> None:
    path = tmp_path / "lr.yaml"
    path.write_text("name: lr study\ngrid:\n  schedule.max_lr: [1.5e-4, 3e-4]\nruns:\n  - model.init=scratch\n")
    assert [r.name for r in load_sweep(path)] == ["init-scratch", "max_lr-1.5e-4", "max_lr-3e-4"]
    assert read_sweep(path).name == "lr study"
    assert sweep_group(path) == "lr-study"
    (tmp_path / "plain.yaml").write_text("grid: {run.seed: [0, 1]}\n")
    assert sweep_group(tmp_path / "plain.yaml") == "plain"


def test_example_sweep_files_expand_and_their_runs_validate() -> None:
    """Every sweep under configs/sweeps/ expands; each run's overrides validate against its intended config."""
    from rewarm.config import load

    root = Path(__file__).resolve().parents[2] / "configs"
    sweeps = sorted((root / "sweeps").glob("*.yaml"))
    assert sweeps, "configs/sweeps/ holds example sweeps"
    for path in sweeps:
        runs = load_sweep(path)
        assert len({r.name for r in runs}) == len(runs)
        config = root / "pythia-410m-pile-to-slimpajama.yaml"
        if config.is_file():
            for run in runs:
                load(config, run.overrides)
