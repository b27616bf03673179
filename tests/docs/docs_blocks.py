"""The shell command blocks of README.md and docs/**/*.md, and which of them the docs tests run.

A fenced block tagged ``bash``, ``sh``, ``shell`` or ``console`` is a shell block. Each of its commands (lines
joined at a trailing backslash, ``#`` comments dropped; in a ``console`` block the lines after ``$ ``, the
lines that follow being the output shown) is *runnable* when the allow-list below says it runs offline in
seconds. A block is run when all its commands are runnable; otherwise the doc itself must say why not, with
``<!-- not-run: REASON -->`` on the last non-blank line before the block. A block marked so must hold at least
one command that is not runnable: a marker cannot hide a block that could run. ``<!-- file: NAME -->`` before
any block writes that block's text to NAME in the working directory the page's commands run in.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SHELL = frozenset({"bash", "sh", "shell", "console"})
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(.*?)\s*-->$")
FILE = re.compile(r"^<!--\s*file:\s*(\S+)\s*-->$")
FENCE = re.compile(r"^(\s*)(`{3,})(\S*)\s*$")
# An untagged block that starts like this is a command block and must be tagged (it would escape the collector).
COMMAND_START = re.compile(r"^(\$ |rewarm |python |\.venv/bin/python |make |pip |sudo |mkdocs )")

# Subcommands that run offline in a second or two, with the arguments that keep them so.
ALWAYS = frozenset({"check", "schedule"})
DRY_RUN = frozenset({"slurm", "sweep"})  # only with --dry-run and never --submit
MODULES = frozenset({"rewarm.resources", "rewarm.config_doc"})  # `python -m MODULE ...`, a subprocess


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    expected: tuple[str, ...] = ()  # output lines a console block shows after the command


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    not_run: str | None = None
    file: str | None = None
    commands: list[Command] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, with the marker before it."""
    lines, found, i = doc.read_text().splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence)
        body = "\n".join(x[len(indent):] if x.startswith(indent) else x for x in lines[i + 1:end])
        before = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
        nr, fm = NOT_RUN.match(before), FILE.match(before)
        block = Block(doc, i + 1, lang, body + "\n", nr.group(1) if nr else None, fm.group(1) if fm else None)
        if lang in SHELL:
            block.commands = parse_commands(block.text, console=lang == "console")
        found.append(block)
        i = end + 1
    return found


def parse_commands(text: str, console: bool) -> list[Command]:
    joined = re.sub(r"\\\n\s*", " ", text).splitlines()
    if not console:
        return [Command(tuple(shlex.split(x, comments=True))) for x in joined if x.strip() and not x.lstrip().startswith("#")]
    commands: list[Command] = []
    for x in joined:
        if x.startswith("$ "):
            commands.append(Command(tuple(shlex.split(x[2:], comments=True))))
        elif commands and x.strip():
            commands[-1] = Command(commands[-1].argv, (*commands[-1].expected, x))
    return commands


def rewarm_args(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """The arguments after ``rewarm`` / ``python -m rewarm``; None for any other program."""
    if argv[:1] == ("rewarm",):
        return argv[1:]
    if argv[:3] == ("python", "-m", "rewarm"):
        return argv[3:]
    return None


def why_not_runnable(cmd: Command) -> str | None:
    """None when the command runs offline in seconds; else what keeps it out of the allow-list."""
    argv = cmd.argv
    if argv[:2] == ("python", "-m") and len(argv) > 2 and argv[2] in MODULES:
        return None
    args = rewarm_args(argv)
    if args is None:
        return f"not a rewarm command: {argv[0]}"
    if not args or args[0] in ("--help", "-h", "--version") or "--help" in args or "-h" in args:
        return None
    if args[0] in ALWAYS:
        return None
    if args[0] in DRY_RUN:
        return None if "--dry-run" in args and "--submit" not in args else f"rewarm {args[0]} without --dry-run"
    return f"rewarm {args[0]} is not on the allow-list of tests/docs/docs_blocks.py"


def runnable(block: Block) -> bool:
    return bool(block.commands) and all(why_not_runnable(c) is None for c in block.commands)


def shell_blocks() -> list[Block]:
    return [b for d in docs() for b in blocks(d) if b.lang in SHELL]
