"""A process whose loader workers are still alive at exit ends promptly (workers ignore SIGTERM, so
multiprocessing's own exit handler alone would wait for them forever)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import WORDS_DOWN, build_tokenizer, make_docs, write_jsonl_zst
    from rewarm.config import load
    from rewarm.data import build_train_loader

    root = Path({root!r})
    docs = make_docs(WORDS_DOWN, 60, 0, "RedPajamaGithub", "redpajama_set_name")
    for i in range(2):
        write_jsonl_zst(root / f"d{{i}}.jsonl.zst", docs[i * 30:(i + 1) * 30])
    tok = build_tokenizer([d["text"] for d in docs], root / "tok")
    cfg = load(None, ["trainer.max_steps=1", "data.seq_len=16", "data.num_workers=2",
                      f"data.train.a.paths=[{{root}}/*.jsonl.zst]"])
    it = iter(build_train_loader(cfg.data, tok, micro_batch_size=2, seed=0, rank=0, world_size=1))
    next(it), next(it)
    keep = [it]
    keep.append(keep)  # a reference cycle: the iteration is still open when the interpreter exits
    print("ITERATED", flush=True)
""")


def test_exit_with_live_workers_does_not_hang(tmp_path: Path) -> None:
    tests = str(Path(__file__).parent.parent)
    code = SCRIPT.format(tests=tests, root=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ITERATED" in proc.stdout
