"""Build hook: a wheel carries the repository's example configs and SLURM templates as package data.

The metadata is in pyproject.toml. ``configs/`` and ``slurm/`` stay at the top of the repository (commands and
docs name them there); at build time every file under ``configs/`` and every ``slurm/*.sbatch`` / ``slurm/*.sh``
is copied to ``rewarm/share/configs/...`` / ``rewarm/share/slurm/...`` in the wheel, found by globbing at each
build, so files added later ship without a change here. ``rewarm.resources`` finds them there when installed,
and in the repository when run from a checkout or an editable install (which copies nothing).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHARED = {"configs": ("**/*",), "slurm": ("*.sbatch", "*.sh")}
"""Repository folder -> glob patterns of the files shipped from it."""


def shared_files(root: Path = ROOT) -> list[Path]:
    """The shipped files, relative to ``root`` (no hidden files, no caches)."""
    found = {p.relative_to(root) for folder, patterns in SHARED.items() for pattern in patterns
             for p in (root / folder).glob(pattern) if p.is_file()}
    return sorted(p for p in found if not any(part.startswith((".", "__pycache__")) for part in p.parts))


class BuildPyWithShare(build_py):
    """``build_py`` that also copies ``shared_files()`` into ``<build_lib>/rewarm/share/`` (not in editable mode)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        shutil.rmtree(Path(self.build_lib, "rewarm", "share"), ignore_errors=True)  # a reused build dir: no stale files
        for target, source in self._share_mapping():
            self.mkpath(str(Path(target).parent))
            self.copy_file(source, target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *(t for t, _ in self._share_mapping())]

    def _share_mapping(self) -> list[tuple[str, str]]:
        return [(str(Path(self.build_lib, "rewarm", "share", rel)), str(ROOT / rel)) for rel in shared_files()]


setup(cmdclass={"build_py": BuildPyWithShare})
