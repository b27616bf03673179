"""The tokenizer of a run: where a hub id or local directory is loaded from, and loading it.

Data owns it (documents are tokenized here: ``rewarm tokenize`` and the streaming pipeline); ``rewarm.model.load``
resolves the model's weights with the same ``resolve_source``. transformers is imported inside the function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewarm.errors import ConfigError


def resolve_source(name_or_path: str, revision: str | None) -> tuple[str, str | None]:
    """Where to load from. A local directory with ``revision`` means its subdirectory ``<dir>/<revision>``
    (the layout `rewarm demo` keeps, like Pythia's hub revisions); a hub id keeps the revision."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if revision:
            sub = path / revision
            if not sub.is_dir():
                raise ConfigError("model.revision", f"{sub} does not exist (local revisions are subdirectories)")
            return str(sub), None
        return str(path), None
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise ConfigError("model.name_or_path", f"{name_or_path} is not a model directory")
    return name_or_path, revision


def load_tokenizer(name_or_path: str, revision: str | None, tokenizer: str | None, trust_remote_code: bool = False) -> Any:
    """The tokenizer of ``tokenizer`` (else of the model ``name_or_path`` at ``revision``); it must have an EOS."""
    from transformers import AutoTokenizer

    src, rev = resolve_source(tokenizer or name_or_path, None if tokenizer else revision)
    tok = AutoTokenizer.from_pretrained(src, revision=rev, trust_remote_code=trust_remote_code)
    if tok.eos_token_id is None:
        raise ConfigError("model.tokenizer", f"the tokenizer of {src} has no EOS token (needed between documents)")
    return tok
