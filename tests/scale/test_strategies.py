"""Strategy construction from the trainer section (no processes): the generated DeepSpeed config, merging a
user JSON on top and refusing one that contradicts the config, the strategy objects, gradient clipping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

from rewarm.config import batch_plan, load
from rewarm.errors import ConfigError
from rewarm.training.strategies import (
    CPUDeepSpeedStrategy,
    FSDP2Strategy,
    GPUDeepSpeedStrategy,
    UniversalCPUDeepSpeedStrategy,
    UniversalDeepSpeedStrategy,
    build_strategy,
    clip_gradients,
    deepspeed_config,
    full_deepspeed_config,
    merge_deepspeed_config,
)
from tests.conftest import tiny_overrides


def _cfg(world, tmp_path: Path, **extra):
    p = tmp_path / "empty.yaml"
    p.write_text("{}\n")
    return load(p, tiny_overrides(world, tmp_path, **{"trainer__strategy": "deepspeed", **extra}))


def test_generated_config_follows_trainer_section(tiny_world, tmp_path: Path) -> None:
    cfg = _cfg(tiny_world, tmp_path, trainer__deepspeed__stage=3, trainer__deepspeed__offload_optimizer=True,
               trainer__deepspeed__offload_params=True, trainer__precision="bf16-mixed", trainer__grad_clip=0.5,
               trainer__micro_batch_size=4, trainer__deepspeed__reduce_bucket_size=1000)
    ds = deepspeed_config(cfg.trainer, batch_plan(cfg))
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["reduce_bucket_size"] == 1000
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert "gradient_accumulation_steps" not in ds  # Lightning sets it from accumulate_grad_batches
    assert "optimizer" not in ds and "scheduler" not in ds  # ours: AdamW param groups + LambdaLR


def test_merge_file_on_top(tiny_world, tmp_path: Path) -> None:
    user = {"zero_optimization": {"overlap_comm": False, "stage": 2}, "communication_data_type": "fp32",
            "gradient_clipping": "auto", "train_micro_batch_size_per_gpu": 2}
    f = tmp_path / "ds.json"
    f.write_text(json.dumps(user))
    cfg = _cfg(tiny_world, tmp_path, trainer__deepspeed__config_file=str(f))
    ds = full_deepspeed_config(cfg.trainer, batch_plan(cfg))
    assert ds["zero_optimization"]["overlap_comm"] is False
    assert ds["zero_optimization"]["reduce_bucket_size"] == 200_000_000  # generated keys kept
    assert ds["communication_data_type"] == "fp32" and ds["gradient_clipping"] == 1.0


@pytest.mark.parametrize("user, fragment", [
    ({"optimizer": {"type": "Adam"}}, "optimizer"),
    ({"scheduler": {"type": "WarmupLR"}}, "schedule"),
    ({"train_micro_batch_size_per_gpu": 8}, "trainer.micro_batch_size"),
    ({"gradient_clipping": 0.3}, "trainer.grad_clip"),
    ({"gradient_accumulation_steps": 4}, "global_batch_size"),
    ({"bf16": {"enabled": True}}, "trainer.precision"),
    ({"zero_optimization": {"stage": 3}}, "trainer.deepspeed.stage"),
])
def test_merge_refuses_contradictions(tiny_world, tmp_path: Path, user: dict, fragment: str) -> None:
    cfg = _cfg(tiny_world, tmp_path)
    with pytest.raises(ConfigError) as e:
        merge_deepspeed_config(deepspeed_config(cfg.trainer, batch_plan(cfg)), user,
                               {"gradient_accumulation_steps": 1, "train_batch_size": 2})
    assert e.value.key == "deepspeed.config_file" and fragment in e.value.message


def test_bad_merge_file(tiny_world, tmp_path: Path) -> None:
    for text, fragment in (("{not json", "not valid JSON"), ("[1]", "JSON object")):
        f = tmp_path / "ds.json"
        f.write_text(text)
        cfg = _cfg(tiny_world, tmp_path, trainer__deepspeed__config_file=str(f))
        with pytest.raises(ConfigError, match=fragment):
            full_deepspeed_config(cfg.trainer, batch_plan(cfg))
    cfg = _cfg(tiny_world, tmp_path, trainer__deepspeed__config_file=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="does not exist"):
        full_deepspeed_config(cfg.trainer, batch_plan(cfg))


def test_build_strategy_kinds(tiny_world, tmp_path: Path) -> None:
    def build(**extra):
        reshard = extra.pop("reshard", False)
        cfg = _cfg(tiny_world, tmp_path, **extra)
        return build_strategy(cfg.trainer, batch_plan(cfg), reshard=reshard)

    cpu_ds = build(trainer__accelerator="cpu", trainer__deepspeed__stage=1)
    assert isinstance(cpu_ds, CPUDeepSpeedStrategy) and cpu_ds.config["zero_optimization"]["stage"] == 1
    gpu_ds = build(trainer__accelerator="gpu")
    assert type(gpu_ds) is GPUDeepSpeedStrategy and isinstance(gpu_ds, DeepSpeedStrategy)  # Lightning's, loss scaled once
    elastic = build(trainer__accelerator="gpu", trainer__strategy="deepspeed", reshard=True)
    assert type(elastic) is UniversalDeepSpeedStrategy and elastic.config["checkpoint"] == {"load_universal": True}
    cpu_elastic = build(trainer__accelerator="cpu", trainer__strategy="deepspeed", reshard=True)
    assert type(cpu_elastic) is UniversalCPUDeepSpeedStrategy
    assert isinstance(build(trainer__strategy="ddp"), DDPStrategy)
    assert isinstance(build(trainer__strategy="fsdp", trainer__devices=2), FSDP2Strategy)
    assert build(trainer__strategy="auto") == "auto"


def test_clip_gradients_plain_parameters() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    model(torch.randn(16, 8)).pow(2).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    norm = clip_gradients(DDPStrategy(), model.parameters(), 0.1)
    torch.testing.assert_close(norm, expected)
    clipped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    torch.testing.assert_close(clipped, torch.tensor(0.1), rtol=1e-4, atol=1e-6)
    norm_off = clip_gradients(DDPStrategy(), model.parameters(), 0.0)  # 0 = measure only
    torch.testing.assert_close(norm_off, clipped)


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[2].glob("configs/deepspeed/*.json")),
                         ids=lambda p: p.name)
def test_example_merge_files(tiny_world, tmp_path: Path, path: Path) -> None:
    """Every example under configs/deepspeed/ merges without contradiction (with its ZeRO stage)."""
    stage = json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 2)
    cfg = _cfg(tiny_world, tmp_path, trainer__deepspeed__stage=stage, trainer__deepspeed__config_file=str(path))
    ds = full_deepspeed_config(cfg.trainer, batch_plan(cfg))
    assert ds["zero_optimization"]["stage"] == stage and ds["gradient_clipping"] == cfg.trainer.grad_clip
