"""A/B of the text pipeline across commits: does a change cost or win tokens/s? (issue 21)

Each revision is checked out into a temporary git worktree. Each round runs one trial per revision (the order
reversed every other round, so that a slow spell of the machine hits all of them). A trial is a subprocess of
that revision's own ``benchmarks/data_throughput.py``: it first times the bare tokenizer on the corpus's texts
(``bench_tokenizer``), then that revision's pipeline (``bench_pipeline``) over the same files. Every trial so
carries its own baseline, taken minutes apart at most: the ratio pipeline / tokenizer is what is compared.

    .venv/bin/python benchmarks/data_throughput_ab.py be8a73c 5a2ae0b HEAD --rounds 5     # 10 MB, ~5 min
    .venv/bin/python benchmarks/data_throughput_ab.py          # HEAD against this working tree (uncommitted changes)

Prints a line per trial, then a line per revision: the best pipeline tokens/s and the median ratio, last
``ab_median_ratio_<rev>=<x>`` per revision. The corpus (``--mb``, default 10) is data_throughput's own, cached.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TRIAL = r"""
import json, sys
sys.path[:0] = [{tree!r} + "/benchmarks", {tree!r}]
from pathlib import Path
import data_throughput as dt

def main():
    files = dt.make_corpus(Path({work!r}) / "corpus-{mb:g}mb", {mb!r})
    tok = dt.make_tokenizer(Path({work!r}), {vocab!r})
    texts = dt.read_texts(files)
    seconds, tokens = dt.bench_tokenizer(tok, texts)
    try:  # since data.streams: as many tokens as the tokenizer's count, whole batches
        p_seconds, p_tokens, _ = dt.bench_pipeline(tok, files, {seq_len!r}, total=tokens)
    except TypeError:  # before: until the source ends
        p_seconds, p_tokens, _ = dt.bench_pipeline(tok, files, {seq_len!r})
    print(json.dumps({{"tokenizer": tokens / seconds, "pipeline": p_tokens / p_seconds}}))

if __name__ == "__main__":  # the DataLoader worker may start by spawn/forkserver, which imports this file
    main()
"""


def trial(tree: Path, args: argparse.Namespace, script_dir: Path) -> dict[str, float]:
    script = script_dir / f"trial_{tree.name}.py"
    script.write_text(TRIAL.format(tree=str(tree), work=args.work, mb=args.mb, vocab=args.vocab, seq_len=args.seq_len))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise RuntimeError(f"trial in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_worktree(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), rev], check=True,
                   capture_output=True)
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("revs", nargs="*", help="git revisions to compare, each in a worktree of its own (none: HEAD "
                   "against this working tree)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mb", type=float, default=10, help="MB of jsonl.zst (data_throughput's corpus, cached)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "rewarm-bench"), help="corpus cache")
    p.add_argument("--worktree-of-this-tree", action="store_true",
                   help="add this working tree (uncommitted changes included) as the revision 'tree'")
    args = p.parse_args(argv)
    if not args.revs:
        args.revs, args.worktree_of_this_tree = ["HEAD"], True
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {rev: add_worktree(rev, Path(tmp) / f"rev{i}") for i, rev in enumerate(args.revs)}
        if args.worktree_of_this_tree:
            trees["tree"] = REPO
        try:
            for r in range(args.rounds):
                order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
                for rev, tree in order:
                    t = trial(tree, args, Path(tmp))
                    results.setdefault(rev, []).append(t)
                    print(f"[{r + 1}] {rev:12s} tokenizer {t['tokenizer'] / 1e6:.3f} pipeline "
                          f"{t['pipeline'] / 1e6:.3f} M tok/s, ratio {t['pipeline'] / t['tokenizer']:.3f}",
                          flush=True)
        finally:
            for tree in trees.values():
                if tree != REPO:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                                   capture_output=True)
    for rev, ts in results.items():
        ratio = statistics.median(t["pipeline"] / t["tokenizer"] for t in ts)
        print(f"{rev}: pipeline best {max(t['pipeline'] for t in ts) / 1e6:.3f} M tok/s, median ratio {ratio:.3f}")
    for rev, ts in results.items():
        print(f"ab_median_ratio_{rev}={statistics.median(t['pipeline'] / t['tokenizer'] for t in ts):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
