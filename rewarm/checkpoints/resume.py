"""What a resume may change: the config fingerprint and the diff of a checkpoint's config against the new one.

A key either changes the run's *meaning* (the model, the data stream, the schedule, the batch, the seed, the
optimizer: resuming with a different value would continue a different run) or is *harmless* (logging,
evaluation and checkpoint frequency, where files go, implementation details that do not change the maths).
Every key is a meaning key unless it is listed in ``HARMLESS`` (a new key is safe by default). A resume with
a changed meaning key is refused with the keys listed, unless ``resume.allow_config_change`` is set, which
is logged. Import-light: the standard library only (plus OmegaConf through ``rewarm.config.to_dict``).

Elastic resume: a checkpoint records the layout it was written with (``Layout``: ranks, accumulation, rows per
optimizer step, data streams). With the rows per optimizer step unchanged, the *layout keys* (``LAYOUT_KEYS``:
devices, nodes, micro-batch) may change on resume and gradient accumulation is recomputed; a changed global
batch is a meaning change. A checkpoint written before layouts were recorded resumes only on its own world size.
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
    "checkpoint.", "resume.", "logging.",
)
# Keys an elastic resume may change when the rows per optimizer step stay the same (accumulation is recomputed).
LAYOUT_KEYS: tuple[str, ...] = ("trainer.devices", "trainer.num_nodes", "trainer.micro_batch_size")
# Keys that set the rows per optimizer step: compared as the resolved number of rows (see ``check_config_change``).
BATCH_KEYS: tuple[str, ...] = ("trainer.global_batch_size", "trainer.global_batch_tokens")
GLOBAL_BATCH = "trainer.global_batch_size (rows per optimizer step)"


@dataclass(frozen=True)
class Layout:
    """How a run's optimizer step is spread over processes: ``world_size`` ranks x ``micro_batch_size`` rows x
    ``grad_accum_steps`` micro-batches = ``rows_per_step``; ``streams``: logical data streams (None: a data
    pipeline without world-size-free streams)."""

    world_size: int
    micro_batch_size: int
    grad_accum_steps: int
    streams: int | None = None

    @property
    def rows_per_step(self) -> int:
        return self.world_size * self.micro_batch_size * self.grad_accum_steps

    def as_dict(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "micro_batch_size": self.micro_batch_size,
                "grad_accum_steps": self.grad_accum_steps, "rows_per_step": self.rows_per_step,
                "streams": self.streams}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        return cls(int(d["world_size"]), int(d["micro_batch_size"]), int(d["grad_accum_steps"]), d.get("streams"))

    def arithmetic(self) -> str:
        return (f"{self.micro_batch_size} rows x accumulation {self.grad_accum_steps} x {_ranks(self.world_size)} = "
                f"{self.rows_per_step} rows")


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


def check_config_change(saved: dict[str, Any] | None, now: dict[str, Any], *, allow: bool, source: str,
                        layouts: tuple[Layout, Layout] | None = None) -> None:
    """Refuse (ResumeError listing the keys) a resume whose config changes the run's meaning, unless ``allow``;
    log what changed. ``saved``: the config stored with the checkpoint (None: an old checkpoint without one,
    not checked, with a warning); ``source``: the checkpoint, named in the messages. ``layouts``: (the
    checkpoint's, this run's) when the checkpoint records its layout: the layout keys may then change, and the
    global batch is compared as rows per optimizer step (whichever keys set it)."""
    if saved is None:
        log.warning("checkpoint %s stores no config: the config change check is skipped", source)
        return
    meaning, harmless = diff_configs(saved, now)
    hint = ""
    if layouts is not None:
        meaning = [c for c in meaning if c.key not in LAYOUT_KEYS + BATCH_KEYS]
        was, new = layouts
        if was.rows_per_step != new.rows_per_step:
            meaning.insert(0, Change(GLOBAL_BATCH, was.rows_per_step, new.rows_per_step))
            hint = f" ({batch_arithmetic(was, new)})"
    if harmless:
        log.info("resume from %s with harmless config changes: %s", source, "; ".join(map(str, harmless)))
    if not meaning:
        return
    listed = "; ".join(map(str, meaning)) + hint
    if not allow:
        raise ResumeError(
            f"the config differs from the one of checkpoint {source} in keys that change the run's meaning: "
            f"{listed}. Resume with the original values, start a new run (another run.name, or resume=never), "
            "or set resume.allow_config_change=true to continue anyway")
    log.warning("resume.allow_config_change=true: continuing from %s with changed keys: %s", source, listed)


def batch_arithmetic(was: Layout, new: Layout) -> str:
    """Why the rows per optimizer step changed, and the settings that keep the checkpoint's."""
    from rewarm.config import keep_batch_hint

    return (f"the checkpoint's optimizer step took {was.arithmetic()}, this run's takes {new.arithmetic()}; "
            + keep_batch_hint(was.rows_per_step, new.world_size, new.micro_batch_size))


def check_world_size(manifest: dict[str, Any], now: Layout, source: str) -> None:
    """A checkpoint without a recorded layout (written before elastic resume) resumes only on the world size it
    was written with (taken from its config): ResumeError naming both."""
    t = (manifest.get("config") or {}).get("trainer") or {}
    devices, nodes = int(t.get("devices", 1)), int(t.get("num_nodes", 1))
    if devices * nodes == now.world_size:
        return
    raise ResumeError(
        f"checkpoint {source} was written before elastic resume, on {_ranks(devices * nodes)} (trainer.devices="
        f"{devices} x trainer.num_nodes={nodes}): it resumes only on {_ranks(devices * nodes)}, and this run has "
        f"{_ranks(now.world_size)}. Resume with trainer.devices={devices} trainer.num_nodes={nodes}, or start a new "
        "run (another run.name, or resume=never)")


def elastic_line(was: Layout, now: Layout) -> str | None:
    """``elastic resume: 2 ranks -> 1 rank, accumulation 1 -> 2, streams 64 unchanged`` (None: same layout)."""
    if (was.world_size, was.micro_batch_size, was.grad_accum_steps) == (
            now.world_size, now.micro_batch_size, now.grad_accum_steps):
        return None
    parts = [_change(_ranks(was.world_size), _ranks(now.world_size)),
             "accumulation " + _change(str(was.grad_accum_steps), str(now.grad_accum_steps))]
    if was.micro_batch_size != now.micro_batch_size:
        parts.append(f"micro-batch {was.micro_batch_size} -> {now.micro_batch_size} rows")
    if now.streams is not None:
        parts.append("streams " + _change(str(was.streams), str(now.streams)))
    return "elastic resume: " + ", ".join(parts)


def _change(a: str, b: str) -> str:
    return f"{a} unchanged" if a == b else f"{a} -> {b}"


def _ranks(n: int) -> str:
    return f"{n} rank" if n == 1 else f"{n} ranks"


def manifest_info(config: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """What a checkpoint manifest stores about the config: its fingerprint, the resolved config itself and the
    run's layout (its presence marks a checkpoint that may resume on another world size)."""
    out = {"config_fingerprint": config_fingerprint(config), "config": config}
    return {**out, "layout": layout.as_dict()} if layout is not None else out


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
    ``finished``: the checkpoint is at or past the last step, so nothing is left to train; ``saved``: the layout
    the checkpoint was written with (None: a fresh start, or a checkpoint written before layouts were recorded);
    ``elastic``: the line that says how the layout changed (None: unchanged)."""

    step: int | None
    finished: bool
    saved: Layout | None = None
    elastic: str | None = None

    @property
    def first_new_row(self) -> int | None:
        """metrics.csv keeps the rows below this step. A checkpoint at step s is saved after row s - 1; at the
        end of training it is saved after the final row s (the last evaluation), which is kept too."""
        if self.step is None:
            return None
        return self.step + 1 if self.finished else self.step

    def world_changed(self, now: Layout) -> bool:
        """The checkpoint was written by another number of ranks (its sharded state must be resharded)."""
        return self.saved is not None and self.saved.world_size != now.world_size


def prepare_resume(ckpt: Path | None, config: dict[str, Any], checkpointer: Any, *, max_steps: int,
                   allow_config_change: bool, layout: Layout) -> ResumePoint:
    """Check the config against checkpoint ``ckpt`` (ResumeError on a change of meaning, or on another world size
    for a checkpoint without a recorded layout), make every new checkpoint's manifest store the config, its
    fingerprint and ``layout`` (this run's), and say where the run begins."""
    from rewarm.checkpoints.store import read_valid_manifest

    base_info = checkpointer.info
    checkpointer.info = lambda: {**base_info(), **manifest_info(config, layout)}
    if ckpt is None:
        return ResumePoint(None, False)
    manifest = read_valid_manifest(ckpt)
    if manifest is None:
        raise ResumeError(f"checkpoint {ckpt} became unreadable")
    saved = Layout.from_dict(manifest["layout"]) if isinstance(manifest.get("layout"), dict) else None
    if saved is None and manifest.get("config") is not None:
        check_world_size(manifest, layout, str(ckpt))
    check_config_change(manifest.get("config"), config, allow=allow_config_change, source=str(ckpt),
                        layouts=(saved, layout) if saved is not None else None)
    step = int(manifest["step"])
    checkpointer.last_saved_step = step  # the checkpoint resumed from is not written again
    return ResumePoint(step, step >= max_steps, saved, elastic_line(saved, layout) if saved else None)
