"""Two-process data parallelism on CPU (gloo) through ``rewarm train``: DDP keeps the parameters identical on
every rank and feeds each rank disjoint rows; FSDP2 (``trainer.strategy=fsdp``) trains, its distributed
checkpoint exports, and the export's logits equal the trained model's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rewarm.checkpoints.export import checkpoint_kind, export_checkpoint
from rewarm.config import load
from rewarm.data import build_train_loader
from rewarm.model.load import load_tokenizer
from rewarm.training.metrics import read_metrics
from tests.scale.helpers import averaged_validation, hf_logits, load_probes, scale_overrides, tail, torchrun
from tests.scale.probe_train import probe_ids


def _row_set(rows: list[torch.Tensor]) -> set[tuple[int, ...]]:
    return {tuple(r.tolist()) for batch in rows for r in batch}


@pytest.mark.slow
def test_ddp_params_equal_and_data_disjoint(tiny_world, empty_yaml: Path, tmp_path: Path) -> None:
    probe, log = tmp_path / "probe", tmp_path / "train.log"
    overrides = scale_overrides(tiny_world, tmp_path / "runs", trainer__strategy="ddp")
    assert torchrun(2, probe, empty_yaml, overrides, log) == 0, tail(log)
    r0, r1 = load_probes(probe, 2)
    assert r0["world_size"] == 2 and r0["global_step"] == r1["global_step"] == 4
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), f"{name} differs across ranks"
    rows0, rows1 = _row_set(r0["rows"]), _row_set(r1["rows"])
    assert len(rows0) == len(rows1) == 8  # 4 steps x 2 rows, no row repeated within a rank
    assert not rows0 & rows1, "the two ranks trained on the same rows"
    cfg = load(empty_yaml, overrides)
    tok = load_tokenizer(cfg.model.name_or_path, None, None)
    for rank, record in enumerate((r0, r1)):  # exactly the rows the data API gives this rank
        it = iter(build_train_loader(cfg.data, tok, micro_batch_size=2, seed=cfg.run.seed, rank=rank,
                                           world_size=2))
        for trained_rows in record["rows"]:
            assert torch.equal(trained_rows, next(it)["input_ids"])
    run_dir = tmp_path / "runs" / "t"
    assert int(read_metrics(run_dir / "metrics.csv")[-1]["tokens"]) == 4 * 2 * 2 * 16  # steps x micro x ranks x T
    ids = probe_ids(300)
    torch.testing.assert_close(hf_logits(run_dir / "hf", ids), r0["logits"], rtol=1e-5, atol=1e-5)
    assert (hf_logits(tiny_world["model"], ids) - r0["logits"]).abs().max() > 1e-3  # it trained
    logged, one_process = averaged_validation(run_dir, 4)  # the EMA: one copy on every rank
    assert abs(logged - one_process) <= 1e-5


def test_rank_shards_disjoint_through_data_api(tiny_world, empty_yaml: Path, tmp_path: Path) -> None:
    """The loader of each rank (``build_train_loader(rank=, world_size=)``) yields rows no other rank yields,
    and together the ranks cover as many distinct rows as they were asked for."""
    cfg = load(empty_yaml, scale_overrides(tiny_world, tmp_path))
    tok = load_tokenizer(cfg.model.name_or_path, None, None)
    per_rank = []
    for rank in range(2):
        loader = build_train_loader(cfg.data, tok, micro_batch_size=2, seed=cfg.run.seed, rank=rank, world_size=2)
        it = iter(loader)
        per_rank.append(_row_set([next(it)["input_ids"] for _ in range(10)]))
    assert len(per_rank[0]) == len(per_rank[1]) == 20
    assert not per_rank[0] & per_rank[1]


@pytest.mark.slow
def test_fsdp2_trains_and_exports(tiny_world, empty_yaml: Path, tmp_path: Path) -> None:
    probe, log = tmp_path / "probe", tmp_path / "train.log"
    overrides = scale_overrides(tiny_world, tmp_path / "runs", trainer__strategy="fsdp")
    assert torchrun(2, probe, empty_yaml, overrides, log) == 0, tail(log)
    r0, r1 = load_probes(probe, 2)
    for name, p in r0["params"].items():  # gathered from the DTensor shards
        assert torch.equal(p, r1["params"][name]), name
    assert not _row_set(r0["rows"]) & _row_set(r1["rows"])
    run_dir = tmp_path / "runs" / "t"
    rows = read_metrics(run_dir / "metrics.csv")
    assert all(float(r["optim/grad_norm"]) > 0 for r in rows[:-1])  # DTensor-aware norm
    assert checkpoint_kind(run_dir / "checkpoints" / "step00000004" / "state.ckpt") == "dcp"
    out = export_checkpoint(run_dir, tmp_path / "export")
    ids = probe_ids(300)
    torch.testing.assert_close(hf_logits(out, ids), r0["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hf_logits(run_dir / "hf", ids), r0["logits"], rtol=1e-5, atol=1e-5)
    assert (hf_logits(tiny_world["model"], ids) - r0["logits"]).abs().max() > 1e-3  # it trained
    logged, one_process = averaged_validation(run_dir, 4)  # the EMA sharded like the parameters, never gathered
    assert abs(logged - one_process) <= 1e-5
