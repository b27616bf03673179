"""Every YAML directly under configs/ is a valid run config."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarm.config import batch_plan, load

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    names = {p.name for p in CONFIGS}
    assert "pythia-410m-pile-to-slimpajama.yaml" in names and "demo.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path: Path) -> None:
    cfg = load(path)
    assert batch_plan(cfg).max_steps > 0


def test_gupta_setup_is_stated() -> None:
    cfg = load(Path(__file__).parent.parent / "configs" / "pythia-410m-pile-to-slimpajama.yaml")
    plan = batch_plan(cfg)
    assert cfg.model.name_or_path == "EleutherAI/pythia-410m" and cfg.model.revision == "step143000"
    assert plan.tokens_per_step == 1024 * 2048 and plan.rows_per_step == 1024
    assert cfg.optimizer.betas == [0.9, 0.95] and cfg.optimizer.weight_decay == 0.1 and cfg.trainer.grad_clip == 1.0
    assert cfg.schedule.min_lr == pytest.approx(0.1 * cfg.schedule.max_lr)
    roles = {name: v.role for name, v in cfg.data.val.items()}
    assert roles == {"pile": "upstream", "slimpajama": "downstream"}


def test_replay_of_pythias_preshuffled_data(tmp_path) -> None:
    """5 % replay of Pythia's pre-shuffled rows from step 0; the release's 143,000 x 1,024 rows (a sparse
    stand-in with the real header shape: every size 2049, doc_idx [0]) refuse start_step 143000."""
    import struct

    from rewarm.data import check_paths
    from rewarm.errors import ConfigError

    path = Path(__file__).parent.parent / "configs" / "pythia-410m-replay-preshuffled.yaml"
    cfg = load(path)
    replay = cfg.data.train["pile_replay"]
    assert replay.preset == "pythia_preshuffled" and replay.start_step == 0 and replay.rows_per_step == 1024
    assert replay.resolved_format() == "megatron" and replay.resolved_shuffle() == "none"
    assert replay.weight / (replay.weight + cfg.data.train["slimpajama"].weight) == pytest.approx(0.05)
    n = 143_000 * 1024
    with open(tmp_path / "document.idx", "wb") as fh:  # sparse: only the header and the last entries are written
        fh.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, n, 1))
        fh.seek(34 + 4 * (n - 1))
        fh.write(struct.pack("<i", 2049))
        fh.seek(34 + 4 * n + 8 * (n - 1))
        fh.write(struct.pack("<q", (n - 1) * 2049 * 2))
        fh.write(struct.pack("<q", 0))  # doc_idx = [0]
    for i in range(21):  # byte shards of the 600 GB .bin, sparse
        with open(tmp_path / f"document-{i:05d}-of-00020.bin", "wb") as fh:
            fh.truncate(n * 2049 * 2 // 21 + (n * 2049 * 2 % 21 if i == 20 else 0))
    for f in ("slim/train/chunk1/example_train_0.jsonl.zst", "slim/validation/chunk1/x.jsonl.zst", "pile/val.jsonl.zst"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"")  # the text files only need to exist for the path check
    base = [f"data.train.pile_replay.root={tmp_path}", f"data.train.slimpajama.root={tmp_path}/slim",
            f"data.val.slimpajama.root={tmp_path}/slim", f"data.val.pile.root={tmp_path}/pile"]
    check_paths(load(path, [*base, "data.train.pile_replay.start_step=142999"]).data)
    with pytest.raises(ConfigError, match=r"start_step: 143000 starts at row 146,432,000 .* holds 146,432,000 rows "
                                          r"of 2049 tokens \(143,000 steps\)"):
        check_paths(load(path, [*base, "data.train.pile_replay.start_step=143000"]).data)
