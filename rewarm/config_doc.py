"""The configuration reference, generated from the config dataclasses and their field docstrings.

The documentation site renders it at build time into docs/configuration.md (``docs/hooks.py``), so the page
cannot drift from the code; ``python -m rewarm.config_doc`` prints the same table in a terminal.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from collections.abc import Iterator
from typing import Any

from rewarm.config import RunConfig


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written as a string literal under each field (and inherited from base dataclasses)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(inspect.getsource(klass))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):  # pairs of neighbours
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _nested(tp: Any) -> tuple[str, type] | None:
    """('', cls) for a dataclass field, ('<name>.', cls) for dict[str, dataclass]."""
    if dataclasses.is_dataclass(tp):
        return "", tp
    if typing.get_origin(tp) is dict:
        value = typing.get_args(tp)[1]
        if dataclasses.is_dataclass(value):
            return "<name>.", value
    return None


def rows(cls: type = RunConfig, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(dotted key, default, doc) for every leaf field."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        nested = _nested(hints[f.name])
        if nested is not None:
            mid, sub = nested
            yield from rows(sub, f"{prefix}{f.name}.{mid}")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        yield f"{prefix}{f.name}", repr(default) if isinstance(default, str) else str(default), docs.get(f.name, "")


def markdown() -> str:
    """The reference as a Markdown table: one row per key, with its default and its docstring."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in rows():
        lines.append(f"| `{key}` | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
