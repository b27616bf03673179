"""metrics.csv: one row per logged optimizer step, fixed columns, continued (never duplicated) on resume.
Each row is appended by one write, whole or not at all (a full disk leaves no torn line)."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

LEADING = ["step", "tokens"]


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision, round-trips exactly
    return str(value)


class CsvRunLogger(Logger):
    """Writes ``<run_dir>/metrics.csv``. Columns are fixed when the file is created (the caller passes every
    key it will log); on resume from step ``s`` rows with step >= s are dropped first, so no step is held twice.
    """

    def __init__(self, path: str | Path, columns: list[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.columns = LEADING + [c for c in columns if c not in LEADING]
        self._file: Any = None
        self._warned: set[str] = set()

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return "0"

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        return self

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def start(self, resume_step: int | None) -> None:
        """Open for appending. ``resume_step=None``: a fresh run (any old file is replaced)."""
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                text = f.read()
            text = text[: text.rfind("\n") + 1]  # a last row cut short by a kill is not a row
            reader = csv.DictReader(io.StringIO(text, newline=""))
            rows = [r for r in reader if int(r["step"]) < resume_step]
            header = list(reader.fieldnames or [])
            self.columns = header + [c for c in self.columns if c not in header]
        else:
            rows = []
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)
        self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND)  # kept open for the run

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._file is None:
            return
        from rewarm.faults.disk import append_whole

        unknown = set(metrics) - set(self.columns) - self._warned
        if unknown:
            log.warning("metrics.csv has no column for %s (not written to the CSV)", sorted(unknown))
            self._warned |= unknown
        row = {c: _fmt(metrics.get(c)) for c in self.columns}
        row["step"] = str(step if step is not None else metrics["step"])
        buf = io.StringIO(newline="")
        csv.DictWriter(buf, self.columns).writerow(row)
        append_whole(self._file, buf.getvalue().encode(), self.path)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._file is not None:
            os.fsync(self._file)
            os.close(self._file)
            self._file = None
