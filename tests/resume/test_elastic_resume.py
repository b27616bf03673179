"""Elastic resume with real strategies on CPU ranks (torchrun, gloo): a run continues on another number of ranks
with the same token stream and nothing lost.

- DDP: a 2-rank run is killed (-9) at a random step, resumed on 1 rank (accumulation 1 -> 2), killed again and
  finished on 4 ranks (micro-batch 2 -> 1): every step's loss equals the uninterrupted 2-rank run's within 1e-5
  relative (the reduction order is the only difference), metrics.csv holds each step once, and every training
  document was read exactly once per pass (by document id, from the recorded rows).
- FSDP2 (torch.distributed.checkpoint resharding) and DeepSpeed ZeRO-2 / ZeRO-3 (DeepSpeed's universal checkpoint,
  converted on resume): a 2-rank run is killed after its first checkpoint and finished on 1 rank, with the same
  losses.
- The runs keep an EMA of the weights (rewarm.averaging): its validation (``val_avg/*``) follows the same losses
  across every change of ranks, so the EMA is carried (and resharded) with the model.
- A global batch that cannot be kept, and a checkpoint written before elastic resume on another world size, are
  refused before the first step (exit 2, the numbers named).

The random steps come from REWARM_KILL_SEED (default: a fresh seed, printed in every failure message)."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import pytest
from elastic_helpers import check_once_per_pass, global_rows, kill_ranks_when, start_ranks, stream_ids
from resume_helpers import (
    comparable_rows,
    finish,
    last_row_step,
    read_records,
    tail,
    train_here,
    write_config,
)

SEED = int(os.environ.get("REWARM_KILL_SEED", random.SystemRandom().randrange(10**6)))
MAX_STEPS, ROWS, STREAMS = 14, 4, 4
COMMON = ["trainer.accelerator=cpu", f"data.streams={STREAMS}", "checkpoint.every_steps=2"]
LOSSES = ("train/loss", "val/pile/loss", "val/slimpajama/loss", "val_avg/pile/loss", "val_avg/slimpajama/loss")
EMA = "{ema_decay: 0.8, every_steps: 1, start_step: 2}"


@pytest.fixture(scope="module")
def elastic_config(resume_world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run's config, and the uninterrupted 2-rank DDP run (started here, waited for by ``reference``)."""
    tmp = tmp_path_factory.mktemp("elastic")
    cfg = write_config(tmp / "run.yaml", resume_world, num_workers=0, max_steps=MAX_STEPS, global_batch=ROWS,
                       averaging=EMA)
    log = tmp / "ref.log"
    proc = start_ranks(2, cfg, [*COMMON, "trainer.strategy=ddp", "run.name=ref"], log, tmp / "ref.jsonl")
    return {"tmp": tmp, "cfg": cfg, "ref": proc, "ref_log": log}


@pytest.fixture(scope="module")
def reference(elastic_config: dict[str, Any]) -> Path:
    assert finish(elastic_config["ref"], elastic_config["ref_log"]) == 0, tail(elastic_config["ref_log"])
    return elastic_config["tmp"] / "ref" / "metrics.csv"


def _check_same_losses(ref: Path, got: Path, msg: str) -> None:
    a, b = comparable_rows(ref), comparable_rows(got)
    assert any(r["val_avg/pile/loss"] for r in a), "the reference run validated no EMA"
    assert [r["step"] for r in b] == [r["step"] for r in a], f"{msg}: steps {[r['step'] for r in b]}"
    for x, y in zip(a, b, strict=True):
        for key in LOSSES:
            if x[key] or y[key]:
                assert math.isclose(float(x[key]), float(y[key]), rel_tol=1e-5), f"{msg}: {key} at step {x['step']}: {x[key]} vs {y[key]}"


def _elastic_lines(log: Path) -> list[str]:
    return [ln.split("INFO rewarm.training.run: ", 1)[1] for ln in log.read_text().splitlines()
            if "INFO rewarm.training.run: elastic resume:" in ln]


def test_ddp_killed_on_2_ranks_resumes_on_1_then_4(elastic_config, reference, resume_world):
    rng = random.Random(SEED)
    msg = f"REWARM_KILL_SEED={SEED}"
    t = elastic_config
    run_dir, log, record = t["tmp"] / "r", t["tmp"] / "train.log", t["tmp"] / "record.jsonl"
    metrics, ov = run_dir / "metrics.csv", [*COMMON, "trainer.strategy=ddp", "run.name=r"]
    k1 = rng.randint(3, 6)
    kill_ranks_when(start_ranks(2, t["cfg"], ov, log, record), lambda: last_row_step(metrics) >= k1, log, f"step {k1}")
    k2 = rng.randint(k1 + 3, MAX_STEPS - 3)
    kill_ranks_when(start_ranks(1, t["cfg"], ov, log, record), lambda: last_row_step(metrics) >= k2, log, f"step {k2}")
    last = start_ranks(4, t["cfg"], [*ov, "trainer.micro_batch_size=1"], log, record)
    assert finish(last, log) == 0, f"{msg}\n{tail(log)}"
    assert _elastic_lines(log) == [
        f"elastic resume: 2 ranks -> 1 rank, accumulation 1 -> 2, streams {STREAMS} unchanged",
        f"elastic resume: 1 rank -> 4 ranks, accumulation 2 -> 1, micro-batch 2 -> 1 rows, streams {STREAMS} unchanged",
    ], f"{msg}\n{tail(log)}"
    _check_same_losses(reference, metrics, msg)
    rows = global_rows(read_records(record), ROWS)
    per_stream = stream_ids(rows, STREAMS, MAX_STEPS, ROWS, resume_world["eos"], resume_world["corpus"])
    check_once_per_pass(per_stream, set(resume_world["corpus"]))
    assert (run_dir / "summary.json").is_file()


@pytest.mark.parametrize("strategy", ["fsdp", "zero2", "zero3"])
def test_sharded_state_resumes_on_fewer_ranks(strategy, elastic_config, reference, tmp_path):
    """2 ranks until the first checkpoint (killed), then 1 rank to the end (a process of its own: DeepSpeed's
    process groups outlive a run in the process that made them)."""
    t = elastic_config
    ov = [*COMMON, f"run.out_dir={tmp_path}", "run.name=r", *_strategy(strategy, tmp_path)]
    log, metrics = tmp_path / "train.log", tmp_path / "r" / "metrics.csv"
    kill_ranks_when(start_ranks(2, t["cfg"], ov, log, tmp_path / "record.jsonl"), lambda: last_row_step(metrics) >= 3,
              log, "step 3")
    assert finish(start_ranks(1, t["cfg"], ov, log, tmp_path / "record.jsonl"), log) == 0, tail(log)
    assert _elastic_lines(log) == [f"elastic resume: 2 ranks -> 1 rank, accumulation 1 -> 2, streams {STREAMS} "
                                   "unchanged"], tail(log)
    _check_same_losses(reference, metrics, f"{strategy}, 2 ranks -> 1")
    converted = log.read_text().count("to a universal checkpoint (python -m deepspeed.checkpoint.ds_to_universal")
    assert converted == (1 if strategy.startswith("zero") else 0), tail(log)  # DeepSpeed only, by rank 0, once


def _strategy(name: str, tmp: Path) -> list[str]:
    if name == "fsdp":
        return ["trainer.strategy=fsdp"]
    merge = tmp / "ds.json"  # every tiny tensor really partitioned under ZeRO-3 (below the default threshold)
    merge.write_text(json.dumps({"zero_optimization": {"stage3_param_persistence_threshold": 0}}))
    return ["trainer.strategy=deepspeed", f"trainer.deepspeed.stage={name[-1]}",
            f"trainer.deepspeed.config_file={merge}"]


def test_refusals_before_the_first_step(elastic_config, reference, tmp_path):
    """On the finished reference run: a global batch that 3 ranks cannot keep; the same run's checkpoint with its
    layout removed from the manifest (as written before elastic resume) on 1 rank."""
    t = elastic_config
    run_dir, log = t["tmp"] / "ref", tmp_path / "refused.log"
    before = (run_dir / "metrics.csv").read_bytes()
    ov = [*COMMON, "trainer.strategy=ddp", "run.name=ref", "resume=auto"]
    assert train_here(t["cfg"], [*ov, "trainer.devices=3"], log) == 2
    assert "4 rows per step is not a multiple of micro_batch_size x devices x num_nodes = 2 x 3 x 1 = 6" in log.read_text()
    newest = sorted((run_dir / "checkpoints").glob("step*"))[-1]
    manifest = json.loads((newest / "manifest.json").read_text())
    del manifest["layout"]
    (newest / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "summary.json").unlink()
    assert train_here(t["cfg"], [*ov, "trainer.devices=1"], log) == 2
    err = [ln for ln in log.read_text().splitlines() if ln.startswith("error:")][-1]
    assert "written before elastic resume, on 2 ranks" in err and "this run has 1 rank" in err, err
    assert (run_dir / "metrics.csv").read_bytes() == before  # refused before anything was trained or written
