"""Resume deep in a shard: lines before the cursor are skipped by counting newlines, never split (R1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from rewarm.data import sources


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst"])
def test_skip_equals_slicing(tmp_path: Path, monkeypatch, suffix: str) -> None:
    raw = "".join(json.dumps({"text": f"doc {i} " + "x" * (i % 7)}) + "\n" for i in range(300)).encode()
    path = tmp_path / f"f{suffix}"
    path.write_bytes(zstandard.ZstdCompressor().compress(raw) if suffix.endswith(".zst") else raw)
    monkeypatch.setattr(sources, "_CHUNK", 97)  # many chunk edges, in the middle of lines
    full = list(sources._jsonl_lines(str(path)))
    assert len(full) == 300
    for skip in (0, 1, 2, 5, 50, 149, 150, 299, 300, 301, 1000):
        assert list(sources._jsonl_lines(str(path), skip)) == full[skip:], skip
