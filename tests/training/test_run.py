"""`rewarm train` through the CLI on a tiny GPT-NeoX: the run directory, and perplexity exactly as defined."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import zstandard

from rewarm.cli import main
from rewarm.training.metrics import read_metrics
from tests.conftest import tiny_overrides

SECRET = "planted-secret-4f1d2c9e8b7a"


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory, empty_config_module) -> Path:
    out = tmp_path_factory.mktemp("runs")
    old = os.environ.get("WANDB_API_KEY")
    os.environ["WANDB_API_KEY"] = SECRET  # must never reach the run directory
    try:
        assert main(["train", str(empty_config_module), *tiny_overrides(tiny_world, out)]) == 0
    finally:
        if old is None:
            os.environ.pop("WANDB_API_KEY")
        else:
            os.environ["WANDB_API_KEY"] = old
    return out / "t"


@pytest.fixture(scope="module")
def empty_config_module(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "empty.yaml"
    p.write_text("{}\n")
    return p


def test_run_directory(trained: Path) -> None:
    for name in ("config.yaml", "metrics.csv", "summary.json", "wandb_id"):
        assert (trained / name).is_file(), name
    assert (trained / "hf" / "config.json").is_file() and (trained / "hf" / "tokenizer.json").is_file()
    assert any((trained / "checkpoints").iterdir())
    assert list((trained / "wandb").glob("offline-run-*")), "wandb offline files"
    assert json.loads((trained / "summary.json").read_text())["finished"] is True


def test_metrics_rows(trained: Path) -> None:
    rows = read_metrics(trained / "metrics.csv")
    header = list(rows[0])
    assert header[:2] == ["step", "tokens"]
    for col in ("train/loss", "optim/lr", "val/pile/loss", "val/pile/ppl", "val/slimpajama/ppl",
                "forgetting/pile", "adaptation/slimpajama"):
        assert col in header
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(7))  # one row per optimizer step 0..5, then the final evaluation at step 6
    evals = [int(r["step"]) for r in rows if r["val/pile/loss"]]
    assert evals == [0, 3, 6]  # step 0 (the starting checkpoint), every 3 steps, and the end
    assert float(rows[0]["forgetting/pile"]) == 0.0
    assert [int(r["tokens"]) for r in rows] == [s * 2 * 16 for s in steps]
    assert rows[-1]["train/loss"] == ""


def _val_rows(tokenizer, files: list[Path], seq_len: int, max_tokens: int) -> list[list[int]]:
    """Issue 2 item 6, written independently: documents in file order + EOS, concatenated, cut into rows."""
    ids: list[int] = []
    for f in files:
        for line in zstandard.ZstdDecompressor().decompress(f.read_bytes(), max_output_size=1 << 30).splitlines():
            ids += tokenizer(json.loads(line)["text"])["input_ids"] + [tokenizer.eos_token_id]
    n = min(len(ids) // (seq_len + 1), max_tokens // seq_len)
    return [ids[i * (seq_len + 1):(i + 1) * (seq_len + 1)] for i in range(n)]


def _independent_ppl(model_dir: Path, tok_dir: Path, files: list[Path]) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    losses = []
    with torch.no_grad():
        for row in _val_rows(tok, files, 16, 256):
            t = torch.tensor([row])
            losses.append(model(input_ids=t, labels=t).loss.item())  # mean over the 16 predicted tokens
    return math.exp(sum(losses) / len(losses))  # every row predicts 16 tokens: mean of means = token mean


def test_ppl_equals_plain_transformers(trained: Path, tiny_world) -> None:
    rows = read_metrics(trained / "metrics.csv")
    for set_name, files in (("pile", [tiny_world["root"] / "pile/val.jsonl.zst"]),
                            ("slimpajama", sorted((tiny_world["root"] / "slimpajama/validation").rglob("*.zst")))):
        start = _independent_ppl(tiny_world["model"], tiny_world["model"], files)
        end = _independent_ppl(trained / "hf", tiny_world["model"], files)
        assert float(rows[0][f"val/{set_name}/ppl"]) == pytest.approx(start, rel=1e-5)
        assert float(rows[-1][f"val/{set_name}/ppl"]) == pytest.approx(end, rel=1e-5)
        assert float(rows[-1][f"val/{set_name}/ppl"]) == pytest.approx(math.exp(float(rows[-1][f"val/{set_name}/loss"])))


def _subset_losses(model_dir: Path, tok_dir: Path, files: list[Path]) -> dict[str, float]:
    """Per-subset token-mean NLL, independently: each predicted token belongs to its document's subset."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids: list[int] = []
    subs: list[str] = []
    for f in files:
        for line in zstandard.ZstdDecompressor().decompress(f.read_bytes(), max_output_size=1 << 30).splitlines():
            doc = json.loads(line)
            toks = tok(doc["text"])["input_ids"] + [tok.eos_token_id]
            ids += toks
            subs += [doc["meta"]["pile_set_name"]] * len(toks)
    n = min(len(ids) // 17, 256 // 16)
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for i in range(n):
            row = torch.tensor([ids[i * 17:(i + 1) * 17]])
            logits = model(input_ids=row[:, :-1]).logits[0]
            nll = torch.nn.functional.cross_entropy(logits, row[0, 1:], reduction="none")
            for j in range(16):
                s = sums.setdefault(subs[i * 17 + j + 1], [0.0, 0])
                s[0] += nll[j].item()
                s[1] += 1
    return {k: a / b for k, (a, b) in sums.items()}


def test_per_subset_loss_equals_plain_transformers(trained: Path, tiny_world) -> None:
    rows = read_metrics(trained / "metrics.csv")
    expected = _subset_losses(trained / "hf", tiny_world["model"], [tiny_world["root"] / "pile/val.jsonl.zst"])
    assert set(expected) == {"Books30", "Books31"}
    for sub, loss in expected.items():
        assert float(rows[-1][f"val/pile/{sub}/loss"]) == pytest.approx(loss, rel=1e-5)


def test_forgetting_and_adaptation_columns(trained: Path) -> None:
    rows = [r for r in read_metrics(trained / "metrics.csv") if r["val/pile/loss"]]
    for r in rows:
        assert float(r["forgetting/pile"]) == pytest.approx(float(r["val/pile/loss"]) - float(rows[0]["val/pile/loss"]))
        assert float(r["adaptation/slimpajama"]) == pytest.approx(
            float(rows[0]["val/slimpajama/loss"]) - float(r["val/slimpajama/loss"]))


def test_eval_command_matches_final_row(trained: Path, tiny_world, empty_config_module, capsys) -> None:
    final = read_metrics(trained / "metrics.csv")[-1]
    overrides = tiny_overrides(tiny_world, trained.parent)
    for source in (trained, trained / "hf"):  # a run directory (newest checkpoint) and an HF directory
        capsys.readouterr()
        assert main(["eval", str(empty_config_module), *overrides, "--checkpoint", str(source)]) == 0
        out = json.loads(capsys.readouterr().out)
        for name in ("pile", "slimpajama"):
            assert out[name]["loss"] == pytest.approx(float(final[f"val/{name}/loss"]), rel=1e-6)
            assert out[name]["ppl"] == pytest.approx(float(final[f"val/{name}/ppl"]), rel=1e-6)
            assert out[name]["tokens"] == 256


def test_no_secret_in_run_directory(trained: Path) -> None:
    for path in trained.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_bf16_mixed_with_accumulation_counts_tokens_exactly(tiny_world, tmp_path: Path, empty_config_module) -> None:
    overrides = tiny_overrides(tiny_world, tmp_path, trainer__precision="bf16-mixed", trainer__max_steps="null",
                               trainer__max_tokens=256, trainer__global_batch_tokens=64, trainer__val_every_steps=0,
                               logging__wandb__mode="disabled")
    assert main(["train", str(empty_config_module), *overrides]) == 0
    rows = read_metrics(tmp_path / "t" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]  # 256 tokens / (2 rows x 2 accumulation x 16)
    assert [int(r["tokens"]) for r in rows] == [0, 64, 128, 192, 256]
    assert int(rows[-1]["data/tokens_seen"]) == 256
    assert all(math.isfinite(float(r["train/loss"])) for r in rows[:-1])
