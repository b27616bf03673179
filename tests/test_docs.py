"""The README stays true to the code: quickstart commands, every config key documented."""

from __future__ import annotations

import re
from pathlib import Path

from rewarm.config_doc import markdown, rows

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_quickstart_has_exactly_the_two_commands() -> None:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_every_config_key_is_documented() -> None:
    keys = [key for key, _, _ in rows()]
    assert len(keys) > 50
    missing = [k for k in keys if f"`{k}`" not in README]
    assert not missing, f"regenerate the reference with `python -m rewarm.config_doc`: {missing}"
    undocumented = [key for key, _, doc in rows() if not doc]
    assert not undocumented, f"add a docstring under these fields: {undocumented}"


def test_reference_in_readme_is_current() -> None:
    assert markdown() in README, "README's configuration reference is stale: python -m rewarm.config_doc"
