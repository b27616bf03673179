"""``rewarm average`` (checkpoints of one run averaged into a Hugging Face directory) and ``rewarm export``, whose
``--averaged`` exports the EMA a checkpoint holds (``rewarm.averaging.checkpoints``); without it, the checkpoint's
own weights (``rewarm.checkpoints.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rewarm.errors import ConfigError, ResumeError, report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewarm average",
        description="Average checkpoints of one run (LAWA) into a Hugging Face directory (save_pretrained + "
        "tokenizer). Sources are taken oldest step first; --weights go with them in that order.")
    p.add_argument("sources", nargs="+", type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a run directory (all its checkpoints) or checkpoint directories")
    p.add_argument("--out", required=True, type=Path, help="output directory (save_pretrained + tokenizer)")
    p.add_argument("--last", type=int, default=None, metavar="K", help="average only the newest K checkpoints")
    p.add_argument("--weights", default=None, metavar="W1,W2,...",
                   help="one weight per checkpoint, oldest first (normalised to sum 1; default: equal)")
    return p


def average_main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from rewarm.averaging.checkpoints import average_checkpoints, parse_weights
    from rewarm.logs import setup_logging

    setup_logging("INFO")
    try:
        weights = parse_weights(args.weights) if args.weights is not None else None
        sel = average_checkpoints(args.sources, args.out, last=args.last, weights=weights)
    except (ConfigError, ResumeError) as e:
        return report(e)
    for ckpt, w in zip(sel.checkpoints, sel.weights, strict=True):
        print(f"averaged: {ckpt} (weight {w:.6g})")
    print(f"exported: {args.out}")
    return 0


def export_main(argv: list[str]) -> int:
    from rewarm.checkpoints.cli import export_parser, export_weights

    p = export_parser()
    p.add_argument("--averaged", action="store_true",
                   help="export the averaged weights (the EMA, averaging.*) the checkpoint holds, not its own")
    args = p.parse_args(argv)
    if not args.averaged:
        return export_weights(Path(args.source), Path(args.out))
    from rewarm.averaging.checkpoints import export_averaged

    try:
        out = export_averaged(Path(args.source), Path(args.out))
    except (ConfigError, ResumeError) as e:
        return report(e)
    print(f"exported (averaged): {out}")
    return 0
