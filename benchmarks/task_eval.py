"""Task evaluation cost: rewarm's in-loop task evaluation vs ``lm_eval.simple_evaluate`` on the exported model.

rewarm: ``TaskEvaluator.evaluate`` (what the in-loop callback calls at step 0 / every N / the end) on the model in
memory, left in train mode as the loop leaves it: eval mode, RNG saved / seeded / restored, lm-eval's ``evaluate``
on a ``RankShardedLM``, results converted to ``task/<task>/<metric>``.
lm-eval: ``lm_eval.simple_evaluate(model=HFLM(pretrained=<the exported HF directory, loaded>), tasks=<the same
loaded Task objects>, ...)`` -- what a user runs after training (litgpt's way), minus the data loading that both
sides do once. Same tasks (a local 4-way multiple-choice task and a loglikelihood_rolling one), limit, batch
size and bootstrap iterations; the values are checked to be equal.

The sides alternate (their order rotates each round) for R rounds; the ratio is median(rewarm) / median(lm-eval) wall seconds. Target <= 1.10
(no overhead of our own). ``simple_evaluate`` also seeds and collects an environment report (torch's
collect_env, git) on every call; for context, each round also times lm-eval's ``evaluator.evaluate`` alone on
the same LM, and the ratio to it is printed before the last line, ``ratio_vs_lm_eval=<x>``.

    .venv/bin/python benchmarks/task_eval.py [--quick] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import _common as C


def sizes(args: argparse.Namespace) -> dict[str, int]:
    if args.quick:
        return {"d": 64, "layers": 2, "heads": 4, "mc": 12, "ppl": 4, "batch": 4, "rounds": 1}
    return {"d": 256, "layers": 4, "heads": 4, "mc": 200, "ppl": 40, "batch": 16, "rounds": args.rounds}


def write_tasks(out: Path, s: dict[str, int]) -> Path:
    """``bench_mc`` (true continuation among 4) and ``bench_ppl`` (rolling log-likelihood) as local YAMLs."""
    from rewarm.tasks.demo_tasks import write_choice_task

    texts = C.make_texts(s["mc"] + s["ppl"], seed=11, words_min=30, words_max=60)
    rng = random.Random(0)
    items = []
    for i, t in enumerate(texts[: s["mc"]]):
        w = t.split()
        choices = [" ".join(w[12:20])] + [" ".join(texts[(i + k) % s["mc"]].split()[12:20]) for k in (1, 2, 3)]
        true = choices[0]
        rng.shuffle(choices)
        items.append({"context": " ".join(w[:12]), "choices": choices, "label": choices.index(true)})
    write_choice_task(out, "bench_mc", items, " ", "benchmark: true continuation among 4")
    data = (out / "bench_ppl.jsonl").resolve()
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[s["mc"]:]))
    (out / "bench_ppl.yaml").write_text(
        f"task: bench_ppl\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\nmetadata:\n  version: 1.0\n")
    return out


def prepare(cache: Path, s: dict[str, int]) -> tuple[Any, Any, Any, Any]:
    """(evaluator, model in train mode, tokenizer, exported copy loaded as lm-eval would load it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from rewarm.model.load import load_model, load_tokenizer
    from rewarm.tasks.build import build_task_evaluator
    from rewarm.tasks.config import TasksConfig

    model_dir = C.build_model_dir(cache / f"model_d{s['d']}_l{s['layers']}", s["d"], s["layers"], s["heads"], 2048)
    tasks = write_tasks(cache / f"tasks_{s['mc']}_{s['ppl']}", s)
    evaluator = build_task_evaluator(TasksConfig(names=["bench_mc", "bench_ppl"], include_paths=[str(tasks)],
                                                 batch_size=s["batch"], bootstrap_iters=100))
    tok = load_tokenizer(str(model_dir), None, None)
    model = load_model(str(model_dir), None, attn_implementation="sdpa")  # train mode, as in the loop
    export = cache / "task_eval_export"
    model.save_pretrained(export)
    tok.save_pretrained(export)
    exported = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
    return evaluator, model, tok, exported


def run_rewarm(evaluator: Any, model: Any, tok: Any) -> dict:
    return evaluator.evaluate(model, tok).values


def run_lm_eval(evaluator: Any, exported: Any, tok: Any, lm: list[Any]) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from rewarm.tasks.results import task_values

    if not lm:
        lm.append(HFLM(pretrained=exported, tokenizer=tok, batch_size=evaluator.settings.batch_size))
    out = lm_eval.simple_evaluate(model=lm[0], tasks=list(evaluator.suite.tasks.values()),
                                  task_manager=evaluator.suite.manager, limit=evaluator.settings.limit, bootstrap_iters=evaluator.settings.bootstrap_iters,
                                  log_samples=False)
    return task_values(out)


def run_lm_eval_core(evaluator: Any, exported: Any, tok: Any, lm: list[Any]) -> dict:
    """Context only: lm-eval's ``evaluator.evaluate`` alone (no seeding, no environment / git report)."""
    from lm_eval.evaluator import evaluate

    from rewarm.tasks.results import task_values

    out = evaluate(lm=lm[0], task_dict=evaluator.suite.task_dict, limit=evaluator.settings.limit,
                   bootstrap_iters=evaluator.settings.bootstrap_iters, log_samples=False)
    return task_values(out)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p)
    p.add_argument("--rounds", type=int, default=5, help="alternated rounds (each side evaluates once per round)")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    C.quiet_logs()
    import logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    s = sizes(args)
    evaluator, model, tok, exported = prepare(args.cache, s)
    C.print_machine()
    print(f"sizes: {s}; tasks {list(evaluator.suite.tasks)}", flush=True)
    lm: list[Any] = []
    ours, theirs = run_rewarm(evaluator, model, tok), run_lm_eval(evaluator, exported, tok, lm)  # warm-up
    if ours != theirs:
        raise SystemExit(f"rewarm and lm-eval disagree:\n{ours}\n{theirs}")
    sides = [lambda: run_rewarm(evaluator, model, tok), lambda: run_lm_eval(evaluator, exported, tok, lm),
             lambda: run_lm_eval_core(evaluator, exported, tok, lm)]
    a_times, b_times, c_times = [], [], []
    for r in range(s["rounds"]):
        t = {}
        for k in [(r + j) % 3 for j in range(3)]:  # the order rotates: a drift of the machine falls on all three
            t[k] = C.timed(sides[k])
        a, b, c = t[0], t[1], t[2]
        a_times.append(a)
        b_times.append(b)
        c_times.append(c)
        print(f"round {r}: rewarm {a:.3f} s, lm_eval.simple_evaluate {b:.3f} s, lm_eval.evaluator.evaluate {c:.3f} s",
              flush=True)
    assert model.training, "the model must be back in train mode"
    ratio = C.median(a_times) / C.median(b_times)
    print(f"context: rewarm / lm_eval.evaluator.evaluate alone (no seeding, no environment report) = "
          f"{C.median(a_times) / C.median(c_times):.4f}", flush=True)
    C.print_result("ratio_vs_lm_eval", ratio, f"<= 1.10 ({'met' if ratio <= 1.10 else 'MISSED'}); median wall seconds")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
