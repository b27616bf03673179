"""`python record_train.py CONFIG [k=v ...]` = `python -m rewarm train CONFIG [k=v ...]`, observed.

Test harness for tests/resume (real process, real code): it only *watches* what the run does.
- Every training micro-batch is appended to ``$REWARM_RECORD`` as one JSON line
  ``{"pid", "step", "batch", "rows"}`` (rows: the full ``seq_len + 1`` token rows, i.e. ``input_ids`` plus the
  last label), flushed before the step runs, so a ``kill -9`` loses nothing that was trained on.
- ``$REWARM_SLOW_MANIFEST_STEP=k``: the checkpoint of step ``k`` pauses 60 s after ``state.ckpt`` is written and
  before its manifest, which makes "killed in the middle of a checkpoint write" observable for the test.
"""

from __future__ import annotations

import os
import sys
import time


def _install_recorder(path: str) -> None:
    from resume_helpers import recording_step  # this script's directory is sys.path[0]

    import rewarm.training.module as module

    out = open(path, "a")  # noqa: SIM115 - open for the life of the process
    module.RewarmModule.training_step = recording_step(module.RewarmModule.training_step, out)


def _install_slow_manifest(step: int) -> None:
    import rewarm.checkpoints.store as checkpointing

    original = checkpointing.write_manifest

    def write_manifest(ckpt_dir, info):  # type: ignore[no-untyped-def]
        if int(info["step"]) == step:
            (ckpt_dir / "slow-manifest").write_text("state.ckpt written, manifest pending\n")
            time.sleep(60)
        return original(ckpt_dir, info)

    checkpointing.write_manifest = write_manifest


def main() -> int:
    if os.environ.get("REWARM_RECORD"):
        _install_recorder(os.environ["REWARM_RECORD"])
    if os.environ.get("REWARM_SLOW_MANIFEST_STEP"):
        _install_slow_manifest(int(os.environ["REWARM_SLOW_MANIFEST_STEP"]))
    from rewarm.cli import main as cli_main

    return cli_main(["train", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
