"""Atomic checkpoints and finding one to resume from.

Layout: ``<run_dir>/checkpoints/step00000100/`` holding ``state.ckpt`` (Lightning: model, optimizer, LR
scheduler, loops, the data pipeline state and RNG states under ``rewarm``; a directory of shards for
DeepSpeed) and ``manifest.json``, written last. A checkpoint is written under ``.tmp-step…`` and renamed
into place after its manifest, so a kill at any moment leaves either the old set or the new one. A
checkpoint is *valid* when its manifest is readable and complete, every file it lists has the listed size
and (the deep check, before resuming or exporting) every file's content has the sha256 the manifest lists
(manifests written before the hashes existed: every zip archive in it passes its CRCs); an invalid one is
never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rewarm.errors import DiskFullError
from rewarm.faults.disk import free_bytes, is_disk_full, message, state_bytes, tree_bytes

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


def file_sha256(path: Path, chunk_bytes: int = 8 << 20) -> str:
    h = hashlib.sha256()
    buf = memoryview(bytearray(chunk_bytes))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


def _hashes(ckpt_dir: Path, files: list[str]) -> dict[str, str]:
    """sha256 of each file, read back right after the write (from the page cache), one thread per file (hashlib
    releases the GIL): ~1.6 GiB/s per core here."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(files)))) as pool:
        return dict(zip(files, pool.map(lambda rel: file_sha256(ckpt_dir / rel), files), strict=True))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader (or a kill, or a full disk) never
    sees half a file; the temporary file is removed when the write fails."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_manifest(ckpt_dir: Path, info: dict[str, Any]) -> None:
    files = _files(ckpt_dir / STATE)
    manifest = {**info, "files": files, "sha256": _hashes(ckpt_dir, list(files)), "complete": True}
    tmp = ckpt_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    with open(tmp) as f:
        os.fsync(f.fileno())
    os.replace(tmp, ckpt_dir / MANIFEST)


def read_valid_manifest(ckpt_dir: Path, *, deep: bool = False) -> dict[str, Any] | None:
    """The manifest if the checkpoint is valid (see the module docstring), else None. ``deep``: also read
    every zip archive of the checkpoint and check its CRCs (costs one read of the checkpoint)."""
    return _check(ckpt_dir, deep)[0]


def invalid_reason(ckpt_dir: Path, *, deep: bool = False) -> str | None:
    """Why the checkpoint is invalid (None: it is valid)."""
    return _check(ckpt_dir, deep)[1]


def _check(ckpt_dir: Path, deep: bool) -> tuple[dict[str, Any] | None, str | None]:
    try:
        manifest = json.loads((ckpt_dir / MANIFEST).read_text())
        if not isinstance(manifest, dict) or not manifest.get("complete") or not manifest.get("files"):
            return None, f"{MANIFEST} is not complete"
        for rel, size in manifest["files"].items():
            actual = (ckpt_dir / rel).stat().st_size
            if actual != size:
                return None, f"{rel} has {actual} bytes, the manifest says {size}"
        bad = None
        if deep:
            hashes = manifest.get("sha256")
            bad = _bad_hash(ckpt_dir, hashes) if hashes else _bad_archive(ckpt_dir, list(manifest["files"]))
        return (None, bad) if bad else (manifest, None)
    except FileNotFoundError as e:
        return None, f"missing {Path(e.filename or '?').name}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return None, f"unreadable {MANIFEST} ({type(e).__name__}: {e})"


def _bad_hash(ckpt_dir: Path, hashes: dict[str, str]) -> str | None:
    """The first file whose content differs from the sha256 its manifest lists."""
    rels = list(hashes)
    actual = _hashes(ckpt_dir, rels)
    for rel in rels:
        if actual[rel] != hashes[rel]:
            return f"{rel}: content differs from the manifest's sha256 (the file was changed after it was written)"
    return None


def _bad_archive(ckpt_dir: Path, files: list[str]) -> str | None:
    """The first zip archive (torch.save's format) among ``files`` whose CRCs fail, with the failing member."""
    import zipfile

    for rel in files:
        path = ckpt_dir / rel
        if not zipfile.is_zipfile(path):
            continue
        try:
            with zipfile.ZipFile(path) as z:
                member = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
            return f"{rel} is not a readable archive ({e})"
        if member is not None:
            return f"{rel}: CRC check failed for {member}"
    return None


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint directories, newest step first (temporary ones excluded)."""
    if not ckpt_root.is_dir():
        return []
    dirs = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step") and p.name[4:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[4:]), reverse=True)


def find_latest_valid(ckpt_root: Path, *, deep: bool = True) -> Path | None:
    """The newest valid checkpoint under ``ckpt_root``; each invalid newer one is skipped with a warning
    naming it and the reason."""
    for d in list_checkpoints(ckpt_root):
        reason = invalid_reason(d, deep=deep)
        if reason is None:
            return d
        log.warning("skipping checkpoint %s: %s", d, reason)
    return None


def resolve_resume(mode: str, run_dir: Path) -> Path | None:
    """``auto``: newest valid checkpoint of the run (None: start fresh); ``never``: None; else a path: a
    checkpoint directory, its ``state.ckpt``, or a run directory (its newest valid checkpoint).
    Raises ResumeError for a path that holds no valid checkpoint."""
    if mode == "never":
        log.info("resume=never: starting fresh")
        return None
    if mode == "auto":
        found = find_latest_valid(run_dir / "checkpoints")
        log.info("resume=auto: %s", f"resuming from {found}" if found else "no valid checkpoint, starting fresh")
        return found
    from rewarm.errors import ResumeError

    path = Path(mode)
    if path.name == STATE:
        path = path.parent
    if (path / "checkpoints").is_dir() and not (path / MANIFEST).exists():
        found = find_latest_valid(path / "checkpoints")
        if found is None:
            raise ResumeError(f"resume={mode}: the run directory holds no valid checkpoint")
        path = found
    reason = invalid_reason(path, deep=True)
    if reason is not None:
        raise ResumeError(f"resume={mode}: not a valid rewarm checkpoint directory ({reason})")
    log.info("resume=%s: resuming from %s", mode, path)
    return path


class Checkpointer:
    """Saves every ``every_steps`` optimizer steps and/or ``every_minutes``; keeps the newest ``keep_last``
    valid checkpoints plus every one whose step is a multiple of ``keep_every``. Called by the module after
    each optimizer step (after the metrics row is written, so the saved counters include that step).

    ``set_aside(base_step)`` (rank 0, at start) moves checkpoints newer than the one resumed from (all of them
    after a fresh start) to ``checkpoints/abandoned/``: they belong to an abandoned history (invalid ones that
    were skipped, or a rewind with ``resume=PATH`` / ``resume=never``), so ``resume=auto`` never mixes two."""

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
        """Write the checkpoint of ``trainer.global_step`` (collective: call on every rank). A full disk (on any
        rank) leaves the previous checkpoints as they were, removes the partial one and raises DiskFullError on
        every rank alike."""
        step = trainer.global_step
        final = self.root / step_dir_name(step)
        if step == self.last_saved_step and final.is_dir():
            return final
        tmp = self.root / (".tmp-" + step_dir_name(step))
        needed = self.expected_bytes()
        metrics_error = _flush_metrics(trainer)  # the checkpoint holds every step metrics.csv holds
        full = metrics_error is not None or (trainer.is_global_zero and needed > free_bytes(self.root))
        if self._collective_full(trainer, full):
            raise metrics_error or DiskFullError(message("a checkpoint", self.root, needed, free_bytes(self.root)))
        written = self._write_state(trainer, tmp)
        if self._collective_full(trainer, written is not None):
            self._discard(trainer, tmp)
            estimate = max(written or 0, state_bytes(trainer.lightning_module, trainer.optimizers), needed)
            raise DiskFullError(message("a checkpoint", self.root, estimate, free_bytes(self.root), at_least=True))
        full = False
        if trainer.is_global_zero:
            try:
                self._publish(tmp, final, step, reason)
            except OSError as e:
                if not is_disk_full(e):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                full = True
        if self._collective_full(trainer, full):  # also the barrier that ends the save
            raise DiskFullError(message("a checkpoint's manifest", self.root, needed, free_bytes(self.root),
                                        at_least=True))
        self._last_time = time.monotonic()
        self.last_saved_step = step
        return final

    def expected_bytes(self) -> int:
        """Size of the newest valid checkpoint (0: none yet): what the next one will take, about."""
        for d in list_checkpoints(self.root):
            manifest = read_valid_manifest(d)
            if manifest is not None:
                return sum(int(n) for n in manifest["files"].values())
        return 0

    def _write_state(self, trainer: Any, tmp: Path) -> int | None:
        """Every rank writes its part; None, or the bytes written when the disk was full (this rank). A rank
        that fails must reach the same next collective as the others (the all-reduce in ``save``): so this is
        ``trainer.save_checkpoint`` without its closing barrier."""
        full = False
        if trainer.is_global_zero:
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            except OSError as e:
                if not is_disk_full(e):
                    raise
                full = True
        if self._collective_full(trainer, full):  # also the barrier after the mkdir
            return 1
        try:
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(False)  # collective (our on_save_checkpoint)
            trainer.strategy.save_checkpoint(checkpoint, tmp / STATE)  # DeepSpeed: every rank writes its shards
            write_sharded = getattr(trainer.lightning_module, "write_sharded_state", None)
            if write_sharded is not None:  # each rank's part of what the module shards itself (the EMA)
                write_sharded(tmp / STATE)
            return None
        except (OSError, DiskFullError) as e:
            if not is_disk_full(e):
                raise
            return tree_bytes(tmp) + 1

    def _publish(self, tmp: Path, final: Path, step: int, reason: str) -> None:
        """Rank 0: manifest, rename into place, prune."""
        write_manifest(tmp, {"step": step, "reason": reason, "time": time.time(), **self.info()})
        _replace_dir(tmp, final)
        _fsync_dir(self.root)
        self._prune()
        log.info("checkpoint %s saved (%s)", final, reason)

    def _discard(self, trainer: Any, tmp: Path) -> None:
        if trainer.is_global_zero:
            shutil.rmtree(tmp, ignore_errors=True)
        trainer.strategy.barrier("rewarm-ckpt-discard")

    @staticmethod
    def _collective_full(trainer: Any, full: bool) -> bool:
        """Whether any rank saw a full disk (an all-reduce; also a barrier)."""
        if trainer.world_size == 1:
            return full
        import torch

        flag = torch.tensor([float(full)], device=trainer.strategy.root_device)
        return bool(trainer.strategy.reduce(flag, reduce_op="sum").item() > 0)

    def set_aside(self, base_step: int | None) -> None:
        """Move checkpoints newer than ``base_step`` (all when None) to ``abandoned/``, with a warning each, and
        remove temporaries of interrupted writes. Call on rank 0 only, before training."""
        _remove_stale_temporaries(self.root)
        for d in list_checkpoints(self.root):
            if base_step is None or int(d.name[4:]) > base_step:
                dest = self.root / "abandoned" / d.name
                shutil.rmtree(dest, ignore_errors=True)
                dest.parent.mkdir(exist_ok=True)
                os.replace(d, dest)
                log.warning("checkpoint %s is not part of this run's history (resumed from %s): moved to %s",
                            d, "nothing" if base_step is None else f"step {base_step}", dest)

    def _prune(self) -> None:
        """Remove invalid checkpoints, and valid ones beyond ``keep_last`` that are no ``keep_every`` multiple."""
        valid = 0
        for d in list_checkpoints(self.root):
            step = int(d.name[4:])
            if read_valid_manifest(d) is None:
                shutil.rmtree(d, ignore_errors=True)
                continue
            valid += 1
            if valid > self.keep_last and not (self.keep_every > 0 and step % self.keep_every == 0):
                shutil.rmtree(d, ignore_errors=True)


def _flush_metrics(trainer: Any) -> DiskFullError | None:
    """Write the pending metrics row now (rank 0), so a full disk there is known before the collective save."""
    flush = getattr(trainer.lightning_module, "flush_metrics", None)
    try:
        if flush is not None:
            flush()
    except DiskFullError as e:
        return e
    return None


def _replace_dir(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest``; an existing ``dest`` (the same step written again, e.g. after a rewind)
    is renamed away first and removed after, so ``dest`` is always either old or new, complete."""
    old = dest.with_name(".old-" + dest.name)
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(src, dest)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale_temporaries(root: Path) -> None:
    """``.tmp-*`` / ``.old-*`` left by a process killed while saving (never loaded; rank 0 only)."""
    if not root.is_dir():
        return
    for d in root.iterdir():
        if d.name.startswith((".tmp-", ".old-")):
            log.info("removing %s, left by an interrupted checkpoint write", d)
            shutil.rmtree(d, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SignalWatcher:
    """SIGUSR1 (SLURM's warning, ``#SBATCH --signal=USR1@120``) and SIGTERM set a flag; the training loop
    checks it after each optimizer step, saves a checkpoint and stops.

    Lightning adds its own SIGTERM handler during ``fit`` (it keeps ours, called after its own) and would raise
    ``SIGTERMException`` (a SystemExit with status 0) at the end of the current micro-batch, possibly in the
    middle of gradient accumulation, without a checkpoint. With ``install(trainer)`` our handler clears
    Lightning's flag, so the run always stops at the next optimizer-step boundary, checkpointed."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: Any = None

    def install(self, trainer: Any = None) -> None:
        self._trainer = trainer
        for sig in self.SIGNALS:
            try:
                self._previous.setdefault(sig, signal.signal(sig, self._handler))  # installing twice is fine
            except ValueError:  # not the main thread (e.g. tests): signals stay as they were
                pass

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()
        self._trainer = None

    def _handler(self, signum: int, frame: Any) -> None:
        log.warning("received signal %s: checkpoint after this step, then stop", signal.Signals(signum).name)
        self.received = signum
        connector = getattr(self._trainer, "_signal_connector", None)
        if connector is not None and hasattr(connector, "received_sigterm"):
            connector.received_sigterm = False
