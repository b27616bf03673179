"""Every shell command block of the README and the site that can run here is run, and its shown output checked;
every block that is not run says why in the doc itself (see tests/docs/docs_blocks.py for the rules)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from docs_blocks import (
    COMMAND_START,
    FILE,
    NOT_RUN,
    REPO,
    Block,
    Command,
    blocks,
    docs,
    rewarm_args,
    runnable,
    shell_blocks,
    why_not_runnable,
)

from rewarm.cli import main

SHELL_BLOCKS = shell_blocks()
RUN = [b for b in SHELL_BLOCKS if b.not_run is None]


def workdir(tmp: Path, doc: Path) -> Path:
    """A working directory that sees the repository's configs/ and slurm/, with the doc's named files in it;
    what the commands write (plots, run directories) stays in ``tmp``."""
    for name in ("configs", "slurm"):
        (tmp / name).symlink_to(REPO / name)
    (tmp / "docs" / "img").mkdir(parents=True)
    for b in blocks(doc):
        if b.file:
            (tmp / b.file).write_text(b.text)
    return tmp


def run(cmd: Command, cwd: Path) -> tuple[int, str]:
    """Exit status and output (stdout + stderr) of one command: in-process through rewarm.cli.main, or a
    subprocess for ``python -m MODULE``."""
    args = rewarm_args(cmd.argv)
    if args is None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.run([sys.executable, *cmd.argv[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=60)
        return p.returncode, p.stdout + p.stderr
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        try:
            rc = main(list(args))
        except SystemExit as e:  # argparse's --help
            rc = int(e.code or 0)
    return rc, out.getvalue()


def lines_in_order(expected: tuple[str, ...], output: str) -> list[str]:
    """The expected lines (whitespace-normalised) that the output lacks, in order."""
    got = iter(" ".join(x.split()) for x in output.splitlines())
    return [x for x in expected if " ".join(x.split()) not in got]


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_command_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runnable(block), (f"{block.id}: {[why_not_runnable(c) for c in block.commands]}: make it runnable "
                             "or mark it <!-- not-run: REASON --> in the doc")
    monkeypatch.chdir(workdir(tmp_path, block.doc))
    for cmd in block.commands:
        rc, output = run(cmd, tmp_path)
        fails = any(x.startswith("error:") for x in cmd.expected)
        assert (rc != 0) == fails, f"{block.id}: `{' '.join(cmd.argv)}` exited {rc}:\n{output}"
        missing = lines_in_order(cmd.expected, output)
        assert not missing, f"{block.id}: `{' '.join(cmd.argv)}` no longer prints {missing}; it printed:\n{output}"


def test_the_blocks_not_run_are_exactly_those_marked() -> None:
    marked = {b.id: b.not_run for b in SHELL_BLOCKS if b.not_run is not None}
    assert all(marked.values()), f"a not-run marker without its reason: {marked}"
    hiding = [b.id for b in SHELL_BLOCKS if b.not_run is not None and runnable(b)]
    assert not hiding, f"marked not-run, but every command in them can run here: {hiding}"
    unmarked = [(b.id, [why_not_runnable(c) for c in b.commands]) for b in RUN if not runnable(b)]
    assert not unmarked, f"neither runnable nor marked <!-- not-run: REASON -->: {unmarked}"
    assert len(RUN) >= 10 and len(marked) >= 10, (len(RUN), len(marked))
    named = {f for reason in marked.values() for f in re.findall(r"tests/[\w/]+\.py", reason)}
    assert named and all((REPO / f).is_file() for f in named), f"a reason names a test file that is not there: {named}"


def test_every_marker_sits_right_before_a_block() -> None:
    for doc in docs():
        markers = [x for x in doc.read_text().splitlines() if NOT_RUN.match(x.strip()) or FILE.match(x.strip())]
        attached = [b for b in blocks(doc) if b.not_run is not None or b.file is not None]
        assert len(markers) == len(attached), f"{doc}: a marker before no block"


def test_no_command_block_escapes_the_collector() -> None:
    untagged = [b.id for d in docs() for b in blocks(d) if b.lang == "" and b.text.strip()
                and COMMAND_START.match(b.text.lstrip())]
    assert not untagged, f"tag these command blocks ```bash: {untagged}"


def test_the_demo_is_marked_as_run_by_its_own_tests() -> None:
    """`rewarm demo` takes minutes and tests/demo runs it: a block that only the demo keeps from running says so."""
    def demo_only(b: Block) -> bool:
        kept_out = [c for c in b.commands if why_not_runnable(c) is not None]
        return bool(kept_out) and all((rewarm_args(c.argv) or ("",))[:1] == ("demo",) for c in kept_out)

    demo = [b for b in SHELL_BLOCKS if demo_only(b)]
    assert demo and all((b.not_run or "").startswith("run by tests/demo/test_demo_smoke.py") for b in demo), \
        [(b.id, b.not_run) for b in demo]


def test_the_tokenize_example_tokenizes_the_training_source() -> None:
    """The docs' `rewarm tokenize ... --source slimpajama` needs SlimPajama to run; what it names is checked:
    the config has slimpajama as a training source and a validation set, and the name means the training one."""
    from rewarm.config import load
    from rewarm.data.megatron.tokenize import find_source

    (block,) = [b for b in SHELL_BLOCKS if any(c.argv[:2] == ("rewarm", "tokenize") and "--source" in c.argv
                                               for c in b.commands)]
    sources = [(c.argv[2], c.argv[c.argv.index("--source") + 1]) for c in block.commands]
    assert [s for _, s in sources] == ["slimpajama", "val.slimpajama"]
    for config, source in sources:
        cfg = load(REPO / config)
        assert "slimpajama" in cfg.data.train and "slimpajama" in cfg.data.val
        split = "val" if source.startswith("val.") else "train"
        assert find_source(cfg.data, source) == (f"data.{split}.slimpajama", getattr(cfg.data, split)["slimpajama"]), source
