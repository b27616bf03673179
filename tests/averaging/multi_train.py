"""Several ``rewarm train`` runs one after the other in the same ``torchrun`` processes (one start-up of torch,
Lightning and DeepSpeed for all of them): ``multi_train.py CONFIG RUNS_JSON`` where RUNS_JSON is a list of
override lists. Each run starts its own process group (a finished run may leave one on some ranks only). At most
one DeepSpeed run per process: a second one cannot set up its communication again. Exit code: the first non-zero
one."""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    import torch.distributed as dist

    from rewarm.cli import main as cli

    config, runs = argv[0], json.loads(argv[1])
    for overrides in runs:
        rc = cli(["train", config, *overrides])
        if rc:
            return rc
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
