"""Resume latency: time to the first training step when resuming deep in a 1 M-document stream vs at its start.

The stream: 1 M short documents in ONE jsonl.zst shard (the worst case for a cursor-based resume, whose cost
is bounded by one shard; a Pile shard holds ~7 M documents), generated once under ``--cache``. The deep
state: the real pipeline is run once from the start to ~90 % of the shard and its ``TrainLoader.state_dict()``
is cached (JSON, keyed by the pipeline's fingerprint; regenerated when that changes).

Two measurements, each alternating resumed / fresh (ABBA) in one process:

1. run level (the result): ``rewarm.training.run.run(cfg)`` from its call to the end of its first optimizer step
   (tiny GPT-NeoX, seq 2048 x 8 rows, ``data.num_workers`` 1 as configured by default). Fresh: a new run.
   Resumed: ``resume=auto`` in a copy of a run directory whose step-1 checkpoint is a real checkpoint of
   that run with its data state replaced by the deep one (both halves real; the manifest is rewritten with
   ``rewarm.checkpoints.store.write_manifest``). Covers config check, model + checkpoint loading, Trainer,
   loader start, the stream seek and the first step; the interpreter start and imports (the same for both,
   seconds) are left out, which makes the ratio stricter than a wall-clock of the command.
2. loader level (printed, the strictest): ``build_train_loader`` [+ ``load_state_dict``] + first batch,
   ``data.num_workers=0``: only the part of a start that depends on the stream position.

Target <= 2.

3. elastic (``ratio_elastic_resume=``, printed before the result): the same time to the first step, resuming on 1
   rank a checkpoint written by 2 ranks (``torchrun``, gloo) vs one written by 1 rank, the rows per step kept
   (accumulation 1 -> 2); ``--elastic-strategy deepspeed`` (ZeRO-2) includes the universal-checkpoint conversion.
   Both checkpoints are of the same 3-step run at step 1, copied afresh for every resume. Target <= 1.5.

    .venv/bin/python benchmarks/resume_latency.py [--quick] [--rounds R] [--docs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

SEQ, BATCH = 2048, 8  # Pythia's sequence length; 8 rows per device


def sizes(args: argparse.Namespace) -> dict[str, int]:
    if args.quick:
        return {"docs": 5_000, "seq": 128, "batch": 2, "rounds": 1}
    return {"docs": args.docs, "seq": SEQ, "batch": BATCH, "rounds": args.rounds}


def prepare(cache: Path, s: dict[str, int]) -> tuple[Any, Any, Path]:
    """(data config, tokenizer, corpus path); the corpus is generated once. Model: ``cache/model_d64_l2``."""
    from rewarm.config import load
    from rewarm.model.load import load_tokenizer

    model_dir = C.build_model_dir(cache / "model_d64_l2", 64, 2, 4, 2048)
    shard = cache / f"resume_{s['docs']}" / "train" / "00.jsonl.zst"
    if not shard.is_file():
        t0 = time.perf_counter()
        C.write_jsonl_zst(shard, C.make_texts(s["docs"], seed=5, words_min=4, words_max=16))
        print(f"generated {shard} ({shard.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s",
              flush=True)
    cfg = load(None, C.base_overrides(model_dir, str(shard), cache, s["seq"], s["batch"], 10, "x")
               + ["data.num_workers=0"])
    return cfg.data, load_tokenizer(str(model_dir), None, None), shard


def loader(data: Any, tok: Any, batch: int) -> Any:
    from rewarm.data import build_train_loader

    return build_train_loader(data, tok, micro_batch_size=batch, seed=0, rank=0, world_size=1)


def deep_state(data: Any, tok: Any, s: dict[str, int], path: Path, fraction: float = 0.9) -> dict[str, Any]:
    """The loader's state after the batch that crosses ``fraction`` of the shard's documents (cached)."""
    fresh = loader(data, tok, s["batch"])
    if path.is_file():
        state = json.loads(path.read_text())
        if state.get("fingerprint") == fresh.fingerprint():
            return state
    t0 = time.perf_counter()
    target, state, n = int(fraction * s["docs"]), None, 0
    for b in fresh:
        state, n = b["data_state"], n + 1
        if _records_done(state) >= target:
            break
    assert state is not None
    path.write_text(json.dumps(state))
    print(f"deep state: record {_records_done(state):,} of {s['docs']:,} after {n} batches "
          f"({time.perf_counter() - t0:.1f} s, cached in {path})", flush=True)
    return state


def _records_done(state: dict[str, Any]) -> int:
    """The highest record cursor of any sub-stream in the state (the position in the shard)."""
    streams = state["streams"].values() if isinstance(state.get("streams"), dict) else (
        st for r in state["ranks"].values() for st in r["streams"])  # version 1: per-rank streams
    return max((int(c.get("record", 0)) for st in streams for c in st["subs"].values()), default=0)


def _resumed_loader(data: Any, tok: Any, batch: int, state: dict[str, Any]) -> Any:
    ld = loader(data, tok, batch)
    ld.load_state_dict(state)
    return ld


def first_batch(data: Any, tok: Any, batch: int, state: dict[str, Any] | None) -> float:
    """Seconds from building the loader (and loading ``state``) to holding its first batch."""
    t0 = time.perf_counter()
    ld = loader(data, tok, batch)
    if state is not None:
        ld.load_state_dict(state)
    b = next(iter(ld))
    assert b["input_ids"].shape == (batch, data.seq_len)
    return time.perf_counter() - t0


def run_overrides(cache: Path, shard: Path, out: Path, name: str, s: dict[str, int], resume: str) -> list[str]:
    """A 3-step run on the shard (periodic checkpoint every step, kept), same data layout as the state."""
    return C.base_overrides(cache / "model_d64_l2", str(shard), out, s["seq"], s["batch"], 3, name) + [
        "data.num_workers=1", "checkpoint.every_steps=1", "checkpoint.keep_last=5", f"resume.mode={resume}"]


class FirstStep:
    """Probe callback: the time of the first ``on_train_batch_end``, then stop the run there."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.input_ids: Any = None
        self.start_step = 0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.input_ids is None:
            self.input_ids = batch["input_ids"].cpu()  # the first micro-batch (checked by ``expect``)
        if self.at is None and trainer.global_step > self.start_step:  # an optimizer step ended (accumulation)
            self.at = time.perf_counter()
            trainer.should_stop = True


def time_to_first_step(overrides: list[str], expect: Any = None) -> float:
    """Seconds from calling ``rewarm.training.run.run`` to the end of its first step (``build_trainer`` is wrapped to
    add the probe; nothing else changes). ``expect``: the input_ids the first step must have trained on."""
    import lightning as L

    import rewarm.training.run as T
    from rewarm.config import load

    probe = type("FirstStepCallback", (FirstStep, L.Callback), {})()
    original = T.build_trainer
    T.build_trainer = lambda cfg, plan, loggers, callbacks, **kw: original(cfg, plan, loggers, [*callbacks, probe], **kw)
    try:
        t0 = time.perf_counter()
        T.run(load(None, overrides))
    finally:
        T.build_trainer = original
    if probe.at is None:
        raise SystemExit("the run trained no step")
    if expect is not None and not (probe.input_ids.shape == expect.shape and bool((probe.input_ids == expect).all())):
        raise SystemExit("the resumed run did not continue from the deep data state")
    return probe.at - t0


def deep_run_dir(cache: Path, shard: Path, out: Path, s: dict[str, int], state: dict[str, Any]) -> Path:
    """A run directory whose step-1 checkpoint carries the deep data state (the other checkpoints removed)."""
    import torch

    from rewarm.checkpoints.store import MANIFEST, STATE, write_manifest

    time_to_first_step(run_overrides(cache, shard, out, "seed", s, "never"))  # stops after step 1: checkpoint 1
    run_dir = out / "seed"
    ckpts = sorted((run_dir / "checkpoints").glob("step*"))
    for extra in ckpts[1:]:
        shutil.rmtree(extra)
    ckpt = ckpts[0]
    blob = torch.load(ckpt / STATE, weights_only=False)
    blob["rewarm"]["data_state"] = state
    blob["loops"]["fit_loop"]["state_dict"]["combined_loader"] = [state]
    torch.save(blob, ckpt / STATE)
    info = {k: v for k, v in json.loads((ckpt / MANIFEST).read_text()).items() if k not in ("files", "complete")}
    write_manifest(ckpt, info)
    return run_dir


def run_level(cache: Path, shard: Path, s: dict[str, int], state: dict[str, Any], expect: Any) -> float:
    """Median over rounds of resumed / fresh time to the first step, ``rewarm.training.run.run`` level. ``expect``:
    the first batch after the deep state (checked: the resumed run really continues there)."""
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench_resume_") as tmp:
        out = Path(tmp)
        pristine = deep_run_dir(cache, shard, out, s, state)

        def resumed(r: int) -> float:
            shutil.copytree(pristine, out / f"deep{r}")
            return time_to_first_step(run_overrides(cache, shard, out, f"deep{r}", s, "auto"), expect)

        for r in range(s["rounds"]):
            a, b = C.abba(r, lambda: resumed(r),  # noqa: B023
                          lambda: time_to_first_step(run_overrides(cache, shard, out, f"fresh{r}", s, "never")))  # noqa: B023
            ratios.append(a / b)
            print(f"run level, round {r}: resumed {a * 1e3:.0f} ms, fresh {b * 1e3:.0f} ms, ratio {a / b:.3f}",
                  flush=True)
    return C.median(ratios)


def loader_level(data: Any, tok: Any, s: dict[str, int], state: dict[str, Any]) -> float:
    """Median over rounds of resumed / fresh time to the first batch, loader level."""
    first_batch(data, tok, s["batch"], None)  # warm-up: file cache, tokenizer threads
    ratios = []
    for r in range(s["rounds"]):
        a, b = C.abba(r, lambda: first_batch(data, tok, s["batch"], state),
                      lambda: first_batch(data, tok, s["batch"], None))
        ratios.append(a / b)
        print(f"loader level, round {r}: resumed {a * 1e3:.0f} ms, fresh {b * 1e3:.0f} ms, ratio {a / b:.3f}",
              flush=True)
    return C.median(ratios)


def elastic_seed(overrides: list[str], out: Path, name: str, ranks: int) -> Path:
    """A finished 3-step run on ``ranks`` CPU ranks (``torchrun``), keeping only its step-1 checkpoint."""
    import os
    import subprocess

    ov = [*overrides, f"run.name={name}", f"trainer.devices={ranks}", "resume.mode=never"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(C.REPO), "WANDB_MODE": "disabled"}
    empty = out / "empty.yaml"
    empty.write_text("{}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
           "-m", "rewarm", "train", str(empty), *ov]
    subprocess.run(cmd, check=True, env=env, cwd=C.REPO, capture_output=True)
    run_dir = out / name
    for extra in sorted((run_dir / "checkpoints").glob("step*"))[1:]:
        shutil.rmtree(extra)
    (run_dir / "summary.json").unlink(missing_ok=True)
    return run_dir


def elastic_level(cache: Path, shard: Path, s: dict[str, int], strategy: str) -> float:
    """Median over rounds of (resume on 1 rank of a 2-rank checkpoint) / (of a 1-rank checkpoint)."""
    with tempfile.TemporaryDirectory(prefix="bench_elastic_") as tmp:
        out = Path(tmp)
        ov = [*run_overrides(cache, shard, out, "x", s, "never"), f"trainer.global_batch_size={2 * s['batch']}",
              "trainer.accelerator=cpu", "data.num_workers=0"]
        ov += ["trainer.strategy=deepspeed", "trainer.deepspeed.stage=2"] if strategy == "deepspeed" else [
            "trainer.strategy=ddp"]
        seeds = {n: elastic_seed(ov, out, f"seed{n}", n) for n in (2, 1)}

        def resumed(ranks: int, r: int) -> float:
            name = f"from{ranks}_{r}"
            shutil.copytree(seeds[ranks], out / name)
            return time_to_first_step([*ov, f"run.name={name}", "trainer.devices=1", "resume.mode=auto"])

        ratios = []
        for r in range(s["rounds"]):
            a, b = C.abba(r, lambda: resumed(2, r), lambda: resumed(1, r))  # noqa: B023
            ratios.append(a / b)
            print(f"elastic, round {r}: 2 ranks -> 1 {a * 1e3:.0f} ms, 1 rank -> 1 {b * 1e3:.0f} ms, ratio "
                  f"{a / b:.3f}", flush=True)
    return C.median(ratios)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p)
    p.add_argument("--rounds", type=int, default=4, help="resumed/fresh pairs, alternated (each level)")
    p.add_argument("--docs", type=int, default=1_000_000, help="documents in the stream (one shard)")
    p.add_argument("--elastic-strategy", choices=("ddp", "deepspeed"), default="ddp",
                   help="strategy of the elastic measurement (deepspeed: ZeRO-2, with the universal conversion)")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    C.quiet_logs(lightning=True)
    s = sizes(args)
    data, tok, shard = prepare(args.cache, s)
    state = deep_state(data, tok, s, shard.parent.parent / f"state_s{s['seq']}_b{s['batch']}.json")
    C.print_machine()
    print(f"sizes: {s}; resuming at record {_records_done(state):,}", flush=True)
    loader = loader_level(data, tok, s, state)
    print(f"loader_level_ratio={loader:.4f}", flush=True)
    expect = next(iter(_resumed_loader(data, tok, s["batch"], state)))["input_ids"]
    ratio = run_level(args.cache, shard, s, state, expect)
    elastic = elastic_level(args.cache, shard, s, args.elastic_strategy)
    print(f"target: ratio_elastic_resume <= 1.5 ({'met' if elastic <= 1.5 else 'MISSED'}; {args.elastic_strategy})")
    print(f"ratio_elastic_resume={elastic:.4f}", flush=True)
    C.print_result("resume_latency", ratio, f"<= 2 ({'met' if ratio <= 2 else 'MISSED'}); run level "
                   f"(loader level: {loader:.2f})")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
