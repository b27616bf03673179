"""A full disk, for real: the run directory on a small tmpfs (mounted as root; unmounted by a finalizer), with a
ballast file that the test removes to "free space". A checkpoint save that runs out of space (refused before
writing when the last checkpoint's size does not fit, or failing in the middle of the write) leaves the
previous checkpoint valid and no partial one, stops the run with an error naming the directory and the bytes
needed against the bytes free (exit 1); after freeing space resume=auto finishes with the metrics of the
uninterrupted run. metrics.csv rows are whole or absent."""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rewarm.checkpoints.store import find_latest_valid, invalid_reason
from rewarm.cli import main
from rewarm.errors import DiskFullError
from rewarm.training.metrics import CsvRunLogger, read_metrics
from tests.faults.conftest import fault_overrides

KIB = 1024


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``mount(size_bytes)``: a fresh tmpfs of that size under tmp_path."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        d = tmp_path / f"disk{len(mounted)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], check=True)
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], check=False)


def ballast(disk: Path, leave_free: int) -> Path:
    """A file that takes all but ``leave_free`` bytes of the disk."""
    path = disk / "ballast"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    path.write_bytes(b"\0" * max(0, free - leave_free))
    return path


def comparable(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in read_metrics(path)]


def assert_whole_rows(path: Path) -> None:
    text = path.read_bytes().decode()
    assert text.endswith("\r\n"), repr(text[-80:])
    rows = list(csv.reader(text.splitlines()))
    assert all(len(r) == len(rows[0]) for r in rows), "a torn row"


def checkpoint_size(finished_run: Path) -> int:
    d = finished_run / "checkpoints" / "step00000002"
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", ["second checkpoint refused before writing", "first checkpoint fails mid-write"])
def test_a_full_disk_stops_the_run_and_resume_auto_finishes_it(case, small_disk, finished_run, tiny_world, empty_yaml,
                                                               tmp_path, capsys):
    size = checkpoint_size(finished_run)
    disk = small_disk(4 * size)
    weight = ballast(disk, size * 3 // 2 if case.startswith("second") else size // 2)
    overrides = fault_overrides(tiny_world, disk, checkpoint__keep_last=1, data__cache_dir=str(tmp_path / "cache"))
    run_dir, ckpts = disk / "t", disk / "t" / "checkpoints"

    assert main(["train", str(empty_yaml), *overrides]) == 1
    err = capsys.readouterr().err
    needs = "needs at least" if case.startswith("first") else "needs"
    assert f"error: disk full: a checkpoint in {ckpts} {needs} " in err and "bytes are free there" in err, err
    assert "resume=auto" in err and "Traceback" not in err
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".")], "a partial checkpoint was left"
    newest = find_latest_valid(ckpts)
    if case.startswith("second"):
        assert newest == ckpts / "step00000002" and invalid_reason(newest, deep=True) is None
    else:
        assert newest is None
    assert_whole_rows(run_dir / "metrics.csv")

    weight.unlink()  # free space
    assert main(["train", str(empty_yaml), *overrides]) == 0
    assert comparable(run_dir / "metrics.csv") == comparable(finished_run / "metrics.csv")


def test_metrics_rows_are_whole_or_absent(small_disk):
    disk = small_disk(64 * KIB)
    weight = ballast(disk, 6 * KIB)
    columns = [f"c{i}" for i in range(20)]
    logger = CsvRunLogger(disk / "metrics.csv", columns)
    logger.start(None)
    written = 0
    with pytest.raises(DiskFullError, match=rf"disk full: a row of metrics.csv in {disk} needs \d+ bytes"):
        for step in range(10_000):
            logger.log_metrics({c: 1.0 / (step + 3) for c in columns}, step=step)
            written += 1
    assert_whole_rows(disk / "metrics.csv")
    assert len(read_metrics(disk / "metrics.csv")) == written > 0
    weight.unlink()
    logger.log_metrics({c: 0.5 for c in columns}, step=written)  # after freeing space it goes on
    logger.finalize("success")
    assert [int(r["step"]) for r in read_metrics(disk / "metrics.csv")] == list(range(written + 1))


@pytest.mark.slow
def test_two_ddp_ranks_stop_alike_on_a_full_disk(small_disk, finished_run, tiny_world, empty_yaml, tmp_path):
    """Rank 0 finds the disk full; rank 1 must not wait for it in a barrier: both stop with the error."""
    from tests.faults.test_strategy_resume import torchrun_train
    from tests.scale.helpers import tail

    size = checkpoint_size(finished_run)
    disk = small_disk(6 * size)
    ballast(disk, size // 2)
    log = tmp_path / "train.log"
    overrides = fault_overrides(tiny_world, disk, checkpoint__keep_last=1, data__cache_dir=str(tmp_path / "cache"),
                                trainer__accelerator="cpu", trainer__devices=2, trainer__strategy="ddp",
                                trainer__global_batch_size=4)
    assert torchrun_train(empty_yaml, overrides, log) != 0
    text = log.read_text()
    assert text.count(f"error: disk full: a checkpoint in {disk / 't' / 'checkpoints'} needs at least") == 2, tail(log)
    assert not list((disk / "t" / "checkpoints").iterdir()), tail(log)
