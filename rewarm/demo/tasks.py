"""The demo's two downstream tasks, built from the held-out documents of its own corpora (offline, local):

* ``next_sentence`` (upstream, prose of the Python docs, ``pile/val.jsonl.zst``): the true next sentence among 4
  (another sentence and two lines of code);
* ``next_line`` (downstream, Python source, ``slimpajama/validation``): the true next line among 4 (another
  line and two sentences of prose). Scored by ``acc_norm``.

They are lm-eval tasks (YAML + JSON lines, ``rewarm.tasks.demo_tasks``) in ``<cache>/tasks``, the directory the
demo's ``tasks.include_paths`` names. Rebuilt on every call (a second or less): the items are a seeded function
of the corpora."""

from __future__ import annotations

import glob
from pathlib import Path

from rewarm.demo.corpus import CorpusPaths, read_jsonl_zst

TASKS = ("next_sentence", "next_line")
VERSION = 2  # part of the study's stamp: finished runs evaluated on other items are run again


def _texts(pattern: str) -> list[str]:
    return [rec["text"] for path in sorted(glob.glob(pattern)) for rec in read_jsonl_zst(Path(path))]


def build_demo_tasks(corpus: CorpusPaths, out_dir: Path, items: int, seed: int = 0) -> Path:
    """Write both tasks (``items`` each, at most) into ``out_dir``; returns it."""
    from rewarm.tasks.demo_tasks import build_next_line_task, build_next_sentence_task

    prose, code = _texts(corpus.pile_val), _texts(corpus.slimpajama_val)
    build_next_sentence_task(prose, code, out_dir, TASKS[0], n=items, seed=seed)
    build_next_line_task(code, prose, out_dir, TASKS[1], n=items, seed=seed)
    return out_dir
