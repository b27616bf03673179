"""Atomic checkpoints and finding one to resume from.

Layout: ``<run_dir>/checkpoints/step00000100/`` holding ``state.ckpt`` (Lightning: model, optimizer, LR
scheduler, loops, the data pipeline state and RNG states under ``rewarm``; a directory of shards for
DeepSpeed) and ``manifest.json``, written last. A checkpoint is written under ``.tmp-step…`` and renamed
into place after its manifest, so a kill at any moment leaves either the old set or the new one; a
directory without a readable, consistent manifest is never loaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE = "state.ckpt"
MANIFEST = "manifest.json"
PREEMPTED_EXIT_CODE = 3  # documented: a preempted run that saved its checkpoint and wants a restart


def step_dir_name(step: int) -> str:
    return f"step{step:08d}"


def _files(root: Path) -> dict[str, int]:
    if root.is_file():
        return {root.name: root.stat().st_size}
    return {str(p.relative_to(root.parent)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def write_manifest(ckpt_dir: Path, info: dict[str, Any]) -> None:
    manifest = {**info, "files": _files(ckpt_dir / STATE), "complete": True}
    tmp = ckpt_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    with open(tmp) as f:
        os.fsync(f.fileno())
    os.replace(tmp, ckpt_dir / MANIFEST)


def read_valid_manifest(ckpt_dir: Path) -> dict[str, Any] | None:
    """The manifest if the checkpoint is complete: manifest readable and every listed file of that size."""
    try:
        manifest = json.loads((ckpt_dir / MANIFEST).read_text())
        if not manifest.get("complete"):
            return None
        for rel, size in manifest["files"].items():
            if (ckpt_dir / rel).stat().st_size != size:
                return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint directories, newest step first (temporary ones excluded)."""
    if not ckpt_root.is_dir():
        return []
    dirs = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step") and p.name[4:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[4:]), reverse=True)


def find_latest_valid(ckpt_root: Path) -> Path | None:
    for d in list_checkpoints(ckpt_root):
        if read_valid_manifest(d) is not None:
            return d
        log.warning("skipping checkpoint %s: incomplete or unreadable", d)
    return None


def resolve_resume(mode: str, run_dir: Path) -> Path | None:
    """``auto``: newest valid checkpoint of the run (None: start fresh); ``never``: None; else a path."""
    if mode == "never":
        log.info("resume=never: starting fresh")
        return None
    if mode == "auto":
        found = find_latest_valid(run_dir / "checkpoints")
        log.info("resume=auto: %s", f"resuming from {found}" if found else "no valid checkpoint, starting fresh")
        return found
    path = Path(mode)
    if path.name == STATE:
        path = path.parent
    if read_valid_manifest(path) is None:
        from rewarm.errors import ResumeError

        raise ResumeError(f"resume={mode}: not a complete rewarm checkpoint directory (no valid {MANIFEST})")
    log.info("resuming from %s", path)
    return path


class Checkpointer:
    """Saves every ``every_steps`` optimizer steps and/or ``every_minutes``; keeps the newest ``keep_last``
    plus every checkpoint whose step is a multiple of ``keep_every``. Called by the module after each
    optimizer step (after the metrics row is written, so the saved counters include that step)."""

    def __init__(self, root: Path, *, every_steps: int, every_minutes: float, keep_last: int, keep_every: int,
                 info: Callable[[], dict[str, Any]]) -> None:
        self.root = root
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self.keep_last, self.keep_every = keep_last, keep_every
        self.info = info
        self._last_time = time.monotonic()
        self.last_saved_step = -1

    def due(self, step: int) -> bool:
        by_steps = self.every_steps > 0 and step % self.every_steps == 0
        by_time = self.every_minutes > 0 and time.monotonic() - self._last_time >= 60 * self.every_minutes
        return by_steps or by_time

    def save(self, trainer: Any, reason: str) -> Path:
        step = trainer.global_step
        final = self.root / step_dir_name(step)
        if step == self.last_saved_step and final.is_dir():
            return final
        tmp = self.root / (".tmp-" + step_dir_name(step))
        if trainer.is_global_zero:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        trainer.strategy.barrier("rewarm-ckpt-mkdir")
        trainer.save_checkpoint(tmp / STATE)  # collective: every rank takes part (DeepSpeed shards)
        trainer.strategy.barrier("rewarm-ckpt-written")
        if trainer.is_global_zero:
            write_manifest(tmp, {"step": step, "reason": reason, **self.info()})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            self._prune()
            log.info("checkpoint %s saved (%s)", final, reason)
        trainer.strategy.barrier("rewarm-ckpt-done")
        self._last_time = time.monotonic()
        self.last_saved_step = step
        return final

    def _prune(self) -> None:
        for i, d in enumerate(list_checkpoints(self.root)):
            step = int(d.name[4:])
            keep = i < self.keep_last or (self.keep_every > 0 and step % self.keep_every == 0)
            if not keep:
                shutil.rmtree(d, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SignalWatcher:
    """SIGUSR1 (SLURM's warning, ``#SBATCH --signal=USR1@120``) and SIGTERM set a flag; the training loop
    checks it after each optimizer step, saves a checkpoint and stops."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. tests): signals stay as they were
                pass

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def _handler(self, signum: int, frame: Any) -> None:
        log.warning("received signal %s: checkpoint after this step, then stop", signal.Signals(signum).name)
        self.received = signum
