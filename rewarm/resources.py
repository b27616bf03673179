"""Files that ship with rewarm: the example configs (``configs/``) and the SLURM templates (``slurm/``).

An installed wheel carries copies under ``rewarm/share/`` (``setup.py`` copies them at build time); a checkout or an
editable install uses the repository's own ``configs/`` and ``slurm/`` next to the package.
``python -m rewarm.resources [configs/demo.yaml]`` prints where they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED = PACKAGE_DIR / "share"
CHECKOUT = PACKAGE_DIR.parent


def resource(relpath: str) -> Path:
    """The shipped file or folder ``relpath`` (``configs/demo.yaml``, ``slurm``, ...): the installed copy, else the
    checkout's. The checkout's path is returned when neither exists, for the caller's "not found" message."""
    installed = INSTALLED / relpath
    return installed if installed.exists() else CHECKOUT / relpath


def main(argv: list[str]) -> int:
    names = argv or ["configs", "slurm"]
    paths = [resource(n) for n in names]
    for name, path in zip(names, paths, strict=True):
        print(path if argv else f"{name:<8} {path}")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
