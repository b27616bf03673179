"""Record readers: formats, presets, path checks, and one test per bad-input case (issue 4 item 7)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys

import pytest
from data_helpers import records, write_jsonl, write_parquet

from rewarm.data import check_paths
from rewarm.data.mixing import units_for
from rewarm.data.sources import RecordReader, expand_paths
from rewarm.errors import ConfigError, DataError


def texts_of(path, **kw) -> tuple[list[str], RecordReader]:
    reader = RecordReader(str(path), **kw)
    return [d.text for d in reader], reader


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.zst", "a.jsonl.gz"])
def test_jsonl_formats_read_every_record(tmp_path, name):
    recs = records(20)
    texts, reader = texts_of(write_jsonl(tmp_path / name, recs), subset_field="meta.pile_set_name")
    assert texts == [r["text"] for r in recs]
    assert reader.skipped == 0


def test_parquet_and_subset_field(tmp_path):
    recs = records(10, schema="slim")
    reader = RecordReader(str(write_parquet(tmp_path / "a.parquet", recs)), subset_field="meta.redpajama_set_name")
    docs = list(reader)
    assert [d.text for d in docs] == [r["text"] for r in recs]
    assert [d.subset for d in docs] == [r["meta"]["redpajama_set_name"] for r in recs]


def test_multi_frame_zst(tmp_path):
    import zstandard

    a, b = records(5), records(5, start_id=5)
    data = b"".join(zstandard.ZstdCompressor().compress(b"".join(json.dumps(r).encode() + b"\n" for r in part))
                    for part in (a, b))
    (tmp_path / "m.jsonl.zst").write_bytes(data)
    assert texts_of(tmp_path / "m.jsonl.zst")[0] == [r["text"] for r in a + b]


def test_stride_offset_start_partition_records(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", records(10))
    got = [[d.index for d in RecordReader(str(path), stride=3, offset=k)] for k in range(3)]
    assert got == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [d.index for d in RecordReader(str(path), start=5)] == [5, 6, 7, 8, 9]


@pytest.mark.parametrize("n_files,readers", [(3, 1), (3, 2), (3, 3), (3, 4), (2, 5), (1, 4), (5, 2)])
def test_units_partition_every_record_exactly_once(tmp_path, n_files, readers):
    files = [write_jsonl(tmp_path / f"{f}.jsonl", records(7, start_id=100 * f)) for f in range(n_files)]
    seen = []
    for reader in range(readers):
        for f, offset, stride in units_for(n_files, reader, readers):
            seen += [d.text.split()[0] for d in RecordReader(str(files[f]), offset=offset, stride=stride)]
    assert sorted(seen) == sorted(f"doc{100 * f + i}" for f in range(n_files) for i in range(7))


# ------------------------------------------------------------------ bad input, one test per case

BAD_LINES = {
    "malformed_json": b'{"text": "broken',
    "missing_text": b'{"meta": {"pile_set_name": "x"}}',
    "non_string_text": b'{"text": 42}',
    "empty_text": b'{"text": ""}',
    "invalid_utf8": b'{"text": "caf\xe9 \xff"}',
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_record_is_skipped_counted_and_warned(tmp_path, caplog, case):
    recs = records(6)
    path = write_jsonl(tmp_path / "a.jsonl.zst", recs, raw_lines={2: BAD_LINES[case], 4: BAD_LINES[case]})
    with caplog.at_level(logging.WARNING):
        texts, reader = texts_of(path)
    assert texts == [recs[i]["text"] for i in (0, 1, 3, 5)]
    assert reader.skipped == 2
    warnings = [r.getMessage() for r in caplog.records if "skipping bad record" in r.getMessage()]
    assert len(warnings) == 1 and f"{path}:3" in warnings[0]  # once per file, with file and line (1-based)


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_record_error_policy_names_file_and_line(tmp_path, case):
    path = write_jsonl(tmp_path / "a.jsonl", records(4), raw_lines={1: BAD_LINES[case]})
    with pytest.raises(DataError, match=f"{path}:2"):
        texts_of(path, on_bad_record="error")


@pytest.mark.parametrize("suffix", [".jsonl.zst", ".jsonl.gz"])
def test_truncated_compressed_file(tmp_path, caplog, suffix):
    recs = records(400)
    path = write_jsonl(tmp_path / f"a{suffix}", recs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with caplog.at_level(logging.WARNING):
        texts, reader = texts_of(path)
    assert texts == [r["text"] for r in recs[: len(texts)]]  # a prefix, in order
    assert len(texts) < 400 and reader.skipped == 1
    assert any("truncated" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="truncated"):
        texts_of(path, on_bad_record="error")


def test_empty_file_warns_and_yields_nothing(tmp_path, caplog):
    path = write_jsonl(tmp_path / "e.jsonl.zst", [])
    path.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        texts, reader = texts_of(path)
    assert texts == [] and reader.skipped == 0
    assert any("empty file" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", records(3))
    path.chmod(0)
    texts, reader = texts_of(path)
    assert texts == [] and reader.skipped == 1
    with pytest.raises(DataError, match="unreadable"):
        texts_of(path, on_bad_record="error")


def test_unreadable_file_as_directory(tmp_path):
    """A path that cannot be read as a file (here a directory named like a shard) counts as one bad record."""
    path = tmp_path / "d.jsonl"
    path.mkdir()
    texts, reader = texts_of(path)
    assert texts == [] and reader.skipped == 1


def test_gzip_garbage_is_a_bad_file(tmp_path):
    path = tmp_path / "g.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "ok"}\n')[:10] + b"garbage")
    texts, reader = texts_of(path)
    assert reader.skipped == 1


# ------------------------------------------------------------------ paths


def test_glob_matching_nothing_and_missing_file_are_refused(tmp_path, data_cfg, pile_dir):
    with pytest.raises(ConfigError, match="matches no file"):
        expand_paths([str(tmp_path / "nope" / "*.jsonl.zst")])
    cfg = data_cfg(train={"a": {"paths": [str(pile_dir / "train" / "*.jsonl.zst")]}},
                   val={"v": {"paths": [str(tmp_path / "missing.jsonl")]}})
    with pytest.raises(ConfigError) as e:
        check_paths(cfg)
    assert e.value.key == "val.v.paths"
    cfg = data_cfg(train={"a": {"preset": "slimpajama", "root": str(tmp_path / "nowhere")}})
    with pytest.raises(ConfigError) as e:
        check_paths(cfg)
    assert e.value.key == "train.a.paths"


def test_check_paths_accepts_presets_and_skips_remote(data_cfg, pile_dir, slim_dir):
    cfg = data_cfg(train={"sp": {"preset": "slimpajama", "root": str(slim_dir)},
                          "pile": {"preset": "pile", "root": str(pile_dir)},
                          "remote": {"paths": ["s3://bucket/shard-*.jsonl.zst"]}},
                   val={"pile": {"preset": "pile", "root": str(pile_dir)}})
    check_paths(cfg)
    assert len(expand_paths(cfg.train["sp"].resolved_paths())) == 4
    assert expand_paths(cfg.val["pile"].resolved_paths()) == [str(pile_dir / "val.jsonl.zst")]


def test_data_package_import_is_light():
    code = "import sys, rewarm.config, rewarm.data; bad = {'torch', 'datasets', 'numpy'} & set(sys.modules); print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "set()"
