"""Small pure helpers shared by sweeps and comparisons: dotted keys, value formatting, short names.

A value is formatted so that it reads well in a run name or a legend *and* parses back to the same
value through OmegaConf's dotlist parser (``3e-4`` rather than ``0.0003``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")
MAX_NAME_CHARS = 80
"""Longer derived names are cut and get a short hash, so that file names stay usable."""


def format_float(x: float) -> str:
    """Shortest of Python's repr and a compact scientific form: 0.0003 -> '3e-4', 0.1 -> '0.1'."""
    if x != x:  # YAML spells nan / inf like this
        return ".nan"
    if x in (float("inf"), float("-inf")):
        return ".inf" if x > 0 else "-.inf"
    plain = repr(x)
    mantissa, exp = f"{x:.12e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    sci = f"{mantissa}e{int(exp)}"
    if len(sci) < len(plain) or (len(sci) == len(plain) and 0 < abs(x) < 0.01):  # 1.5e-3, not 0.0015
        return sci
    return plain


def format_value(value: Any) -> str:
    """A value as override text: YAML-flow for lists and maps, quoted strings only where needed."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"  # YAML flow needs ": "
    return _format_str(str(value))


def _format_str(text: str) -> str:
    """Quote a string only if YAML would read it as something else (a number, a list, 'true', ...)."""
    if text and not re.search(r"[\s:,\[\]{}#&*!|>'\"%@`]", text) and not _looks_scalar(text):
        return text
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def _looks_scalar(text: str) -> bool:
    if text.lower() in ("true", "false", "yes", "no", "on", "off", "null", "none", "~"):
        return True
    try:
        float(text.replace("_", ""))
        return True
    except ValueError:
        return False


GENERIC_LEAVES = frozenset({"name", "paths", "weight", "role", "max_tokens", "text_field", "stage", "mode"})
"""Leaf keys that mean little alone: shortened keys keep their parent (``replay.weight``, ``schedule.name``)."""


def short_keys(keys: Iterable[str]) -> dict[str, str]:
    """Each dotted key -> its shortest dotted suffix that no other key of the set ends with
    (at least two parts for a generic leaf such as ``weight``).

    ``{"schedule.max_lr", "data.train.up.weight", "data.train.down.weight"}`` ->
    ``max_lr``, ``up.weight``, ``down.weight``.
    """
    keys = sorted(set(keys))
    # ``schedule.name`` reads best as ``schedule``: a ``name`` leaf is replaced by its parent
    parts = {k: k.split(".")[:-1] if k.endswith(".name") else k.split(".") for k in keys}
    out = {}
    for key in keys:
        first = 2 if parts[key][-1] in GENERIC_LEAVES and len(parts[key]) > 1 else 1
        for n in range(first, len(parts[key]) + 1):
            suffix = ".".join(parts[key][-n:])
            clash = any(
                o != key and (".".join(p) == suffix or ".".join(p).endswith("." + suffix)) for o, p in parts.items()
            )
            if not clash:
                break
        else:  # no suffix of the shortened form is unique (e.g. ``a.name`` next to ``a``): the whole key
            suffix = key
        out[key] = suffix
    return out


def name_value(text: str) -> str:
    """A value's text as it goes into a run name: quotes and brackets dropped, paths cut to their last
    part (``[data/up/val.jsonl.zst]`` -> ``val.jsonl.zst``), list items joined by ``+``."""
    items = [i.strip().strip("\"'") for i in text.strip().strip("[]").split(",")]
    return "+".join(i.rstrip("/").rsplit("/", 1)[-1] for i in items if i) or "none"


def sanitize(text: str) -> str:
    """A string usable as a file name and a run name (no '/', no spaces); long ones cut + hashed."""
    clean = _UNSAFE.sub("-", text).strip("-.") or "run"
    if len(clean) > MAX_NAME_CHARS:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        clean = clean[: MAX_NAME_CHARS - 9].rstrip("-._") + "-" + digest
    return clean


def unique(names: list[str]) -> list[str]:
    """Give repeated names a suffix ``-2``, ``-3``, ... (first occurrence unchanged)."""
    seen: set[str] = set(names)
    counts: dict[str, int] = {}
    out = []
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        if counts[name] == 1:
            out.append(name)
            continue
        n = counts[name]
        while f"{name}-{n}" in seen:
            n += 1
        seen.add(f"{name}-{n}")
        out.append(f"{name}-{n}")
    return out
