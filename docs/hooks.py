"""MkDocs hooks (``hooks:`` in mkdocs.yml): pages generated at build time, so that they cannot drift.

- ``configuration.md``: the ``<!-- config-reference -->`` marker becomes the table of every config key, its
  default and its docstring, generated from the config dataclasses by ``rewarm.config_doc.markdown()``.
- ``benchmarks.md``: the repository's ``BENCHMARKS.md``, published as a page; the pages link it as
  ``../BENCHMARKS.md`` (the path that works on GitHub) and the link is pointed at the page here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
CONFIG_MARKER = "<!-- config-reference -->"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "benchmarks.md", content=(REPO / "BENCHMARKS.md").read_text()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if CONFIG_MARKER in markdown:
        from rewarm.config_doc import markdown as reference

        markdown = markdown.replace(CONFIG_MARKER, reference())
    depth = page.file.src_uri.count("/")
    return markdown.replace("](" + "../" * (depth + 1) + "BENCHMARKS.md", "](" + "../" * depth + "benchmarks.md")
