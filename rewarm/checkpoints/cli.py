"""``rewarm export``: a Hugging Face directory from a run's newest valid checkpoint or a checkpoint directory.
(``rewarm export --averaged``, the checkpoint's EMA, is ``rewarm.averaging.cli``: it adds that flag to this parser.)"""

from __future__ import annotations

import argparse
from pathlib import Path

from rewarm.errors import ConfigError, ResumeError, report


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewarm export", description="Write a Hugging Face directory from a checkpoint.")
    p.add_argument("source", help="run directory (its newest valid checkpoint) or a checkpoint directory")
    p.add_argument("--out", required=True, help="output directory (save_pretrained + tokenizer)")
    return p


def export_main(argv: list[str]) -> int:
    args = export_parser().parse_args(argv)
    return export_weights(Path(args.source), Path(args.out))


def export_weights(source: Path, out: Path) -> int:
    """The checkpoint's model weights to ``out``; the exit code (2: refused, with the reason on stderr)."""
    from rewarm.checkpoints.export import export_checkpoint

    try:
        out = export_checkpoint(source, out)
    except (ConfigError, ResumeError) as e:
        return report(e)
    print(f"exported: {out}")
    return 0
