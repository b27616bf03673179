"""The ``averaging`` section: exactly one of ema_decay / ema_halflife_tokens, a decay in [0, 1), the halflife's
decay per update, refusals naming the keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.config import batch_plan, load
from rewarm.errors import ConfigError
from tests.conftest import tiny_overrides


def _load(world: dict[str, Path], tmp_path: Path, **extra: object):
    return load(None, tiny_overrides(world, tmp_path, **extra))


def test_off_by_default(tiny_world, tmp_path: Path) -> None:
    assert not _load(tiny_world, tmp_path).averaging.enabled


def test_halflife_gives_the_decay_per_update(tiny_world, tmp_path: Path) -> None:
    cfg = _load(tiny_world, tmp_path, averaging__ema_halflife_tokens=128, averaging__every_steps=2,
                trainer__global_batch_size=4)
    tokens_per_step = batch_plan(cfg).tokens_per_step
    assert tokens_per_step == 4 * 16
    assert cfg.averaging.decay(tokens_per_step) == pytest.approx(0.5)  # 2 steps x 64 tokens = one halflife
    cfg = _load(tiny_world, tmp_path, averaging__ema_decay=0.99)
    assert cfg.averaging.enabled and cfg.averaging.decay(tokens_per_step) == 0.99


@pytest.mark.parametrize("extra, key, fragment", [
    ({"averaging__ema_decay": 0.9, "averaging__ema_halflife_tokens": 1000}, "averaging.ema_decay",
     "averaging.ema_halflife_tokens"),
    ({"averaging__ema_decay": 1.0}, "averaging.ema_decay", "[0, 1)"),
    ({"averaging__ema_decay": -0.1}, "averaging.ema_decay", "[0, 1)"),
    ({"averaging__ema_halflife_tokens": 0}, "averaging.ema_halflife_tokens", "> 0"),
    ({"averaging__ema_decay": 0.9, "averaging__every_steps": 0}, "averaging.every_steps", ">= 1"),
    ({"averaging__ema_decay": 0.9, "averaging__device": "gpu"}, "averaging.device", "same, cpu"),
])
def test_bad_input_refused(tiny_world, tmp_path: Path, extra: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tiny_world, tmp_path, **extra)
    assert e.value.key == key and fragment in str(e.value)

