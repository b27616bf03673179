"""Real offline text from the running Python's standard library, in two different distributions.

* prose (upstream): the language/library reference topics of ``pydoc_data.topics`` and the docstrings
  of the standard-library modules (one document per module, each docstring under the dotted name it
  documents);
* code (downstream): the source of the same modules with their docstrings removed (comments kept).

Every Python installation carries this text, so the demo needs no network and no files from outside.
The output is deterministic for a given Python version (files are read in sorted order).
"""

from __future__ import annotations

import ast
import logging
import sysconfig
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Directories that hold tests, third-party packages or machine-generated tables rather than library code.
_SKIP_PARTS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "encodings"})
# Modules whose text is the prose itself (the topics) or that are data, not code.
_SKIP_FILES = frozenset({"pydoc_data/topics.py", "this.py", "antigravity.py", "__phello__/__init__.py"})


@dataclass(frozen=True)
class Document:
    """One document of a corpus. ``key`` identifies its origin (module or topic); ``subset`` names its kind."""

    key: str
    subset: str
    text: str


def stdlib_dir() -> Path:
    """The directory of the pure-Python standard library of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def module_files(root: Path | None = None) -> list[Path]:
    """Library ``.py`` files under ``root`` (default: the stdlib) in sorted order, tests and vendored code excluded."""
    root = root or stdlib_dir()
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_PARTS.intersection(rel.parts[:-1]) or rel.as_posix() in _SKIP_FILES:
            continue
        out.append(path)
    return out


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a file, e.g. ``json/decoder.py`` -> ``json.decoder``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or path.stem


def topic_documents(subset: str) -> list[Document]:
    """The reference topics shipped for ``help()`` (``pydoc_data.topics``), one document per topic."""
    from pydoc_data.topics import topics

    return [Document(f"topic:{name}", subset, text.strip() + "\n") for name, text in sorted(topics.items()) if text.strip()]


def docstring_document(tree: ast.Module, name: str, subset: str) -> Document | None:
    """All docstrings of a module, each under the dotted name of what it documents; None if it has none."""
    parts = []
    for qualname, node in _documented(tree, name):
        doc = ast.get_docstring(node, clean=True)
        if doc and doc.strip():
            parts.append(f"{qualname}\n\n{doc.strip()}\n")
    return Document(f"module:{name}", subset, "\n".join(parts)) if parts else None


def code_document(source: str, tree: ast.Module, name: str, subset: str) -> Document | None:
    """The module's source with every docstring removed; None if nothing but blank lines is left."""
    text = strip_docstrings(source, tree)
    return Document(f"module:{name}", subset, text) if text.strip() else None


def strip_docstrings(source: str, tree: ast.Module) -> str:
    """Remove docstrings that occupy whole lines (a body left empty gets ``pass``); the rest is kept verbatim."""
    lines = source.splitlines(keepends=True)
    for _, node in _documented(tree, ""):
        first = node.body[0] if node.body else None
        if first is None or not _is_docstring(first) or first.end_lineno is None:
            continue
        start, end = first.lineno - 1, first.end_lineno  # 0-based [start, end) line range
        if lines[start][: first.col_offset].strip() or lines[end - 1][first.end_col_offset :].strip():
            continue  # shares a line with other code: leave it
        filler = " " * first.col_offset + "pass\n" if len(node.body) == 1 else ""
        lines[start:end] = [filler] + [""] * (end - start - 1)
    return "".join(lines)


def _documented(tree: ast.Module, prefix: str) -> list[tuple[str, ast.AST]]:
    """(qualified name, node) of the module and every class / function in it, in source order."""
    found: list[tuple[str, ast.AST]] = [(prefix, tree)]

    def visit(node: ast.AST, qual: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{qual}.{child.name}" if qual else child.name
                found.append((name, child))
                visit(child, name)

    visit(tree, prefix)
    return found


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def split_document(doc: Document, max_bytes: int) -> list[Document]:
    """Cut a long document at blank lines into pieces of at most ~``max_bytes`` (a longer paragraph is cut
    at line ends). Piece keys are ``<key>#<i>``: the part before ``#`` still names the module or topic."""
    if len(doc.text.encode()) <= max_bytes:
        return [doc]
    pieces: list[str] = []
    current = ""
    for para in _paragraphs(doc.text, max_bytes):
        if current and len((current + para).encode()) > max_bytes:
            pieces.append(current)
            current = ""
        current += para
    if current.strip():
        pieces.append(current)
    return [Document(f"{doc.key}#{i}", doc.subset, p) for i, p in enumerate(pieces) if p.strip()]


def _paragraphs(text: str, max_bytes: int) -> list[str]:
    """Blank-line separated blocks (separator kept); a block longer than ``max_bytes`` becomes its lines."""
    out = []
    for block in text.split("\n\n"):
        block += "\n\n"
        out.extend(block.splitlines(keepends=True) if len(block.encode()) > max_bytes else [block])
    return out


def parse_modules(root: Path | None = None) -> list[tuple[str, str, ast.Module]]:
    """(module name, source, syntax tree) of every library module that parses; the others are skipped."""
    root = root or stdlib_dir()
    out = []
    for path in module_files(root):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError) as e:
            log.debug("skipping %s: %s", path, e)
            continue
        out.append((module_name(path, root), source, tree))
    log.info("parsed %d standard-library modules under %s", len(out), root)
    return out
