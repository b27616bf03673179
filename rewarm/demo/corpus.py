"""The demo's two corpora, written in the Pile and SlimPajama layouts and schemas.

* upstream, Pile layout: ``pile/train/00.jsonl.zst ...``, ``pile/val.jsonl.zst``, ``pile/test.jsonl.zst``;
  each line ``{"text": ..., "meta": {"pile_set_name": "PythonReference" | "PythonDocstrings"}}``.
* downstream, SlimPajama layout: ``slimpajama/train/chunk1/example_train_0.jsonl.zst ...``,
  ``slimpajama/validation/chunk1/example_holdout_0.jsonl.zst``, ``slimpajama/test/chunk1/...``;
  each line ``{"text": ..., "meta": {"redpajama_set_name": "RedPajamaGithub"}}`` (module source code).

Train / validation / test are disjoint by document: a module (or reference topic) goes to one split, the
same one in both corpora, chosen by a hash of its name. Documents are shuffled with a fixed seed before
they are sharded, so every shard and the validation files mix subsets. A ``manifest.json`` records the
sizes and a fingerprint; a directory whose fingerprint matches is reused as is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from rewarm.demo.stdlib_text import (
    Document,
    code_document,
    docstring_document,
    parse_modules,
    split_document,
    topic_documents,
)

log = logging.getLogger(__name__)

BUILDER_VERSION = 2
PILE_SUBSETS = ("PythonReference", "PythonDocstrings")
SLIMPAJAMA_SUBSETS = ("RedPajamaGithub",)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CorpusSpec:
    """What to build. Byte caps keep tests small; None takes everything there is."""

    max_upstream_bytes: int | None = None
    max_downstream_bytes: int | None = 8_000_000
    heldout_fraction: float = 0.08
    """Fraction of modules / topics in each of validation and test."""
    max_document_bytes: int = 4000
    """Modules and topics are cut at blank lines into documents of about this size, then shuffled, so that
    consecutive training rows come from many modules (one 100 kB module would fill 30 steps of 1k tokens)."""
    num_pile_shards: int = 8
    num_slimpajama_chunks: int = 2
    files_per_chunk: int = 8
    """Shards are visited in a seeded order (data.train.*.shuffle_files): with several per run, the seed
    changes which documents a run sees, which is the seed noise the study measures."""
    seed: int = 1234

    def fingerprint(self) -> str:
        blob = json.dumps({"spec": asdict(self), "python": sys.version, "v": BUILDER_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CorpusPaths:
    """Where the files of both corpora are; globs are what ``data.*.paths`` take."""

    root: Path

    @property
    def pile_train(self) -> str:
        return str(self.root / "pile" / "train" / "*.jsonl.zst")

    @property
    def pile_val(self) -> str:
        return str(self.root / "pile" / "val.jsonl.zst")

    @property
    def slimpajama_train(self) -> str:
        return str(self.root / "slimpajama" / "train" / "chunk*" / "*.jsonl.zst")

    @property
    def slimpajama_val(self) -> str:
        return str(self.root / "slimpajama" / "validation" / "chunk*" / "*.jsonl.zst")

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


def split_of(key: str, heldout_fraction: float, seed: int) -> str:
    """train | val | test for a document key, from a hash (stable across runs and Python versions). All pieces
    ``<key>#<i>`` of one module or topic go to the same split, so no module is both trained and validated on."""
    origin = key.split("#", 1)[0]
    u = int(hashlib.sha256(f"{seed}:{origin}".encode()).hexdigest()[:12], 16) / 16**12  # uniform in [0, 1)
    if u < heldout_fraction:
        return "val"
    return "test" if u < 2 * heldout_fraction else "train"


def build_documents(spec: CorpusSpec) -> tuple[list[Document], list[Document]]:
    """(upstream prose, downstream code) documents, each list shuffled with ``spec.seed`` and capped in bytes."""
    upstream = topic_documents(PILE_SUBSETS[0])
    downstream = []
    for name, source, tree in parse_modules():
        doc = docstring_document(tree, name, PILE_SUBSETS[1])
        if doc is not None:
            upstream.append(doc)
        code = code_document(source, tree, name, SLIMPAJAMA_SUBSETS[0])
        if code is not None:
            downstream.append(code)
    up = _cap(_shuffled(_pieces(upstream, spec), spec.seed), spec.max_upstream_bytes)
    down = _cap(_shuffled(_pieces(downstream, spec), spec.seed + 1), spec.max_downstream_bytes)
    return up, down


def _pieces(docs: list[Document], spec: CorpusSpec) -> list[Document]:
    return [piece for doc in docs for piece in split_document(doc, spec.max_document_bytes)]


def _shuffled(docs: list[Document], seed: int) -> list[Document]:
    out = list(docs)
    random.Random(seed).shuffle(out)
    return out


def _cap(docs: list[Document], max_bytes: int | None) -> list[Document]:
    """The longest prefix of ``docs`` within ``max_bytes`` of UTF-8 text (at least one document)."""
    if max_bytes is None:
        return docs
    out, total = [], 0
    for doc in docs:
        total += len(doc.text.encode())
        if out and total > max_bytes:
            break
        out.append(doc)
    return out


def split_documents(docs: Iterable[Document], spec: CorpusSpec) -> dict[str, list[Document]]:
    """Documents by split (order kept within each split)."""
    out: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for doc in docs:
        out[split_of(doc.key, spec.heldout_fraction, spec.seed)].append(doc)
    return out


def write_jsonl_zst(path: Path, docs: Iterable[Document], set_field: str) -> int:
    """Write one ``{"text", "meta": {set_field: subset}}`` line per document; returns the number of lines."""
    import zstandard

    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
        for doc in docs:
            line = json.dumps({"text": doc.text, "meta": {set_field: doc.subset}}, ensure_ascii=False)
            out.write((line + "\n").encode())
            n += 1
    return n


def write_pile(root: Path, splits: dict[str, list[Document]], num_shards: int) -> None:
    """The Pile layout: ``train/00.jsonl.zst``... (round-robin shards), ``val.jsonl.zst``, ``test.jsonl.zst``."""
    train = splits["train"]
    for i in range(num_shards):
        write_jsonl_zst(root / "train" / f"{i:02d}.jsonl.zst", train[i::num_shards], "pile_set_name")
    write_jsonl_zst(root / "val.jsonl.zst", splits["val"], "pile_set_name")
    write_jsonl_zst(root / "test.jsonl.zst", splits["test"], "pile_set_name")


def write_slimpajama(root: Path, splits: dict[str, list[Document]], num_chunks: int, files_per_chunk: int) -> None:
    """The SlimPajama layout: ``train/chunk<c>/example_train_<i>.jsonl.zst``, ``validation|test/chunk1/example_holdout_0``."""
    train, n = splits["train"], num_chunks * files_per_chunk
    for k in range(n):
        chunk, i = k // files_per_chunk + 1, k % files_per_chunk
        write_jsonl_zst(root / "train" / f"chunk{chunk}" / f"example_train_{i}.jsonl.zst", train[k::n], "redpajama_set_name")
    for split, folder in (("val", "validation"), ("test", "test")):
        write_jsonl_zst(root / folder / "chunk1" / "example_holdout_0.jsonl.zst", splits[split], "redpajama_set_name")


def build_corpora(root: Path, spec: CorpusSpec = CorpusSpec()) -> CorpusPaths:
    """Build both corpora under ``root`` (reused when its manifest's fingerprint matches ``spec``)."""
    paths = CorpusPaths(Path(root))
    if _manifest_fingerprint(paths.manifest) == spec.fingerprint():
        log.info("corpora: reusing %s", root)
        return paths
    if paths.root.exists():
        shutil.rmtree(paths.root)
    up, down = build_documents(spec)
    up_splits, down_splits = split_documents(up, spec), split_documents(down, spec)
    write_pile(paths.root / "pile", up_splits, spec.num_pile_shards)
    write_slimpajama(paths.root / "slimpajama", down_splits, spec.num_slimpajama_chunks, spec.files_per_chunk)
    manifest = {"fingerprint": spec.fingerprint(), "spec": asdict(spec), "python": sys.version,
                "pile": _sizes(up_splits), "slimpajama": _sizes(down_splits)}
    paths.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("corpora: wrote %s (pile %s, slimpajama %s)", root, manifest["pile"], manifest["slimpajama"])
    return paths


def _sizes(splits: dict[str, list[Document]]) -> dict[str, dict[str, int]]:
    return {s: {"documents": len(d), "bytes": sum(len(x.text.encode()) for x in d)} for s, d in splits.items()}


def _manifest_fingerprint(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def read_jsonl_zst(path: Path) -> list[dict]:
    """All records of a ``.jsonl.zst`` file (for tests and the tokenizer trainer)."""
    import io

    import zstandard

    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
        return [json.loads(line) for line in io.TextIOWrapper(reader, encoding="utf-8") if line.strip()]
