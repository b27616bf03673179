"""DeepSpeed ZeRO checkpoints across a change of world size: DeepSpeed's universal checkpoint.

A ZeRO checkpoint holds one optimizer partition per rank and loads only on the number of ranks that wrote it.
DeepSpeed's ``ds_to_universal`` rewrites it as one file per parameter (fp32 weights and AdamW moments, whole),
which ``"checkpoint": {"load_universal": true}`` loads on any number of ranks. rewarm converts automatically
when a DeepSpeed run resumes on another world size: rank 0 writes ``<checkpoint>/universal/`` next to
``state.ckpt`` (the checkpoint's manifest and files stay as they were; a finished conversion is reused, an
interrupted one redone), the others wait, every rank loads from it.

The conversion reads the checkpoint inside ``rewarm.faults.safe_load.weights_only_loads`` (the caller's), so it
runs no code from the files either. Imports DeepSpeed only when converting.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

UNIVERSAL = "universal"
DONE = "latest_universal"  # written by ds_to_universal last: its presence marks a finished conversion


def universal_dir(state: Path) -> Path:
    """Where the universal form of the DeepSpeed checkpoint ``state`` (``.../stepN/state.ckpt``) goes."""
    return state.parent / UNIVERSAL


def checkpoint_tag(state: Path) -> str:
    """The tag (sub-folder) DeepSpeed wrote the checkpoint under: the content of its ``latest`` file."""
    latest = state / "latest"
    return latest.read_text().strip() if latest.is_file() else "checkpoint"


def conversion_command(state: Path) -> str:
    """The command that converts ``state`` by hand (what ``to_universal`` runs in-process)."""
    tag = checkpoint_tag(state)
    return (f"python -m deepspeed.checkpoint.ds_to_universal --input_folder {state / tag} "
            f"--output_folder {universal_dir(state) / tag} --inject_missing_state")


def to_universal(state: Path) -> Path:
    """Convert the DeepSpeed checkpoint ``state`` to its universal form (once; rank 0 only) and return the
    directory to load with ``load_universal``. Written under a temporary name and renamed into place."""
    out = universal_dir(state)
    if (out / DONE).is_file():
        log.info("reusing the universal checkpoint %s", out)
        return out
    from deepspeed.checkpoint import ds_to_universal

    tag = checkpoint_tag(state)
    tmp = out.with_name(".tmp-" + UNIVERSAL)
    shutil.rmtree(tmp, ignore_errors=True)
    args = argparse.Namespace(input_folder=str(state / tag), output_folder=str(tmp / tag), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    log.info("converting %s to a universal checkpoint (%s)", state, conversion_command(state))
    chatter = io.StringIO()  # ds_to_universal prints its progress; kept out of the run's log unless it fails
    try:
        with contextlib.redirect_stdout(chatter):
            ds_to_universal.main(args)
    except BaseException:
        log.error("DeepSpeed's universal conversion failed; its output:\n%s", chatter.getvalue())
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
