"""``rewarm train`` through the real CLI, with one extra Lightning callback that records, per rank, what the
scale tests compare. Launched by ``torchrun``: ``probe_train.py PROBE_DIR CONFIG [key=value ...]``.

Per rank it writes ``PROBE_DIR/rank<r>.pt``: ``rows`` (every training micro-batch's input_ids (B, T)),
``logits`` of the trained model on fixed probe ids (computed inside the training process, after the last
step; a collective forward under ZeRO-3 / FSDP2), ``params`` (full parameters when every rank holds them:
DDP, ZeRO-1/2; FSDP2 DTensors gathered with ``full_tensor``), ``partitioned`` (ZeRO-3: every parameter
empty outside a gather), ``global_step`` and ``world_size``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

import rewarm.training.run as train

PROBE_SHAPE = (2, 16)


def probe_ids(vocab: int) -> torch.Tensor:
    """The fixed input (2, 16) on which logits are compared."""
    g = torch.Generator().manual_seed(1234)
    return torch.randint(0, vocab, PROBE_SHAPE, generator=g)


class Probe(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.rows: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.rows.append(batch["input_ids"].detach().cpu().clone())

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        model = pl_module.model
        was_training = model.training
        model.eval()
        with torch.no_grad():  # every rank runs it: a collective under ZeRO-3 / FSDP2
            logits = model(input_ids=probe_ids(300).to(pl_module.device), use_cache=False).logits.float().cpu()
        model.train(was_training)
        partitioned = all(p.numel() == 0 for p in model.parameters())  # ZeRO-3 outside a gather
        record = {"rows": self.rows, "logits": logits, "params": _params(trainer, model), "partitioned": partitioned,
                  "global_step": trainer.global_step, "world_size": trainer.world_size}
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


def _params(trainer: Any, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    if getattr(trainer.strategy, "zero_stage_3", False):
        return None  # partitioned: each rank holds a slice
    out = {}
    for name, p in model.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP2 DTensor: collective gather
        out[name] = full.detach().cpu().clone()
    return out


def main(argv: list[str]) -> int:
    probe_dir = Path(argv[0])
    original = train.build_trainer

    def build_trainer(cfg: Any, plan: Any, loggers: list[Any], callbacks: list[Any], **kw: Any) -> Any:
        return original(cfg, plan, loggers, [*callbacks, Probe(probe_dir)], **kw)

    train.build_trainer = build_trainer
    from rewarm.cli import main as cli

    return cli(["train", *argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
