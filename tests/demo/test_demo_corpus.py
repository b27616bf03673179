"""The demo corpora: real standard-library text, Pile / SlimPajama layouts and schemas, disjoint splits."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from rewarm.demo.corpus import (
    PILE_SUBSETS,
    SLIMPAJAMA_SUBSETS,
    CorpusPaths,
    CorpusSpec,
    build_corpora,
    read_jsonl_zst,
    split_of,
)
from rewarm.demo.stdlib_text import (
    Document,
    docstring_document,
    module_files,
    split_document,
    stdlib_dir,
    strip_docstrings,
)

SOURCE = '''"""Module docstring."""
import os  # a comment that stays


class Thing:
    """Class doc,
    on two lines."""

    def only_doc(self):
        """Nothing but a docstring."""

    def f(self, x):
        """Doubles."""
        return 2 * x  # doubling


def g(): "same line"; return 1
'''


def _records(paths: list[Path]) -> list[dict]:
    return [r for p in paths for r in read_jsonl_zst(p)]


def test_strip_docstrings_keeps_code_and_comments() -> None:
    out = strip_docstrings(SOURCE, ast.parse(SOURCE))
    assert "docstring" not in out and "Class doc" not in out and "Doubles" not in out
    assert "# a comment that stays" in out and "return 2 * x  # doubling" in out
    assert 'def g(): "same line"; return 1' in out  # a docstring sharing its line is left alone
    tree = ast.parse(out)  # still valid Python: the docstring-only body got `pass`
    only = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "only_doc")
    assert isinstance(only.body[0], ast.Pass)


def test_docstring_document_names_what_each_docstring_documents() -> None:
    doc = docstring_document(ast.parse(SOURCE), "pkg.mod", "PythonDocstrings")
    assert doc is not None and doc.key == "module:pkg.mod"
    assert doc.text.startswith("pkg.mod\n\nModule docstring.")
    assert "pkg.mod.Thing\n\nClass doc,\non two lines." in doc.text
    assert "pkg.mod.Thing.f\n\nDoubles." in doc.text and "return" not in doc.text


def test_module_files_skip_tests_and_the_topics() -> None:
    files = module_files()
    rels = {f.relative_to(stdlib_dir()).as_posix() for f in files}
    assert "json/decoder.py" in rels and "pydoc_data/topics.py" not in rels
    assert not any("/test/" in f"/{r}" or "site-packages" in r for r in rels)


def test_pile_layout_and_schema(small_corpus: CorpusPaths, small_spec: CorpusSpec) -> None:
    root = small_corpus.root / "pile"
    shards = sorted((root / "train").glob("*.jsonl.zst"))
    assert [p.name for p in shards] == [f"{i:02d}.jsonl.zst" for i in range(small_spec.num_pile_shards)]
    assert (root / "val.jsonl.zst").is_file() and (root / "test.jsonl.zst").is_file()
    train = _records(shards)
    assert all(set(r) == {"text", "meta"} and set(r["meta"]) == {"pile_set_name"} for r in train)
    assert {r["meta"]["pile_set_name"] for r in train} == set(PILE_SUBSETS)
    assert all(r["text"].strip() for r in train)


def test_slimpajama_layout_and_schema(small_corpus: CorpusPaths) -> None:
    root = small_corpus.root / "slimpajama"
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jsonl.zst"))
    assert "train/chunk1/example_train_0.jsonl.zst" in names and "train/chunk2/example_train_1.jsonl.zst" in names
    assert "validation/chunk1/example_holdout_0.jsonl.zst" in names and "test/chunk1/example_holdout_0.jsonl.zst" in names
    records = _records([root / n for n in names])
    assert {r["meta"]["redpajama_set_name"] for r in records} == set(SLIMPAJAMA_SUBSETS)
    code = "\n".join(r["text"] for r in records[:50])
    assert "def " in code and "import " in code


def test_splits_are_disjoint_by_document(small_corpus: CorpusPaths) -> None:
    for train_glob, val in [("pile/train/*.jsonl.zst", ["pile/val.jsonl.zst", "pile/test.jsonl.zst"]),
                            ("slimpajama/train/chunk*/*.jsonl.zst", ["slimpajama/validation/chunk1/example_holdout_0.jsonl.zst",
                                                                     "slimpajama/test/chunk1/example_holdout_0.jsonl.zst"])]:
        train = {r["text"] for r in _records(sorted(small_corpus.root.glob(train_glob)))}
        held = [{r["text"] for r in read_jsonl_zst(small_corpus.root / v)} for v in val]
        assert train and all(held)
        assert not train & held[0] and not train & held[1] and not held[0] & held[1]


def test_upstream_is_prose_and_downstream_is_code(small_corpus: CorpusPaths) -> None:
    prose = "".join(r["text"] for r in read_jsonl_zst(small_corpus.root / "pile" / "val.jsonl.zst"))
    code = "".join(r["text"] for r in read_jsonl_zst(small_corpus.root / "slimpajama/validation/chunk1/example_holdout_0.jsonl.zst"))

    def share(text: str, chars: str) -> float:
        return sum(text.count(c) for c in chars) / len(text)
    assert share(code, "()[]=_:") > 2 * share(prose, "()[]=_:")


def test_split_document_cuts_at_blank_lines() -> None:
    paras = [f"paragraph {i}\n" + "word " * (10 + 7 * (i % 5)) for i in range(40)]
    doc = Document("module:m", "S", "\n\n".join(paras))
    pieces = split_document(doc, 500)
    assert len(pieces) > 5 and [p.key for p in pieces] == [f"module:m#{i}" for i in range(len(pieces))]
    assert all(len(p.text.encode()) <= 500 for p in pieces)
    assert all(p.text.startswith("paragraph") for p in pieces)  # every piece starts at a paragraph
    assert "".join(p.text for p in pieces).rstrip("\n") == doc.text
    long_line = Document("k", "S", "x" * 50 + "\n" + "y" * 900)
    assert "".join(p.text for p in split_document(long_line, 500)).rstrip("\n") == long_line.text
    assert split_document(Document("k", "S", "short"), 500) == [Document("k", "S", "short")]


def test_split_of_is_a_stable_hash_of_the_module() -> None:
    assert split_of("module:json", 0.1, 1) == split_of("module:json", 0.1, 1)
    assert all(split_of(f"module:m{i}#3", 0.3, 1) == split_of(f"module:m{i}", 0.3, 1) for i in range(50))
    picks = [split_of(f"module:m{i}", 0.1, 7) for i in range(2000)]
    assert 0.07 < picks.count("val") / 2000 < 0.13 and 0.07 < picks.count("test") / 2000 < 0.13


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.jsonl.zst")):
        h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_and_reused(small_corpus: CorpusPaths, small_spec: CorpusSpec, tmp_path: Path) -> None:
    again = build_corpora(tmp_path / "corpus", small_spec)
    assert _digest(again.root) == _digest(small_corpus.root)
    mtime = again.manifest.stat().st_mtime_ns
    assert build_corpora(tmp_path / "corpus", small_spec).manifest.stat().st_mtime_ns == mtime  # reused, not rewritten
    other = CorpusSpec(max_upstream_bytes=100_000, max_downstream_bytes=100_000, heldout_fraction=0.15)
    rebuilt = build_corpora(tmp_path / "corpus", other)
    assert _digest(rebuilt.root) != _digest(small_corpus.root)
