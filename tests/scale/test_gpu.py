"""GPU checks, skipped without CUDA: DeepSpeed ZeRO-2 / ZeRO-3 in bf16 through Lightning's DeepSpeedStrategy
(``GPUDeepSpeedStrategy``: the loss divided by the accumulation once) on one GPU (training, export, logits), an
elastic resume of ZeRO-2 / ZeRO-3 from 2 GPUs to 1 (universal checkpoint; needs 2 GPUs), and flash-attn 2
against SDPA when installed.
Run on a GPU machine: ``pytest -q -m gpu tests/scale/test_gpu.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rewarm.cli import main as cli
from rewarm.training.metrics import read_metrics
from tests.conftest import tiny_overrides
from tests.scale.helpers import hf_logits
from tests.scale.probe_train import probe_ids

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_bf16_on_gpu(stage: int, tiny_world, empty_yaml: Path, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    ov = tiny_overrides(tiny_world, tmp_path / "runs", trainer__strategy="deepspeed", trainer__accelerator="gpu",
                        trainer__precision="bf16-mixed", trainer__deepspeed__stage=stage,
                        logging__wandb__mode="disabled", trainer__max_steps=4, trainer__val_every_steps=0)
    assert cli(["train", str(empty_yaml), *ov]) == 0
    run_dir = tmp_path / "runs" / "t"
    rows = read_metrics(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert float(rows[-1]["val/pile/loss"]) < 100  # finite, evaluated after training
    out = tmp_path / "export"
    assert cli(["export", str(run_dir), "--out", str(out)]) == 0
    ids = probe_ids(300)
    # export = DeepSpeed's fp32 master weights; hf/ = the bf16 weights the model computed with
    torch.testing.assert_close(hf_logits(out, ids), hf_logits(run_dir / "hf", ids), rtol=0.05, atol=0.05)
    assert (hf_logits(out, ids) - hf_logits(tiny_world["model"], ids)).abs().max() > 1e-3


def test_flash_attention_matches_sdpa(tiny_world) -> None:
    pytest.importorskip("flash_attn")
    from transformers import AutoModelForCausalLM

    ids = probe_ids(300).cuda()
    logits = {}
    for impl in ("sdpa", "flash_attention_2"):
        model = AutoModelForCausalLM.from_pretrained(tiny_world["model"], dtype=torch.bfloat16,
                                                     attn_implementation=impl).cuda().eval()
        with torch.no_grad():
            logits[impl] = model(input_ids=ids, use_cache=False).logits.float()
    torch.testing.assert_close(logits["flash_attention_2"], logits["sdpa"], rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (a world-size change)")
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_elastic_resume_on_gpus(stage: int, tiny_world, empty_yaml: Path, tmp_path: Path) -> None:
    """ZeRO on 2 GPUs (NCCL), resumed from its step-2 checkpoint on 1 GPU through DeepSpeed's universal checkpoint
    (converted by rank 0 on resume): the losses continue those of the 2-GPU run (bf16: within 2 %)."""
    pytest.importorskip("deepspeed")
    from tests.scale.helpers import tail, torchrun

    ov = tiny_overrides(tiny_world, tmp_path / "runs", trainer__strategy="deepspeed", trainer__accelerator="gpu",
                        trainer__precision="bf16-mixed", trainer__deepspeed__stage=stage, trainer__devices=2,
                        trainer__global_batch_size=4, logging__wandb__mode="disabled", trainer__max_steps=6,
                        trainer__val_every_steps=0, checkpoint__every_steps=2, checkpoint__keep_last=5)
    log = tmp_path / "train.log"
    assert torchrun(2, tmp_path / "probe", empty_yaml, ov, log) == 0, tail(log)
    run_dir = tmp_path / "runs" / "t"
    ref = read_metrics(run_dir / "metrics.csv")
    step2 = run_dir / "checkpoints" / "step00000002"
    assert cli(["train", str(empty_yaml), *ov, "trainer.devices=1", f"resume.mode={step2}"]) == 0
    assert (step2 / "universal" / "latest_universal").is_file()
    got = read_metrics(run_dir / "metrics.csv")
    assert [r["step"] for r in got] == [r["step"] for r in ref]
    for a, b in zip(ref[:-1], got[:-1], strict=True):
        assert float(b["train/loss"]) == pytest.approx(float(a["train/loss"]), rel=0.02), a["step"]
