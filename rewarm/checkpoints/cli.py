"""``rewarm export``: a Hugging Face directory from a run's newest valid checkpoint or a checkpoint directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from rewarm.errors import ConfigError, ResumeError, report


def export_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rewarm export", description="Write a Hugging Face directory from a checkpoint.")
    p.add_argument("source", help="run directory (its newest valid checkpoint) or a checkpoint directory")
    p.add_argument("--out", required=True, help="output directory (save_pretrained + tokenizer)")
    args = p.parse_args(argv)
    from rewarm.checkpoints.export import export_checkpoint

    try:
        out = export_checkpoint(Path(args.source), Path(args.out))
    except (ConfigError, ResumeError) as e:
        return report(e)
    print(f"exported: {out}")
    return 0
