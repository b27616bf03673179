"""A full disk: what was being written, where, how many bytes it needs and how many are free.

A checkpoint save that runs out of space removes its temporary directory and raises ``DiskFullError``; the
previous checkpoints stay as they were (a checkpoint only becomes visible by a rename after its manifest).
Before writing, a save compares the free space with the size of the last checkpoint (the best estimate of
the next one) and refuses early. metrics.csv rows are appended whole or not at all (``append_whole``).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from rewarm.errors import DiskFullError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in FULL_ERRNOS)


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if absent)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def message(what: str, directory: Path, needed: int, free: int, *, at_least: bool = False) -> str:
    need = f"at least {needed:,}" if at_least else f"{needed:,}"
    return (f"disk full: {what} in {directory} needs {need} bytes, {free:,} bytes are free there. Free space (or "
            "move run.out_dir), then continue with: rewarm train CONFIG resume=auto")


def state_bytes(module: Any, optimizers: list[Any]) -> int:
    """Bytes of the parameters and optimizer state tensors this process holds: a checkpoint's size, about."""
    import torch

    total = sum(p.numel() * p.element_size() for p in module.parameters())
    for opt in optimizers:
        states = getattr(opt, "state", None)
        for state in states.values() if isinstance(states, dict) else ():
            if isinstance(state, dict):
                total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return total


def describe_oserror(e: OSError) -> str:
    """A full-disk OSError raised outside our own checks (an export, wandb's files), as the user's message."""
    where = Path(e.filename).parent if e.filename else Path.cwd()
    return (f"disk full: writing {e.filename or 'a file'} failed ({e.strerror}); {free_bytes(where):,} bytes are "
            f"free in {where}. Free space, then continue with: rewarm train CONFIG resume=auto")


def append_whole(fd: int, data: bytes, path: Path) -> None:
    """Append ``data`` to the file open at ``fd`` as one write; on a full disk the file is cut back to its
    previous length (no torn line) and DiskFullError is raised."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, "short write", str(path))
    except OSError as e:
        os.ftruncate(fd, start)
        if not is_disk_full(e):
            raise
        raise DiskFullError(message(f"a row of {path.name}", path.parent, len(data), free_bytes(path))) from None
