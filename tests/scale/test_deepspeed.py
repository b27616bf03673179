"""DeepSpeed ZeRO-1/2/3 through Lightning on two CPU processes (gloo, ``CPUDeepSpeedStrategy``): training runs
with gradient accumulation, its sharded checkpoint exports to a Hugging Face directory whose logits (plain
transformers) equal the trained model's logits computed inside the training process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rewarm.checkpoints.export import checkpoint_kind
from rewarm.cli import main as cli
from rewarm.training.metrics import read_metrics
from tests.scale.helpers import averaged_validation, hf_logits, load_probes, scale_overrides, tail, torchrun
from tests.scale.probe_train import probe_ids

pytest.importorskip("deepspeed")


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_trains_and_exports(stage: int, tiny_world, empty_yaml: Path, tmp_path: Path) -> None:
    probe, log = tmp_path / "probe", tmp_path / "train.log"
    # The tiny model's tensors are all below ZeRO-3's default persistence threshold (1e5 elements), which
    # would leave them unpartitioned: a merge file sets it to 0 so that every parameter is really sharded.
    merge = tmp_path / "ds.json"
    merge.write_text(json.dumps({"zero_optimization": {"stage3_param_persistence_threshold": 0}} if stage == 3 else {}))
    overrides = scale_overrides(tiny_world, tmp_path / "runs", trainer__strategy="deepspeed",
                                trainer__deepspeed__stage=stage, trainer__global_batch_size=8,
                                trainer__deepspeed__config_file=str(merge))
    assert torchrun(2, probe, empty_yaml, overrides, log) == 0, tail(log)
    run_dir = tmp_path / "runs" / "t"
    ranks = load_probes(probe, 2)
    assert [r["global_step"] for r in ranks] == [4, 4]
    assert [len(r["rows"]) for r in ranks] == [8, 8]  # 4 steps x 2 accumulated micro-batches per rank

    rows = read_metrics(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert int(rows[-1]["tokens"]) == 4 * 8 * 16  # steps x rows per step x seq_len
    assert all(float(r["optim/grad_norm"]) > 0 for r in rows[:-1])  # DeepSpeed's global norm, read after step

    ckpt = run_dir / "checkpoints" / "step00000004"
    assert checkpoint_kind(ckpt / "state.ckpt") == "deepspeed"
    out = tmp_path / "export"
    assert cli(["export", str(run_dir), "--out", str(out)]) == 0
    ids = probe_ids(300)
    trained = ranks[0]["logits"]
    torch.testing.assert_close(ranks[1]["logits"], trained, rtol=0, atol=0)
    torch.testing.assert_close(hf_logits(out, ids), trained, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hf_logits(run_dir / "hf", ids), trained, rtol=1e-5, atol=1e-5)  # gathered at the end
    if stage < 3:  # ZeRO-1/2: every rank holds the full parameters, and they agree
        for name, p in ranks[0]["params"].items():
            assert torch.equal(p, ranks[1]["params"][name]), name
    else:  # ZeRO-3: each rank held a slice only (so the final hf/ above had to be gathered)
        assert ranks[0]["partitioned"] and ranks[1]["partitioned"]
    start = hf_logits(tiny_world["model"], ids)
    assert (start - trained).abs().max() > 1e-3  # it trained
    logged, one_process = averaged_validation(run_dir, 4)  # the EMA of the fp32 master partitions (ZeRO-3: of every
    assert abs(logged - one_process) <= 1e-5  # parameter's partition), one shard file per rank
