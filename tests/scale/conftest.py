"""Fixtures of the scale-out tests: an empty YAML (everything comes from dotted overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def empty_yaml(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "empty.yaml"
    p.write_text("{}\n")
    return p
