"""Local multiple-choice tasks built from a corpus's own held-out documents (the demo's, offline).

* ``next_sentence``: prose; the context is a sentence, the choices are the true next sentence and three
  sentences from other documents.
* ``next_line``: code; the context is a few lines, the choices are the true next line and three lines from other
  documents.

Each task is a JSON-lines file and an lm-eval task YAML (``dataset_path: json``) in one directory: list it in
``tasks.include_paths``. lm-eval scores ``acc`` (log-likelihood of each choice) and ``acc_norm`` (per byte)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from pathlib import Path

NUM_CHOICES = 4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sentences(text: str) -> list[str]:
    """Sentences of prose, whitespace collapsed; code-like and very short / long pieces are dropped."""
    flat = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(flat) if 25 <= len(s) <= 160 and not any(c in s for c in "{}=>")]


def code_lines(text: str) -> list[str]:
    """Lines of code with their indentation; blank lines and lines over 100 characters dropped."""
    return [ln.rstrip() for ln in text.splitlines() if ln.strip() and len(ln) <= 100]


def next_unit_items(docs: Iterable[list[str]], n: int, seed: int, context_units: int, min_len: int) -> list[dict]:
    """Up to ``n`` items {context, choices, label}: ``context_units`` consecutive units of one document, its next
    unit among ``NUM_CHOICES`` (the others drawn from other documents). Seeded, so a rebuild is identical."""
    rng = random.Random(seed)
    docs = [d for d in docs if len(d) > context_units]
    pool = [(i, u) for i, d in enumerate(docs) for u in d if len(u.strip()) >= min_len]
    candidates = [(i, j) for i, d in enumerate(docs) for j in range(context_units, len(d))
                  if len(d[j].strip()) >= min_len]
    rng.shuffle(candidates)
    items = []
    for i, j in candidates[:n]:
        true = docs[i][j]
        others = [u for k, u in rng.sample(pool, min(len(pool), 12)) if k != i and u != true][: NUM_CHOICES - 1]
        if len(others) < NUM_CHOICES - 1:
            continue
        choices = [true, *others]
        rng.shuffle(choices)
        items.append({"context": "\n".join(docs[i][j - context_units:j]), "choices": choices,
                      "label": choices.index(true)})
    return items


def write_choice_task(out_dir: Path, name: str, items: list[dict], delimiter: str, description: str) -> Path:
    """``<out_dir>/<name>.jsonl`` and ``<name>.yaml`` (absolute data path: lm-eval reads data_files from the
    working directory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = (out_dir / f"{name}.jsonl").resolve()
    data.write_text("".join(json.dumps(it) + "\n" for it in items))
    yaml = (f"# {description}\n# built by rewarm.tasks.demo_tasks; {len(items)} items\n"
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
            f"test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{{{context}}}}\"\n"
            f"doc_to_choice: \"{{{{choices}}}}\"\ndoc_to_target: label\ntarget_delimiter: {json.dumps(delimiter)}\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1.0\n")
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml)
    return path


def build_next_sentence_task(texts: Iterable[str], out_dir: Path, name: str = "next_sentence", n: int = 200,
                             seed: int = 0) -> Path:
    items = next_unit_items((sentences(t) for t in texts), n, seed, context_units=1, min_len=25)
    return write_choice_task(out_dir, name, items, " ", "prose: the true next sentence among 4")


def build_next_line_task(texts: Iterable[str], out_dir: Path, name: str = "next_line", n: int = 200,
                         seed: int = 0) -> Path:
    items = next_unit_items((code_lines(t) for t in texts), n, seed, context_units=4, min_len=12)
    return write_choice_task(out_dir, name, items, "\n", "code: the true next line among 4")
