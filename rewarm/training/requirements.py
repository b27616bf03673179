"""The optional packages a run needs (installed by rewarm's extras), and which of them are missing.

Without them a run fails only after its start-up (data checks, tokenizer, sometimes the model), and a sweep or the
demo fails every run the same way. ``missing_packages(cfg)`` finds them without importing them
(``importlib.util.find_spec``: no lm-eval or DeepSpeed start-up, no Lightning), so ``rewarm train``, ``rewarm
check``, ``rewarm sweep`` and ``rewarm demo`` refuse such a config before anything runs, with one message naming
the package and the extra that installs it."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rewarm.errors import ConfigError


@dataclass(frozen=True)
class Requirement:
    """An optional package: ``modules`` must all be importable; ``extra`` of rewarm installs them."""

    package: str
    """What the user installs, as pip names it."""
    extra: str
    modules: tuple[str, ...]
    setting: str
    """The config setting that needs it."""
    instead: str
    """What to set instead to run without it."""


LM_EVAL = Requirement("lm-eval[hf]", "eval", ("lm_eval", "accelerate"), "tasks.names",
                      "tasks.names=[] runs without downstream tasks")
DEEPSPEED = Requirement("deepspeed", "deepspeed", ("deepspeed",), "trainer.strategy=deepspeed",
                        "trainer.strategy=ddp or fsdp runs without it")
FLASH_ATTN = Requirement("flash-attn", "flash", ("flash_attn",), "model.attn_implementation=flash_attention_2",
                         "model.attn_implementation=auto uses it only when installed")


def required(cfg: Any) -> list[Requirement]:
    """The optional packages a ``RunConfig`` needs (``attn_implementation=auto`` needs none: it falls back)."""
    needs = {LM_EVAL: bool(cfg.tasks.names), DEEPSPEED: cfg.trainer.strategy == "deepspeed",
             FLASH_ATTN: cfg.model.attn_implementation == "flash_attention_2"}
    return [r for r, needed in needs.items() if needed]


def installed(requirement: Requirement) -> bool:
    """Whether every module of ``requirement`` can be imported (found on the path; none is imported)."""
    return all(_findable(m) for m in requirement.modules)


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing, or a module without a spec
        return False


def missing_packages(cfg: Any) -> list[Requirement]:
    """The optional packages ``cfg`` needs that are not installed."""
    return [r for r in required(cfg) if not installed(r)]


def check_packages(runs: Sequence[tuple[str, Any]], what: str = "this run") -> None:
    """A ConfigError with one message when any of ``runs`` ((name, RunConfig)) needs a package that is missing:
    which package, for which setting, in which runs, and the one pip command that installs them all."""
    missing: dict[Requirement, list[str]] = {}
    for name, cfg in runs:
        for r in missing_packages(cfg):
            missing.setdefault(r, []).append(name)
    if missing:
        raise ConfigError("", missing_message(missing, len(runs), what))


def missing_message(missing: dict[Requirement, list[str]], n_runs: int, what: str) -> str:
    """``every run of this sweep (3) needs lm-eval[hf] for tasks.names, which is not installed: pip install
    'rewarm[eval]' (or tasks.names=[] runs without downstream tasks)``."""
    clauses = []
    for r, names in missing.items():
        who = what if n_runs == 1 else (f"every run of {what} ({n_runs})" if len(names) == n_runs
                                        else f"{len(names)} of {n_runs} runs of {what} ({', '.join(names)})")
        clauses.append(f"{who} needs {r.package} for {r.setting}")
    extras = ",".join(dict.fromkeys(r.extra for r in missing))
    verb = "is" if len(missing) == 1 else "are"
    instead = "; ".join(r.instead for r in missing)
    return f"{'; '.join(clauses)}, which {verb} not installed: pip install 'rewarm[{extras}]' (or {instead})"
