"""Local lm-eval tasks over the tiny world's documents (no hub): a multiple-choice task written by
``rewarm.tasks.demo_tasks.write_choice_task``, a loglikelihood_rolling (perplexity) task and a group of both."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rewarm.tasks.demo_tasks import write_choice_task
from tests.conftest import WORDS_DOWN, WORDS_UP, make_docs

MC, PPL, GROUP = "tiny_mc", "tiny_ppl", "tiny_suite"


def choice_items(n: int, seed: int) -> list[dict]:
    docs = make_docs(WORDS_UP, n, seed, "x", "k")
    rng = random.Random(seed)
    items = []
    for i, d in enumerate(docs):
        words = d["text"].split()
        true = " ".join(words[8:14])
        others = [" ".join(docs[(i + k) % n]["text"].split()[8:14]) for k in (1, 2, 3)]
        choices = [true, *others]
        rng.shuffle(choices)
        items.append({"context": " ".join(words[:8]), "choices": choices, "label": choices.index(true)})
    return items


def write_ppl_task(out_dir: Path, name: str) -> Path:
    data = (out_dir / f"{name}.jsonl").resolve()
    docs = make_docs(WORDS_DOWN, 10, 5, "x", "k")
    data.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in docs))
    path = out_dir / f"{name}.yaml"
    path.write_text(f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
                    "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: \"\"\n"
                    "doc_to_target: \"{{text}}\"\nmetric_list:\n  - metric: word_perplexity\n"
                    "  - metric: byte_perplexity\n  - metric: bits_per_byte\nmetadata:\n  version: 2.0\n")
    return path


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tasks")
    write_choice_task(out, MC, choice_items(24, 3), " ", "tiny words: the true continuation among 4")
    write_ppl_task(out, PPL)
    (out / f"{GROUP}.yaml").write_text(f"group: {GROUP}\ntask: [{MC}, {PPL}]\naggregate_metric_list:\n"
                                       "  - metric: acc\n    weight_by_size: true\nmetadata:\n  version: 3.0\n")
    return out


def task_overrides(task_dir: Path, names: str, **extra: object) -> list[str]:
    base: dict[str, object] = {"tasks.names": f"[{names}]", "tasks.include_paths": f"[{task_dir}]",
                               "tasks.batch_size": 4, "tasks.bootstrap_iters": 50}
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]
