"""The study's runs: names, overrides, and that each run's config validates on top of configs/demo.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.config import load
from rewarm.demo.base import BaseRecipe, ModelShape, write_init_dir
from rewarm.demo.cli import DEFAULT_CONFIG
from rewarm.demo.corpus import CorpusPaths
from rewarm.demo.study import MAIN, StudyRecipe, environment, plan_study
from rewarm.demo.tokenizer import padded_vocab_size

P = 3e-3


@pytest.fixture()
def env(tmp_path: Path) -> tuple[CorpusPaths, list[str]]:
    corpus = CorpusPaths(tmp_path / "corpus")
    return corpus, environment(tmp_path / "base", corpus, tmp_path / "out", StudyRecipe(steps=100), "disabled")


def test_run_names_and_roles(env: tuple[CorpusPaths, list[str]]) -> None:
    plan = plan_study(P, env[0])
    assert list(plan.runs) == [MAIN, f"{MAIN}-seed1", "constant", "rewarm-0.5x", "rewarm-2x", "warmup-0",
                               "replay-5pct", "upstream-rewarm", "scratch", "wsd"]
    assert plan.lr_runs == [(0.5 * P, "rewarm-0.5x"), (P, MAIN), (2 * P, "rewarm-2x")]
    assert set(plan.rewarmed) == set(plan.runs) - {"constant", "scratch", "upstream-rewarm", "wsd"}
    with pytest.raises(ValueError, match="must include 1"):
        plan_study(P, env[0], StudyRecipe(lr_factors=(0.5, 2.0)))


def test_every_run_config_validates_and_means_what_its_name_says(env: tuple[CorpusPaths, list[str]]) -> None:
    corpus, extra = env
    plan = plan_study(P, corpus)
    cfgs = {name: load(DEFAULT_CONFIG, [*overrides, *extra]) for name, overrides in plan.runs.items()}
    for cfg in cfgs.values():
        assert cfg.trainer.max_steps == 100 and cfg.logging.wandb.mode == "disabled"
        assert cfg.data.val["pile"].role == "upstream" and cfg.data.val["slimpajama"].role == "downstream"
    c = cfgs["constant"].schedule
    assert (c.name, c.max_lr, c.warmup_fraction) == ("constant", pytest.approx(0.1 * P), 0)
    for name, factor in (("rewarm-0.5x", 0.5), (MAIN, 1.0), ("rewarm-2x", 2.0)):
        s = cfgs[name].schedule
        assert (s.name, s.max_lr, s.min_lr, s.warmup_fraction) == ("cosine", pytest.approx(factor * P),
                                                                   pytest.approx(0.1 * factor * P), 0.01)
    assert cfgs["warmup-0"].schedule.warmup_fraction == 0
    mix = {n: s.weight for n, s in cfgs["replay-5pct"].data.train.items()}
    assert mix == {"slimpajama": pytest.approx(0.95), "pile": pytest.approx(0.05)}
    assert cfgs["replay-5pct"].data.train["pile"].root == str(corpus.root / "pile")
    assert {n: s.weight for n, s in cfgs["upstream-rewarm"].data.train.items()} == {"slimpajama": 0, "pile": 1}
    assert cfgs["scratch"].model.init == "scratch" and cfgs[MAIN].model.init == "pretrained"
    assert cfgs[f"{MAIN}-seed1"].run.seed == 1 and cfgs[MAIN].run.seed == 0
    w = cfgs["wsd"]
    assert (w.schedule.name, w.schedule.max_lr, w.schedule.min_lr, w.schedule.cooldown_fraction) == (
        "wsd", pytest.approx(P), pytest.approx(0.1 * P), 0.2)
    assert w.averaging.enabled and not any(c.averaging.enabled for n, c in cfgs.items() if n != "wsd")


def test_demo_yaml_standalone_matches_the_base_recipe() -> None:
    cfg = load(DEFAULT_CONFIG)
    base = BaseRecipe()
    assert cfg.schedule.max_lr == pytest.approx(base.max_lr) and cfg.schedule.min_lr == pytest.approx(base.min_lr)
    assert cfg.data.seq_len == base.seq_len and cfg.trainer.micro_batch_size == base.batch_size
    assert cfg.model.name_or_path.endswith("rewarm-demo/base/hf")
    assert cfg.data.train["slimpajama"].preset == "slimpajama" and cfg.data.val["pile"].preset == "pile"


def test_demo_yaml_follows_rewarm_demo_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REWARM_DEMO_DIR", str(tmp_path / "cache"))
    cfg = load(DEFAULT_CONFIG)
    assert cfg.model.name_or_path == f"{tmp_path}/cache/base/hf"
    assert cfg.data.val["slimpajama"].root == f"{tmp_path}/cache/corpus/slimpajama"


def test_base_model_is_pythia_shaped(small_tokenizer: Path, tmp_path: Path) -> None:
    out = write_init_dir(small_tokenizer, tmp_path / "init", ModelShape(hidden_size=32, num_layers=2, num_heads=2))
    from transformers import AutoConfig, AutoTokenizer

    cfg, tok = AutoConfig.from_pretrained(str(out)), AutoTokenizer.from_pretrained(str(out))
    assert cfg.model_type == "gpt_neox" and cfg.use_parallel_residual
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.25  # Pythia: rotary_pct 0.25
    assert not cfg.tie_word_embeddings and cfg.hidden_dropout == 0 and cfg.attention_dropout == 0
    assert cfg.vocab_size == padded_vocab_size(len(tok)) and cfg.vocab_size % 128 == 0 and cfg.vocab_size >= len(tok)
    assert cfg.eos_token_id == tok.eos_token_id == 0


def test_cli_options_and_missing_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from rewarm.demo.cli import main, parser

    args = parser().parse_args([])
    assert (args.out, args.cache, args.quick, args.config) == (Path("runs/demo"), Path(".cache/rewarm-demo"), False,
                                                               DEFAULT_CONFIG)
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config not found" in capsys.readouterr().out
