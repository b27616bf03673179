"""``model.pretraining`` and ``forecast.*``: validation, Pythia's schedule, harmless on resume; the LR of every step
comes from the run's own schedule."""

from __future__ import annotations

import numpy as np
import pytest

from rewarm.checkpoints.resume import is_harmless
from rewarm.errors import ConfigError
from rewarm.forecast.inputs import pretraining_lrs, replay_fraction, run_lrs, val_steps
from rewarm.schedules import build_lr_fn
from tests.forecast.synth import config


def test_pythia_preset_knows_the_schedule_by_size_and_revision() -> None:
    cfg = config(["model.name_or_path=EleutherAI/pythia-410m-deduped", "model.pretraining.preset=pythia",
                  "model.revision=step143000"], known_base=False)
    lrs = pretraining_lrs(cfg)
    assert lrs is not None and len(lrs) == 143_000
    assert lrs[1430] == pytest.approx(3e-4) and lrs.max() == pytest.approx(3e-4)  # 1 % warmup to 410m's peak
    assert lrs[-1] == pytest.approx(3e-5)  # clamped at 0.1 x peak at the end
    early = pretraining_lrs(config(["model.name_or_path=EleutherAI/pythia-160m", "model.pretraining.preset=pythia",
                                    "model.revision=step1000"], known_base=False))
    assert early is not None and len(early) == 1000 and early.max() < 6e-4


@pytest.mark.parametrize(("overrides", "key", "words"), [
    (["model.name_or_path=/x/mystery", "model.pretraining.preset=pythia"], "model.pretraining.size", "Pythia size"),
    (["model.name_or_path=/x/pythia-70m", "model.pretraining.preset=pythia", "model.revision=main"],
     "model.pretraining.preset", "stepN"),
    (["model.pretraining.schedule=cosine", "model.pretraining.total_steps=100"], "model.pretraining.max_lr", "peak"),
    (["model.pretraining.max_lr=1e-3"], "model.pretraining.max_lr", "needs schedule"),
    (["forecast.objective.sideways=1"], "forecast.objective.sideways", "not a role"),
    (["forecast.objective.downstream=0"], "forecast.objective", "sum to 0"),
])
def test_bad_sections_are_refused_by_key(overrides: list[str], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        config(overrides, known_base=False)
    assert e.value.key == key and words in e.value.message


def test_forecast_and_pretraining_keys_are_harmless_on_resume() -> None:
    for key in ("forecast.fit", "forecast.objective.upstream", "model.pretraining.preset", "model.pretraining.steps_done"):
        assert is_harmless(key)
    assert not is_harmless("model.name_or_path")


def test_lrs_and_val_steps_come_from_the_runs_schedule() -> None:
    cfg = config(["schedule.name=wsd", "schedule.cooldown_fraction=0.3"])
    fn = build_lr_fn(cfg.schedule, 200, 16)
    assert run_lrs(cfg).tolist() == [fn(t) for t in range(200)]
    assert val_steps(cfg) == list(range(0, 201, 10))
    assert val_steps(config(["trainer.val_every_steps=0"])) == [0, 200]


def test_replay_fraction_counts_upstream_data_in_the_training_mix() -> None:
    cfg = config(["data.train.up.paths=[/nonexistent/up.jsonl]", "data.train.up.weight=0.05",
                  "data.train.down.weight=0.95"])
    assert replay_fraction(cfg) == pytest.approx(0.05)
    assert replay_fraction(config()) == 0.0
    assert np.isclose(replay_fraction(config(["data.train.down.paths=[/nonexistent/up.jsonl]"])), 1.0)
