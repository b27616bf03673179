"""`rewarm tokenize` through the CLI, `rewarm eval` equal on text and pre-tokenized sets, `rewarm check`
refusing bad pre-tokenized files with exit 2, and a short run on pre-tokenized data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from megatron_helpers import write_docs

from rewarm.cli import main
from tests.conftest import tiny_overrides


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "empty.yaml"
    p.write_text("{}\n")
    return p


def tokenize(config: Path, overrides: list[str], source: str, out: Path, *extra: str) -> int:
    return main(["tokenize", str(config), *overrides, "--source", source, "--out", str(out), *extra])


def test_tokenize_writes_the_pair_and_sidecar(tiny_world, tmp_path, config, capsys):
    from transformers import AutoTokenizer

    over = tiny_overrides(tiny_world, tmp_path)
    assert tokenize(config, over, "val.pile", tmp_path / "tok" / "pile", "--workers", "2") == 0
    assert "wrote" in capsys.readouterr().out
    meta = json.loads((tmp_path / "tok" / "pile.json").read_text())
    tok = AutoTokenizer.from_pretrained(tiny_world["model"])
    texts = [json.loads(line)["text"] for line in _lines(tiny_world["root"] / "pile/val.jsonl.zst")]
    want = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert np.fromfile(tmp_path / "tok" / "pile.bin", np.uint16).tolist() == want  # EOS after each document
    assert meta["documents"] == len(texts) and meta["tokens"] == len(want) and meta["dtype"] == "uint16"
    assert meta["tokenizer"]["name"] == str(tiny_world["model"]) and len(meta["tokenizer"]["hash"]) == 16
    assert meta["source_files"][0]["bytes"] == (tiny_world["root"] / "pile/val.jsonl.zst").stat().st_size
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["pile.bin", "pile.idx", "pile.json"]  # no temp files


def test_a_name_in_train_and_val_means_the_training_source(tiny_world, tmp_path, config, capsys):
    over = tiny_overrides(tiny_world, tmp_path)  # slimpajama is a training source and a validation set
    for name, split in [("slimpajama", "train"), ("train.slimpajama", "train"), ("val.slimpajama", "validation")]:
        assert tokenize(config, over, name, tmp_path / name) == 0, capsys.readouterr().err
        files = [Path(f["path"]) for f in json.loads((tmp_path / f"{name}.json").read_text())["source_files"]]
        assert files and all(f.parent.parent.name == split for f in files), (name, files)


def test_a_missing_file_names_the_full_key_of_the_source_taken(tiny_world, tmp_path, config, capsys):
    over = [*tiny_overrides(tiny_world, tmp_path), f"data.train.slimpajama.paths=[{tmp_path}/none/*.jsonl.zst]"]
    assert tokenize(config, over, "slimpajama", tmp_path / "x") == 2
    captured = capsys.readouterr()
    assert "data.train.slimpajama.paths" in captured.err, captured.err
    assert "the training source data.train.slimpajama" in captured.err  # the bare name's choice, logged


def test_an_unknown_source_lists_the_names(tiny_world, tmp_path, config, capsys):
    over = tiny_overrides(tiny_world, tmp_path)
    for name in ("nope", "val.nope", "test.pile"):
        assert tokenize(config, over, name, tmp_path / "x") == 2
        err = capsys.readouterr().err
        assert f"no data.train / data.val source named '{name}'" in err
        assert "train.slimpajama, val.pile, val.slimpajama" in err
    assert not list(tmp_path.glob("x.*"))


def _lines(path: Path) -> list[bytes]:
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().splitlines()


def test_eval_gives_the_same_loss_on_text_and_pretokenized(tiny_world, tmp_path, config, capsys):
    over = tiny_overrides(tiny_world, tmp_path)
    assert tokenize(config, over, "val.slimpajama", tmp_path / "val") == 0
    capsys.readouterr()
    assert main(["eval", str(config), *over, "--checkpoint", str(tiny_world["model"])]) == 0
    text = json.loads(capsys.readouterr().out)
    mm = [o for o in over if not o.startswith("data.val.slimpajama.paths")] + [
        f"data.val.slimpajama.paths=[{tmp_path}/val.bin]"]
    assert main(["eval", str(config), *mm, "--checkpoint", str(tiny_world["model"])]) == 0
    pre = json.loads(capsys.readouterr().out)
    assert pre["slimpajama"]["loss"] == text["slimpajama"]["loss"] and pre["slimpajama"]["tokens"] == 256


def test_train_runs_on_pretokenized_replay(tiny_world, tmp_path, config):
    over = tiny_overrides(tiny_world, tmp_path, trainer__max_steps=3, trainer__val_every_steps=3)
    assert tokenize(config, over, "val.pile", tmp_path / "pile") == 0
    over += [f"data.train.pile.paths=[{tmp_path}/pile.bin]", "data.train.pile.weight=0.5"]
    assert main(["train", str(config), *over]) == 0
    from rewarm.training.metrics import read_metrics

    rows = read_metrics(tmp_path / "t" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert all(float(r["train/loss"]) > 0 for r in rows[:-1])


@pytest.mark.parametrize("case", ["missing_bin", "magic", "version", "dtype", "truncated", "empty", "vocab"])
def test_check_refuses_bad_pretokenized_files_with_exit_2(tiny_world, tmp_path, config, capsys, case):
    prefix = write_docs(tmp_path / "bad", [[1, 2, 3], [4, 5, 6, 7], [8, 9]])
    idx, binf = tmp_path / "bad.idx", tmp_path / "bad.bin"
    raw = bytearray(idx.read_bytes())
    want = {"missing_bin": "bad.bin: file not found", "magic": "bad.idx: not an MMIDIDX index",
            "version": "bad.idx: unknown index version 7", "dtype": "bad.idx: dtype code 6 is a float dtype",
            "truncated": "the .bin is truncated", "empty": "bad.idx: empty index",
            "vocab": "bad.bin: token id 9000 at token 7 (document 2) is outside the model's vocabulary"}[case]
    if case == "missing_bin":
        binf.unlink()
    elif case == "magic":
        raw[0:4] = b"XXXX"
    elif case == "version":
        raw[9] = 7
    elif case == "dtype":
        raw[17] = 6
    elif case == "truncated":
        binf.write_bytes(binf.read_bytes()[:-2])
    elif case == "empty":
        from megatron_helpers import write_raw_index

        write_raw_index(idx, [], [0])
        raw = bytearray(idx.read_bytes())
    elif case == "vocab":
        write_docs(prefix, [[1, 2, 3], [4, 5, 6, 7], [9000, 9]])
        raw = bytearray(idx.read_bytes())
    idx.write_bytes(bytes(raw))
    over = tiny_overrides(tiny_world, tmp_path) + [f"data.train.mm.paths=[{binf}]"]
    assert main(["check", str(config), *over]) == 2
    err = capsys.readouterr().err
    assert "data.train.mm.paths" in err and want in err


def test_check_prints_the_start_row_of_pythias_rows(tiny_world, tmp_path, config, capsys):
    from megatron_helpers import write_pythia_like

    write_pythia_like(tmp_path / "p", n_rows=12, shards=21)
    over = tiny_overrides(tiny_world, tmp_path) + [
        "data.seq_len=2048", "data.train.replay.preset=pythia_preshuffled", f"data.train.replay.root={tmp_path}/p",
        "data.train.replay.start_step=2", "data.train.replay.rows_per_step=4", "data.train.replay.weight=0.05"]
    assert main(["check", str(config), *over]) == 0
    assert "replay: Pythia's pre-shuffled rows from row 8 (step 2 x 4 rows), in order" in capsys.readouterr().out
    assert main(["check", str(config), *over, "data.train.replay.start_step=3"]) == 2
    assert "data.train.replay.start_step: 3 starts at row 12" in capsys.readouterr().err
