"""`mkdocs build --strict` builds the site (a broken link, a missing page, an API reference that no longer
resolves fails it), with the configuration reference and the API pages generated from the code; the README's
links into the site resolve on GitHub too."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docs_blocks import REPO
from markdown.extensions.toc import slugify

from rewarm.config_doc import rows

MKDOCS = Path(sys.executable).parent / "mkdocs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert MKDOCS.is_file(), f"no {MKDOCS}: mkdocs is in the dev extra (pip install -e '.[dev]')"
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    p = subprocess.run([str(MKDOCS), "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    print(f"mkdocs build --strict: {time.perf_counter() - start:.1f} s")
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def test_site_builds_strict(site: Path) -> None:
    for name in ("getting-started", "study", "schedules", "data", "pretokenized", "training", "resuming", "slurm",
                 "tasks", "sweeps", "performance", "configuration", "security", "architecture", "benchmarks"):
        assert (site / name / "index.html").is_file(), name
    assert (site / "img" / "schedules.png").is_file() and (site / "img" / "study-tradeoff.png").is_file()


def test_the_configuration_page_lists_every_key_from_the_code(site: Path) -> None:
    text = html.unescape(page(site, "configuration"))
    keys = [key for key, _, _ in rows()]
    assert len(keys) > 50
    missing = [k for k in keys if f"<code>{k}</code>" not in text]
    assert not missing, missing
    assert "<!-- config-reference -->" not in text


@pytest.mark.parametrize("md", sorted((REPO / "docs" / "api").glob("*.md")), ids=lambda p: p.name)
def test_api_pages_render_their_modules(site: Path, md: Path) -> None:
    modules = re.findall(r"^::: (\S+)$", md.read_text(), re.M)
    text = page(site, f"api/{md.stem}") if md.stem != "index" else (site / "api" / "index.html").read_text()
    for mod in modules:
        assert f'id="{mod}"' in text, mod
        assert re.search(rf'id="{re.escape(mod)}\.\w+', text), f"{mod}: no member rendered"


def test_benchmarks_is_a_page_the_performance_page_links(site: Path) -> None:
    assert "step_overhead=" in page(site, "benchmarks")
    assert 'href="../benchmarks/"' in page(site, "performance")


def anchors(md: Path) -> set[str]:
    return {slugify(h, "-") for h in re.findall(r"^#{1,6} (.+?)\s*$", md.read_text(), re.M)}


def test_the_readmes_links_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [x for x in links if not re.match(r"[a-z]+://", x)]
    assert len(local) >= 15, local
    for link in local:
        path, _, anchor = link.partition("#")
        target = REPO / path if path else REPO / "README.md"
        assert target.is_file(), link
        if anchor:
            assert anchor in anchors(target), f"{link}: no heading with that anchor in {target.name}"
    unlinked = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")} - {x.partition("#")[0] for x in local}
    assert not unlinked, f"pages of the site the README does not link: {unlinked}"
