"""A DataLoader worker that ends while holding tqdm's write lock (the loader shut down while `datasets` drew a
progress bar in the worker's reader thread) must not leave the lock held for the parent and the next workers:
with ``own_tqdm_lock`` (run by every worker at start) the worker's tqdm lock is its own."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest
import tqdm.std as tqdm_std  # a dependency of datasets and transformers: always installed

from rewarm.data.workers import own_tqdm_lock


def _hold_and_die(own: bool) -> None:
    if own:
        own_tqdm_lock()
    tqdm_std.tqdm.get_lock().acquire()  # as tqdm.__new__ does; then the process ends without releasing it
    os._exit(0)


def _fresh_shared_lock() -> None:
    """tqdm's default write lock with a new multiprocessing semaphore (shared with the processes forked later)."""
    if hasattr(tqdm_std.TqdmDefaultWriteLock, "mp_lock"):
        del tqdm_std.TqdmDefaultWriteLock.mp_lock
    tqdm_std.tqdm.set_lock(tqdm_std.TqdmDefaultWriteLock())


@pytest.mark.parametrize("own", [False, True])
def test_a_worker_that_dies_holding_tqdm_lock(own: bool) -> None:
    _fresh_shared_lock()
    shared = tqdm_std.TqdmDefaultWriteLock.mp_lock  # the semaphore under tqdm's lock, shared across the fork
    proc = mp.get_context("fork").Process(target=_hold_and_die, args=(own,))
    proc.start()
    proc.join(30)
    got = shared.acquire(timeout=2)
    if got:
        shared.release()
    _fresh_shared_lock()  # the rest of the session gets a lock no dead process holds
    if own:
        assert got, "the parent's tqdm lock is still held by a dead worker"
    else:  # the hazard itself: tqdm's shared lock, held for good by a process that no longer exists
        assert not got
