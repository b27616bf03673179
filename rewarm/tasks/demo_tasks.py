"""Local multiple-choice tasks built from a corpus's own held-out documents (the demo's, offline).

* ``next_sentence``: prose; the context is a sentence, the choices are the true next sentence, a sentence of
  another document and two lines of code (the other corpus).
* ``next_line``: code; the context is four lines, the choices are the true next line, a line of another file and
  two sentences of prose.

Distractors from the other corpus make the tasks move with forgetting and adaptation even for a tiny model
(with same-corpus distractors only, a 1.4 M-parameter model stays at chance). Each task is a JSON-lines file
and an lm-eval task YAML (``dataset_path: json``) in one directory: list it in ``tasks.include_paths``. The
demo tasks score ``acc_norm`` (log-likelihood per character of each choice: raw ``acc`` mostly rewards the
shortest choice); ``write_choice_task`` takes the metrics."""

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


def next_unit_items(docs: Iterable[list[str]], n: int, seed: int, context_units: int, min_len: int,
                    foreign: Iterable[list[str]] = (), num_foreign: int = 0) -> list[dict]:
    """Up to ``n`` items {context, choices, label}: ``context_units`` consecutive units of one document, its next
    unit among ``NUM_CHOICES``: ``num_foreign`` distractors from ``foreign`` documents, the rest from other
    documents. Seeded, so a rebuild is identical."""
    rng = random.Random(seed)
    docs = [d for d in docs if len(d) > context_units]
    pool = [(i, u) for i, d in enumerate(docs) for u in d if len(u.strip()) >= min_len]
    foreign_pool = [u for d in foreign for u in d if len(u.strip()) >= min_len]
    candidates = [(i, j) for i, d in enumerate(docs) for j in range(context_units, len(d))
                  if len(d[j].strip()) >= min_len]
    rng.shuffle(candidates)
    items = []
    for i, j in candidates[:n]:
        true = docs[i][j]
        others = [u for k, u in rng.sample(pool, min(len(pool), 12)) if k != i and u != true]
        others = others[: NUM_CHOICES - 1 - num_foreign] + rng.sample(foreign_pool, min(num_foreign, len(foreign_pool)))
        if len(others) < NUM_CHOICES - 1:
            continue
        choices = [true, *others]
        rng.shuffle(choices)
        items.append({"context": "\n".join(docs[i][j - context_units:j]), "choices": choices,
                      "label": choices.index(true)})
    return items


def write_choice_task(out_dir: Path, name: str, items: list[dict], delimiter: str, description: str,
                      metrics: tuple[str, ...] = ("acc", "acc_norm")) -> Path:
    """``<out_dir>/<name>.jsonl`` and ``<name>.yaml`` (absolute data path: lm-eval reads data_files from the
    working directory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = (out_dir / f"{name}.jsonl").resolve()
    data.write_text("".join(json.dumps(it) + "\n" for it in items))
    yaml = (f"# {description}\n# built by rewarm.tasks.demo_tasks; {len(items)} items\n"
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
            f"test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{{{context}}}}\"\n"
            f"doc_to_choice: \"{{{{choices}}}}\"\ndoc_to_target: label\ntarget_delimiter: {json.dumps(delimiter)}\n"
            "metric_list:\n" + "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n"
                                       for m in metrics) + "metadata:\n  version: 1.0\n")
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml)
    return path


def build_next_sentence_task(prose: Iterable[str], code: Iterable[str], out_dir: Path, name: str = "next_sentence",
                             n: int = 200, seed: int = 0) -> Path:
    items = next_unit_items((sentences(t) for t in prose), n, seed, context_units=1, min_len=25,
                            foreign=(code_lines(t) for t in code), num_foreign=2)
    return write_choice_task(out_dir, name, items, " ", "prose: the true next sentence among 4 (1 other sentence, "
                             "2 lines of code)", metrics=("acc_norm",))


def build_next_line_task(code: Iterable[str], prose: Iterable[str], out_dir: Path, name: str = "next_line",
                         n: int = 200, seed: int = 0) -> Path:
    items = next_unit_items((code_lines(t) for t in code), n, seed, context_units=4, min_len=12,
                            foreign=(sentences(t) for t in prose), num_foreign=2)
    return write_choice_task(out_dir, name, items, "\n", "code: the true next line among 4 (1 other line, 2 "
                             "sentences of prose)", metrics=("acc_norm",))
