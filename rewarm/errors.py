"""Errors shown to users. Kept import-free so the CLI can raise them without heavy imports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class ConfigError(ValueError):
    """An invalid configuration value. ``key`` is the dotted key, e.g. ``schedule.warmup_steps``."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


@contextlib.contextmanager
def key_prefix(prefix: str) -> Iterator[None]:
    """Re-raise a ConfigError raised by a sub-section with its key prefixed by ``prefix``."""
    try:
        yield
    except ConfigError as e:
        key = f"{prefix}.{e.key}" if e.key else prefix
        raise ConfigError(key, e.message) from None


class DataError(RuntimeError):
    """A data record or file that cannot be used (names file and line)."""


class ResumeError(RuntimeError):
    """A checkpoint that cannot be resumed from, with the reason."""


class NonFiniteError(RuntimeError):
    """A training step with a non-finite loss or gradient norm (``trainer.on_nonfinite``), or too many skipped."""


class DiskFullError(RuntimeError):
    """A write into the run directory that ran out of space (names the directory, bytes needed and free)."""


EXIT_CONFIG = 2  # a refused config or argument: nothing ran
EXIT_FAULT = 1  # the run stopped on a fault (non-finite step, full disk): fix the cause, then resume=auto


def report(e: Exception, code: int = EXIT_CONFIG) -> int:
    """Print ``error: <e>`` to stderr and return the exit code for it."""
    import sys

    print(f"error: {e}", file=sys.stderr)
    return code
