"""Loading checkpoints without running code.

A checkpoint is a pickle: loaded with plain ``pickle`` (``torch.load(weights_only=False)``) it can call any
function, ``os.system`` included. Every checkpoint rewarm reads (``rewarm export``, ``rewarm eval
--checkpoint``, resuming with any strategy) is read inside ``weights_only_loads``:

- every ``torch.load`` is weights-only, also the ones that libraries make with ``weights_only=False``
  (DeepSpeed's checkpoint engine and ``zero_to_fp32``): torch honours ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``;
  the opposite variable, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``, is removed for the duration;
- the few non-tensor types our own checkpoints hold (``SAFE_GLOBALS``) are allowed, nothing else;
- a torch distributed checkpoint's ``.metadata`` (FSDP2), which torch reads with plain ``pickle.load``, is
  first read here by an unpickler that allows only the checkpoint-metadata classes (``check_dcp_metadata``).

A checkpoint that needs anything else is refused with ``UnsafeCheckpointError`` naming the type. There is
no opt-out: a checkpoint rewarm wrote never needs one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rewarm.errors import ResumeError

log = logging.getLogger(__name__)

FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_NO = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
DCP_METADATA = ".metadata"


class UnsafeCheckpointError(ResumeError):
    """A checkpoint that needs more than weights-only loading allows (it could run code)."""


def safe_globals() -> list[Any]:
    """Non-tensor types our checkpoints hold beyond torch's weights-only defaults: DeepSpeed's ZeRO optimizer
    state records its stage as an enum, its loss scaler and its parameter fragments as objects of plain
    numbers (checked against real shards: tests/faults/test_strategy_resume.py)."""
    out: list[Any] = []
    with contextlib.suppress(ImportError):
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum

        out += [ZeroStageEnum, LossScaler, DynamicLossScaler]
    with contextlib.suppress(ImportError):
        from deepspeed.utils.tensor_fragment import fragment_address

        out.append(fragment_address)
    return out


def refusal(source: str | Path, error: BaseException) -> str:
    """The user's message for a weights-only refusal: the checkpoint and the type it wanted."""
    text = str(error)
    m = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
    what = f"the type {m.group(1)}" if m else f"more than weights ({text.splitlines()[0] if text else type(error).__name__})"
    return (f"refusing checkpoint {source}: loading it needs {what}, which a weights-only load does not allow "
            "(a checkpoint that names other types can run code when loaded; rewarm's own checkpoints never "
            "need it). Do not load this file; if you trust its author, convert it to plain tensors yourself")


@contextlib.contextmanager
def weights_only_loads(source: str | Path) -> Iterator[None]:
    """Within: every ``torch.load`` is weights-only with ``safe_globals()`` allowed; a refusal is raised as
    ``UnsafeCheckpointError`` naming ``source`` and the offending type."""
    import torch

    saved = {k: os.environ.pop(k, None) for k in (FORCE, FORCE_NO)}
    if saved[FORCE_NO]:
        log.warning("%s is ignored while loading %s: checkpoints are always loaded weights-only", FORCE_NO, source)
    os.environ[FORCE] = "1"
    try:
        with torch.serialization.safe_globals(safe_globals()):
            yield
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(refusal(source, e)) from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_DCP_MODULES = ("torch.distributed.checkpoint.metadata",)
_DCP_NAMES = {("torch", "Size"), ("torch.serialization", "_get_layout"),
              ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("collections", "OrderedDict"),
              ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
              ("pathlib", "PureWindowsPath")}


class _MetadataUnpickler(pickle.Unpickler):
    """Allows the classes of ``torch.distributed.checkpoint.metadata``, torch dtypes and the few helpers a
    ``.metadata`` file names; anything else is an UnpicklingError naming it."""

    def find_class(self, module: str, name: str) -> Any:
        import importlib

        import torch

        allowed = (module, name) in _DCP_NAMES
        if "." not in name and module in _DCP_MODULES:  # a class defined there (no dotted lookups into imports)
            obj = getattr(importlib.import_module(module), name, None)
            allowed = isinstance(obj, type) and obj.__module__ == module
        if module == "torch" and "." not in name and isinstance(getattr(torch, name, None), torch.dtype):
            allowed = True
        if not allowed:
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")
        return super().find_class(module, name)


def check_dcp_metadata(state: Path) -> None:
    """Refuse (UnsafeCheckpointError) a distributed checkpoint directory whose ``.metadata`` names a type
    outside the checkpoint-metadata classes: torch would unpickle it with plain ``pickle``."""
    path = state / DCP_METADATA
    try:
        _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(refusal(path, e)) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ResumeError(f"{path} is not a readable checkpoint index ({type(e).__name__}: {e})") from None


def is_dcp(state: Path) -> bool:
    return state.is_dir() and (state / DCP_METADATA).is_file()
