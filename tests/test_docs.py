"""The README and the site stay true to the code: the quickstart's two commands, a docstring for every config key,
the configuration page generated from the dataclasses at build time (tests/docs/ builds the site and runs the
docs' commands)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

from rewarm.config_doc import markdown, rows

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_quickstart_has_exactly_the_two_commands() -> None:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_the_readme_stays_small() -> None:
    assert len(README.encode()) <= 25_600, "the README links into the site (docs/); move the detail there"


def test_every_config_key_is_documented() -> None:
    keys = [key for key, _, _ in rows()]
    assert len(keys) > 50
    undocumented = [key for key, _, doc in rows() if not doc]
    assert not undocumented, f"add a docstring under these fields: {undocumented}"


def test_the_configuration_page_is_generated_from_the_code() -> None:
    """docs/configuration.md holds a marker that docs/hooks.py replaces with the table when the site is built."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    source = (ROOT / "docs" / "configuration.md").read_text()
    assert source.count(hooks.CONFIG_MARKER) == 1
    page = SimpleNamespace(file=SimpleNamespace(src_uri="configuration.md"))
    built = hooks.on_page_markdown(source, page=page, config={}, files=[])
    assert markdown() in built and hooks.CONFIG_MARKER not in built
    assert all(f"`{key}`" in built for key, _, _ in rows())
