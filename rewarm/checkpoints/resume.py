"""What a resume may change: the config fingerprint and the diff of a checkpoint's config against the new one.

A key either changes the run's *meaning* (the model, the data stream, the schedule, the batch, the seed, the
optimizer: resuming with a different value would continue a different run) or is *harmless* (logging,
evaluation and checkpoint frequency, where files go, implementation details that do not change the maths).
Every key is a meaning key unless it is listed in ``HARMLESS`` (a new key is safe by default). A resume with
a changed meaning key is refused with the keys listed, unless ``resume.allow_config_change`` is set, which
is logged. Import-light: the standard library only (plus OmegaConf through ``rewarm.config.to_dict``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewarm.config import flatten
from rewarm.errors import ResumeError

log = logging.getLogger(__name__)

# Dotted keys (or prefixes ending in ".") whose change keeps the run the same run.
HARMLESS: tuple[str, ...] = (
    "run.name", "run.out_dir", "run.deterministic",
    "model.attn_implementation", "model.activation_checkpointing", "model.compile", "model.trust_remote_code",
    "data.cache_dir", "data.worker_start", "data.tokenize_batch_docs",
    "trainer.val_every_steps", "trainer.log_every_steps", "trainer.accelerator",
    "trainer.on_nonfinite", "trainer.max_skipped_steps",
    "trainer.deepspeed.allgather_bucket_size", "trainer.deepspeed.reduce_bucket_size",
    "optimizer.fused",
    "checkpoint.", "resume.", "logging.", "forecast.", "model.pretraining.",
)


@dataclass(frozen=True)
class Change:
    """One differing key: its dotted name, the value in the checkpoint, the value now."""

    key: str
    saved: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.saved)} -> {_show(self.now)}"


def is_harmless(key: str) -> bool:
    return any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS)


def meaning_items(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config without its harmless keys."""
    return {k: v for k, v in flatten(config).items() if not is_harmless(k)}


def config_fingerprint(config: dict[str, Any]) -> str:
    """sha256 (16 hex digits) of the meaning keys of a resolved config (``rewarm.config.to_dict``):
    unchanged by harmless edits."""
    payload = json.dumps(meaning_items(config), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def diff_configs(saved: dict[str, Any], now: dict[str, Any]) -> tuple[list[Change], list[Change]]:
    """(meaning changes, harmless changes) between two resolved configs, sorted by key. A key present on one
    side only counts as changed (``<absent>`` on the other)."""
    a, b = flatten(saved), flatten(now)
    changes = [Change(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
               if a.get(k, _ABSENT) != b.get(k, _ABSENT)]
    return [c for c in changes if not is_harmless(c.key)], [c for c in changes if is_harmless(c.key)]


def check_config_change(saved: dict[str, Any] | None, now: dict[str, Any], *, allow: bool, source: str) -> None:
    """Refuse (ResumeError listing the keys) a resume whose config changes the run's meaning, unless ``allow``;
    log what changed. ``saved``: the config stored with the checkpoint (None: an old checkpoint without one,
    not checked, with a warning); ``source``: the checkpoint, named in the messages."""
    if saved is None:
        log.warning("checkpoint %s stores no config: the config change check is skipped", source)
        return
    meaning, harmless = diff_configs(saved, now)
    if harmless:
        log.info("resume from %s with harmless config changes: %s", source, "; ".join(map(str, harmless)))
    if not meaning:
        return
    listed = "; ".join(map(str, meaning))
    if not allow:
        raise ResumeError(
            f"the config differs from the one of checkpoint {source} in keys that change the run's meaning: "
            f"{listed}. Resume with the original values, start a new run (another run.name, or resume=never), "
            "or set resume.allow_config_change=true to continue anyway")
    log.warning("resume.allow_config_change=true: continuing from %s with changed keys: %s", source, listed)


def manifest_info(config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint manifest stores about the config: its fingerprint and the resolved config itself."""
    return {"config_fingerprint": config_fingerprint(config), "config": config}


def gather_objects(obj: Any, world_size: int) -> list[Any]:
    """``obj`` of every rank, in rank order (a collective when torch.distributed runs with several ranks)."""
    if world_size == 1:
        return [obj]
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, _Absent) else json.dumps(value, default=str)


@dataclass(frozen=True)
class ResumePoint:
    """Where a (re)started run begins. ``step``: global step of the checkpoint (None: fresh start);
    ``finished``: the checkpoint is at or past the last step, so nothing is left to train."""

    step: int | None
    finished: bool

    @property
    def first_new_row(self) -> int | None:
        """metrics.csv keeps the rows below this step. A checkpoint at step s is saved after row s - 1; at the
        end of training it is saved after the final row s (the last evaluation), which is kept too."""
        if self.step is None:
            return None
        return self.step + 1 if self.finished else self.step


def prepare_resume(ckpt: Path | None, config: dict[str, Any], checkpointer: Any, *, max_steps: int,
                   allow_config_change: bool) -> ResumePoint:
    """Check the config against checkpoint ``ckpt`` (ResumeError on a change of meaning), make every new
    checkpoint's manifest store the config and its fingerprint, and say where the run begins."""
    from rewarm.checkpoints.store import read_valid_manifest

    base_info = checkpointer.info
    checkpointer.info = lambda: {**base_info(), **manifest_info(config)}
    if ckpt is None:
        return ResumePoint(None, False)
    manifest = read_valid_manifest(ckpt)
    if manifest is None:
        raise ResumeError(f"checkpoint {ckpt} became unreadable")
    check_config_change(manifest.get("config"), config, allow=allow_config_change, source=str(ckpt))
    step = int(manifest["step"])
    checkpointer.last_saved_step = step  # the checkpoint resumed from is not written again
    return ResumePoint(step, step >= max_steps)
