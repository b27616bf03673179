"""The MMIDIDX reader and writer: layout, dtype choice, shards, and every bad-input case with its own error."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from megatron_helpers import write_docs, write_pythia_like, write_raw_index

from rewarm.data.megatron.format import HEADER_BYTES, TokenFile, bin_files, prefix_of, read_header, token_dtype
from rewarm.errors import DataError

DOCS = [[5, 6, 7], [8], [9, 10, 11, 12], [], [13, 14]]


def test_writer_layout_matches_the_format(tmp_path):
    prefix = write_docs(tmp_path / "d", DOCS)
    raw = (tmp_path / "d.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<Q", raw[9:17]) == (1,) and raw[17] == 8
    n, d = struct.unpack("<QQ", raw[18:34])
    assert (n, d) == (5, 6) and len(raw) == HEADER_BYTES + 12 * n + 8 * d
    sizes = np.frombuffer(raw, np.int32, n, HEADER_BYTES)
    pointers = np.frombuffer(raw, np.int64, n, HEADER_BYTES + 4 * n)
    doc_idx = np.frombuffer(raw, np.int64, d, HEADER_BYTES + 12 * n)
    assert sizes.tolist() == [3, 1, 4, 0, 2]
    assert pointers.tolist() == [0, 6, 8, 16, 16]  # byte offsets: cumulative sizes x 2
    assert doc_idx.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.fromfile(tmp_path / "d.bin", np.uint16).tolist() == sum(DOCS, [])
    tf = TokenFile(str(prefix))
    assert tf.n_docs == 5 and tf.n_tokens == 10 and tf.by_doc_idx
    lo, hi = tf.doc_spans(np.arange(5))
    assert [tf.tokens(a, b).tolist() for a, b in zip(lo, hi, strict=True)] == DOCS


def test_writer_leaves_nothing_when_interrupted(tmp_path):
    from rewarm.data.megatron.writer import TokenWriter

    with pytest.raises(RuntimeError), TokenWriter(str(tmp_path / "x"), np.uint16) as w:
        w.add_documents(np.asarray([1, 2]), np.asarray([0, 2]))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_dtype_follows_the_vocabulary_size():
    assert token_dtype(50304) is np.uint16 and token_dtype(65499) is np.uint16
    assert token_dtype(65500) is np.int32 and token_dtype(128256) is np.int32


def test_int32_files_and_multi_sequence_documents(tmp_path):
    # a document made of two sequences (sentence splitting): doc_idx [0, 2, 3]
    write_raw_index(tmp_path / "s.idx", [2, 3, 1], [0, 2, 3], code=4, itemsize=4)
    np.asarray([1, 2, 3, 4, 5, 70000], np.int32).tofile(tmp_path / "s.bin")
    tf = TokenFile(str(tmp_path / "s.bin"))
    assert tf.dtype == np.int32 and tf.n_docs == 2
    lo, hi = tf.doc_spans(np.arange(2))
    assert tf.tokens(int(lo[0]), int(hi[0])).tolist() == [1, 2, 3, 4, 5]
    assert tf.tokens(int(lo[1]), int(hi[1])).tolist() == [70000]


def test_pythia_like_index_does_not_assume_doc_idx_ends_at_len_sizes(tmp_path):
    tokens = write_pythia_like(tmp_path, n_rows=4, row_len=9)
    tf = TokenFile(str(tmp_path / "document"))
    assert tf.header.n_docs_idx == 1 and not tf.by_doc_idx and tf.n_docs == 4
    assert tf.tokens(9, 18).tolist() == tokens[9:18].tolist()


def test_shards_are_one_byte_stream(tmp_path):
    tokens = write_pythia_like(tmp_path, n_rows=10, row_len=9, shards=3)
    assert bin_files(str(tmp_path / "document")) == [str(tmp_path / f"document-{i:05d}-of-00002.bin") for i in range(3)]
    tf = TokenFile(str(tmp_path / "document.idx"))
    assert tf.n_tokens == 90
    assert tf.tokens(0, 90).tolist() == tokens.tolist()  # tokens straddling a shard boundary included
    assert all(tf.tokens(a, a + 7).tolist() == tokens[a : a + 7].tolist() for a in range(0, 83, 5))


def test_prefix_of():
    assert prefix_of("a/document-00003-of-00020.bin") == "a/document"
    assert prefix_of("a/x.idx") == "a/x" and prefix_of("a/x.bin") == "a/x" and prefix_of("a/x") == "a/x"


# ---- bad input: one test per case, each error names the file ----

def test_missing_bin(tmp_path):
    write_docs(tmp_path / "d", DOCS)
    (tmp_path / "d.bin").unlink()
    with pytest.raises(DataError, match=r"d\.bin: file not found"):
        TokenFile(str(tmp_path / "d"))


def test_missing_idx(tmp_path):
    write_docs(tmp_path / "d", DOCS)
    (tmp_path / "d.idx").unlink()
    with pytest.raises(DataError, match=r"d\.idx: index file not found"):
        TokenFile(str(tmp_path / "d.bin"))


def test_missing_shard(tmp_path):
    write_pythia_like(tmp_path, n_rows=10, row_len=9, shards=3)
    (tmp_path / "document-00001-of-00002.bin").unlink()
    with pytest.raises(DataError, match=r"document-00001-of-00002\.bin: shard missing"):
        TokenFile(str(tmp_path / "document"))


def test_wrong_magic(tmp_path):
    write_raw_index(tmp_path / "d.idx", [3], [0, 1], magic=b"TNTIDX\x00\x00\x00")
    with pytest.raises(DataError, match=r"d\.idx: not an MMIDIDX index"):
        read_header(str(tmp_path / "d.idx"))


def test_unknown_version(tmp_path):
    write_raw_index(tmp_path / "d.idx", [3], [0, 1], version=2)
    with pytest.raises(DataError, match=r"d\.idx: unknown index version 2"):
        read_header(str(tmp_path / "d.idx"))


@pytest.mark.parametrize("code", [0, 6, 7, 9])
def test_unknown_or_float_dtype_code(tmp_path, code):
    write_raw_index(tmp_path / "d.idx", [3], [0, 1], code=code)
    with pytest.raises(DataError, match=rf"d\.idx: dtype code {code} is"):
        read_header(str(tmp_path / "d.idx"))


def test_truncated_bin(tmp_path):
    write_docs(tmp_path / "d", DOCS)
    raw = (tmp_path / "d.bin").read_bytes()
    (tmp_path / "d.bin").write_bytes(raw[:-4])
    with pytest.raises(DataError, match=r"d\.bin: 16 bytes, but .*d\.idx says the sequences end at byte 20; the "
                                         r"\.bin is truncated"):
        TokenFile(str(tmp_path / "d"))


def test_bin_longer_than_its_index(tmp_path):
    write_docs(tmp_path / "d", DOCS)
    with open(tmp_path / "d.bin", "ab") as fh:
        fh.write(b"\x00\x00")
    with pytest.raises(DataError, match=r"d\.bin: 22 bytes.*longer than its index"):
        TokenFile(str(tmp_path / "d"))


def test_truncated_index(tmp_path):
    write_docs(tmp_path / "d", DOCS)
    raw = (tmp_path / "d.idx").read_bytes()
    (tmp_path / "d.idx").write_bytes(raw[:-8])
    with pytest.raises(DataError, match=r"d\.idx: .* bytes, but its header announces 5 sequences"):
        read_header(str(tmp_path / "d.idx"))


def test_empty_index(tmp_path):
    write_raw_index(tmp_path / "d.idx", [], [0])
    (tmp_path / "d.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"d\.idx: empty index"):
        TokenFile(str(tmp_path / "d"))
