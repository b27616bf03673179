"""Lightning strategies from the ``trainer`` section: DDP, DeepSpeed ZeRO-1/2/3 and FSDP2.

``build_strategy`` turns ``trainer.strategy`` into what ``lightning.Trainer(strategy=...)`` takes. The DeepSpeed
config is *generated* from our config (micro-batch, gradient clipping, precision, ZeRO stage, offload, buckets;
Lightning adds ``gradient_accumulation_steps`` from the Trainer), so the two cannot disagree; a user JSON file
(``trainer.deepspeed.config_file``) is merged on top, and a file that contradicts our keys is refused.

Two subclasses make the real engines run where Lightning refuses them:
- ``CPUDeepSpeedStrategy``: Lightning's DeepSpeedStrategy insists on CUDA; DeepSpeed itself trains on its CPU
  accelerator (gloo). Used only when the accelerator is the CPU (tests, laptops).
- ``FSDP2Strategy``: Lightning's ``fsdp`` (FSDP1) refuses the CPU and ``ModelParallelStrategy`` wants the
  LightningModule to shard itself in ``configure_model``; this subclass applies ``fully_shard`` to every
  transformer block (the Hugging Face model's ``_no_split_modules``) and to the model root.

This module imports Lightning (DeepSpeed only when a DeepSpeed strategy is set up); ``rewarm check`` and
``rewarm slurm`` never import it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy

from rewarm.errors import ConfigError

if TYPE_CHECKING:
    from rewarm.config import BatchPlan, TrainerConfig

log = logging.getLogger(__name__)

# Keys of a DeepSpeed JSON that our config owns: a merge file must not set them to something else.
OWNED_KEYS = {
    "train_micro_batch_size_per_gpu": "trainer.micro_batch_size",
    "gradient_accumulation_steps": "trainer.global_batch_size (accumulation = global / (micro x world))",
    "train_batch_size": "trainer.global_batch_size",
    "gradient_clipping": "trainer.grad_clip",
}
REFUSED_SECTIONS = {
    "optimizer": "the optimizer comes from the optimizer.* section (AdamW built by rewarm)",
    "scheduler": "the LR schedule comes from the schedule.* section (stepped by Lightning)",
}


def resolve_accelerator(accelerator: str) -> str:
    """``auto`` -> ``gpu`` when CUDA is available, else ``cpu``."""
    if accelerator != "auto":
        return accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def deepspeed_config(t: TrainerConfig, plan: BatchPlan) -> dict[str, Any]:
    """The DeepSpeed JSON generated from the trainer section (before the user's merge file)."""
    ds = t.deepspeed
    zero: dict[str, Any] = {
        "stage": ds.stage,
        "contiguous_gradients": True,
        "overlap_comm": ds.stage > 1,
        "allgather_bucket_size": ds.allgather_bucket_size,
        "reduce_bucket_size": ds.reduce_bucket_size,
    }
    if ds.stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False  # export consolidates from the shards
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_clipping": float(t.grad_clip),
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # our torch AdamW with two param groups (decay / no decay)
        "bf16": {"enabled": t.precision.startswith("bf16")},
        "fp16": {"enabled": t.precision.startswith("16")},
        "steps_per_print": 2**31 - 1,  # our metrics rows report progress; keep DeepSpeed's log quiet
        "wall_clock_breakdown": False,
    }


def read_deepspeed_file(path: str) -> dict[str, Any]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError("deepspeed.config_file", f"{p} does not exist (give a DeepSpeed JSON file)")
    try:
        data = json.loads(p.read_text())
    except ValueError as e:
        raise ConfigError("deepspeed.config_file", f"{p} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("deepspeed.config_file", f"{p} must hold a JSON object")
    return data


def merge_deepspeed_config(base: dict[str, Any], user: dict[str, Any], batch: dict[str, int] | None = None,
                           ) -> dict[str, Any]:
    """``user`` merged recursively onto ``base``. Refuses what our config owns, unless equal to the generated
    value ("auto" is accepted and dropped): the optimizer, the scheduler, batch sizes, clipping, precision.
    ``batch``: ``gradient_accumulation_steps`` and ``train_batch_size`` of the run (Lightning sets the first;
    DeepSpeed derives the second), checked and then dropped from the merged config."""
    for key, why in REFUSED_SECTIONS.items():
        if key in user:
            raise ConfigError("deepspeed.config_file", f"remove {key!r} from the JSON: {why}")
    expected = {**(batch or {}), **base}
    for key, owner in OWNED_KEYS.items():
        if key in user and user[key] != "auto" and user[key] != expected.get(key):
            raise ConfigError("deepspeed.config_file", f"{key}={user[key]!r} disagrees with {owner} "
                              f"(from the config: {expected.get(key)!r}); set {owner} instead or drop the key")
    for key in ("bf16", "fp16"):
        enabled = user.get(key, {}).get("enabled", base[key]["enabled"])
        if enabled not in ("auto", base[key]["enabled"]):
            raise ConfigError("deepspeed.config_file", f"{key}.enabled={enabled} disagrees with trainer.precision; "
                              "set trainer.precision (32-true | bf16-mixed | 16-mixed) instead")
    stage = user.get("zero_optimization", {}).get("stage", base["zero_optimization"]["stage"])
    if stage != base["zero_optimization"]["stage"]:
        raise ConfigError("deepspeed.config_file", f"zero_optimization.stage={stage} disagrees with "
                          "trainer.deepspeed.stage; set trainer.deepspeed.stage instead")
    user = {k: v for k, v in user.items() if k not in ("gradient_accumulation_steps", "train_batch_size")}
    return _deep_merge(base, user)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if value == "auto":
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def full_deepspeed_config(t: TrainerConfig, plan: BatchPlan) -> dict[str, Any]:
    """Generated config, with ``trainer.deepspeed.config_file`` merged on top when given."""
    base = deepspeed_config(t, plan)
    if t.deepspeed.config_file:
        batch = {"gradient_accumulation_steps": plan.grad_accum_steps, "train_batch_size": plan.rows_per_step}
        return merge_deepspeed_config(base, read_deepspeed_file(t.deepspeed.config_file), batch)
    return base


def build_strategy(t: TrainerConfig, plan: BatchPlan, *, reshard: bool = False) -> Any:
    """The ``strategy=`` argument of ``lightning.Trainer`` for ``trainer.strategy``. ``reshard``: the run resumes
    a checkpoint written by another number of ranks (DeepSpeed: through its universal checkpoint; FSDP2's
    distributed checkpoint reshards by itself; DDP's state is whole on every rank)."""
    accelerator = resolve_accelerator(t.accelerator)
    if t.strategy == "deepspeed":
        config = full_deepspeed_config(t, plan)
        if reshard:
            config["checkpoint"] = {**config.get("checkpoint", {}), "load_universal": True}
        log.info("DeepSpeed ZeRO-%d config: %s", t.deepspeed.stage, json.dumps(config, sort_keys=True))
        # Lightning warns that an overridden configure_gradient_clipping does not clip: ours knows (it only
        # reads DeepSpeed's norm; DeepSpeed clips with the generated gradient_clipping).
        warnings.filterwarnings("ignore", message=".*DeepSpeed handles gradient clipping internally.*")
        if accelerator == "cpu":
            return (UniversalCPUDeepSpeedStrategy if reshard else CPUDeepSpeedStrategy)(config=config)
        return (UniversalDeepSpeedStrategy if reshard else GPUDeepSpeedStrategy)(config=config)
    if t.strategy == "fsdp":
        return FSDP2Strategy(data_parallel_size=plan.world_size, tensor_parallel_size=1)
    if t.strategy == "ddp":
        return DDPStrategy(find_unused_parameters=False)
    return "auto"


def is_deepspeed(strategy: Any) -> bool:
    return isinstance(strategy, DeepSpeedStrategy)


class EngineGradNorm:
    """The global gradient norm DeepSpeed computed (before clipping) in its last optimizer step. Read lazily:
    Lightning calls the clipping hook *before* ``engine.step()``, the metrics row is written after it."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __float__(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)


def clip_gradients(strategy: Any, parameters: Iterable[torch.Tensor], max_norm: float) -> Any:
    """Clip the global gradient norm to ``max_norm`` (0 = measure only); returns the norm before clipping.
    DeepSpeed clips inside ``engine.step()`` (``gradient_clipping`` of its config): returns a lazy norm.
    FSDP2 parameters are DTensors: their local norms are reduced to the full norm first."""
    if is_deepspeed(strategy):
        return EngineGradNorm(strategy.deepspeed_engine)
    params = [p for p in parameters if p.grad is not None]
    limit = max_norm if max_norm > 0 else math.inf
    if not params:
        return torch.zeros(())
    total = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0)
    full_tensor = getattr(total, "full_tensor", None)
    if full_tensor is not None:  # DTensor (FSDP2): a partial norm per shard -> the global norm on every rank
        total = full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, limit, total)
    return total


class ScaleLossOnce:
    """Mixin of a DeepSpeed strategy: Lightning already divides each micro-batch's loss by the accumulation
    (``trainer.accumulate_grad_batches``); DeepSpeed's ``engine.backward`` would divide it again (its default
    ``scale_wrt_gas=True``), leaving gradients, the logged gradient norm and the clipping threshold off by the
    accumulation factor, and a run's numerics dependent on how its global batch is split (measured: ZeRO-2 on
    1 rank x accumulation 2 logged half the norm of 2 ranks x 1). The loss is divided once."""

    def backward(self, closure_loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return super().backward(closure_loss, optimizer, *args, scale_wrt_gas=False, **kwargs)  # type: ignore[misc]


class GPUDeepSpeedStrategy(ScaleLossOnce, DeepSpeedStrategy):
    """Lightning's DeepSpeedStrategy, the loss divided by the accumulation once (``ScaleLossOnce``)."""


class CPUDeepSpeedStrategy(ScaleLossOnce, DeepSpeedStrategy):
    """DeepSpeedStrategy on DeepSpeed's CPU accelerator (gloo): skips Lightning's CUDA-only checks and gives
    ``deepspeed.initialize`` the local rank as ``device_rank`` (a CPU device has no index)."""

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # the parent's CUDA check is the only thing skipped

    def setup_distributed(self) -> None:
        reset_seed()  # as the parent, minus the check that device indices equal local ranks (CPU: None)
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model: torch.nn.Module, optimizer: Any, lr_scheduler: Any = None,
                                   ) -> tuple[Any, Any]:
        import argparse

        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank), config=self.config, model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad], optimizer=optimizer,
            lr_scheduler=lr_scheduler, dist_init_required=False,
        )
        return engine, ds_optimizer


class UniversalLoad:
    """Mixin of a DeepSpeed strategy whose engine has ``load_universal`` set: the ZeRO checkpoint it resumes was
    written by another number of ranks, so rank 0 converts it to DeepSpeed's universal checkpoint first
    (``rewarm.checkpoints.universal``), every rank waits for it and loads that."""

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        from rewarm.checkpoints.universal import to_universal, universal_dir

        state = Path(checkpoint_path)
        error = None
        if self.is_global_zero:  # type: ignore[attr-defined]
            try:
                to_universal(state)
            except Exception as e:  # every rank must leave the broadcast below alike
                error = f"{type(e).__name__}: {e}"
        error = self.broadcast(error)  # type: ignore[attr-defined]
        if error is not None:
            from rewarm.checkpoints.universal import conversion_command
            from rewarm.errors import ResumeError

            raise ResumeError(f"could not convert the DeepSpeed checkpoint {state} to a universal checkpoint for "
                              f"a resume on another number of ranks ({error}); by hand: {conversion_command(state)}")
        optimizer = self.deepspeed_engine.optimizer  # type: ignore[attr-defined]
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        client_state = super().load_checkpoint(universal_dir(state), weights_only)  # type: ignore[misc]
        fix_zero3_universal_load(optimizer, hyper)
        return client_state


def fix_zero3_universal_load(optimizer: Any, hyper: list[dict[str, Any]]) -> None:
    """Undo two slips of DeepSpeed 0.19's ZeRO-3 universal load (harmless for ZeRO-1/2): it gives every param group
    the first group's hyperparameters (weight decay included; ours has a no-decay group), put back from ``hyper``
    (the config's, taken before the load); and it gives every parameter partition *one* shared AdamW ``step``
    tensor, which each partition's update then increments (bias correction off after one step): each gets a copy."""
    for group, saved in zip(optimizer.param_groups, hyper, strict=True):
        group.update(saved)
    inner = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer under DeepSpeed's wrapper
    for state in inner.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].clone()


class UniversalDeepSpeedStrategy(UniversalLoad, GPUDeepSpeedStrategy):
    """DeepSpeedStrategy that resumes a ZeRO checkpoint of another world size (GPU)."""


class UniversalCPUDeepSpeedStrategy(UniversalLoad, CPUDeepSpeedStrategy):
    """CPUDeepSpeedStrategy that resumes a ZeRO checkpoint of another world size."""


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) over all devices, applied by the strategy: each
    transformer block (the Hugging Face model's ``_no_split_modules`` classes) and then the model root are
    sharded over the data-parallel mesh. Checkpoints are torch distributed checkpoints (a directory)."""

    def setup(self, trainer: Any) -> None:
        from lightning.fabric.utilities.init import _materialize_distributed_module
        from lightning.fabric.utilities.optimizer import _optimizers_to_device
        from lightning.pytorch.trainer.states import TrainerFn

        assert self.model is not None and self.accelerator is not None and self.lightning_module is not None
        self.accelerator.setup(trainer)
        shard_model(self.lightning_module.model, self.device_mesh["data_parallel"])
        _materialize_distributed_module(self.model, self.root_device)  # a model created on the meta device
        self.model = self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        self.barrier()
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if trainer.state.fn == TrainerFn.FITTING:
            _optimizers_to_device(self.optimizers, self.root_device)


def shard_model(model: torch.nn.Module, mesh: Any) -> int:
    """``fully_shard`` every block of the model's ``_no_split_modules`` classes, then the root; returns the
    number of blocks sharded. A model without ``_no_split_modules`` is sharded as one unit."""
    from torch.distributed.fsdp import fully_shard

    block_names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in block_names]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return len(blocks)
