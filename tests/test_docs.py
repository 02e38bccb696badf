"""The manual (docs/, mkdocs.yml) and the README, its front door: the site builds with `mkdocs build --strict`
(a broken link, a missing anchor or page, a page left out of the nav fails), every nav page exists and every
page is in the nav, the README stays short and its links resolve, and neither names a test function or test
file (they rot on rename: the manual cites behaviour, not tests)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import IN_CI, ROOT

DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
README = ROOT / "README.md"
README_MAX_LINES = 250
# metric and column names, and the housing task's tensors, share the prefix with test functions
NOT_TEST_NAMES = {"test_loss", "test_accuracy", "test_metric", "test_metrics", "test_x", "test_y", "test_tokens"}
TEST_NAME = re.compile(r"\btest_[a-z0-9_]+")


def _require_mkdocs() -> None:
    missing = [m for m in ("mkdocs", "material") if importlib.util.find_spec(m) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (the `test` extra has mkdocs and mkdocs-material)"
        if IN_CI:
            pytest.fail(f"{message}; under CI=true the manual must build")
        pytest.skip(message)


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, not a build warning
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, env=env, timeout=300)


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _config() -> dict:
    return yaml.safe_load(MKDOCS_YML.read_text())


def _doc_pages() -> list[str]:
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def test_the_manual_builds_strictly_without_a_warning(tmp_path):
    _require_mkdocs()
    site = tmp_path / "site"
    result = _build(MKDOCS_YML, site)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    assert not re.search(r"^(WARNING|ERROR)\b", output, re.M), output
    for page in _doc_pages():  # every page rendered, the front page as index.html
        html = site / (page[:-3] + ("/index.html" if not page.endswith("index.md") else ".html"))
        assert html.is_file(), f"{page} was not rendered ({html})"


def test_a_broken_link_or_anchor_fails_the_strict_build(tmp_path):
    """The strict settings really bite: a copy of the manual with one broken link, then one missing anchor."""
    _require_mkdocs()
    for broken in ("[gone](no-such-page.md)", "[gone](cli.md#no-such-section)"):
        copy = tmp_path / broken.split("(")[1][:6]
        shutil.copytree(DOCS, copy / "docs")
        shutil.copy(MKDOCS_YML, copy / "mkdocs.yml")
        with open(copy / "docs" / "index.md", "a") as f:
            f.write(f"\n{broken}\n")
        result = _build(copy / "mkdocs.yml", copy / "site")
        assert result.returncode != 0, f"a broken link {broken} did not fail the build:\n{result.stderr}"
        assert "index.md" in result.stdout + result.stderr


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    config = _config()
    assert config["theme"]["name"] == "material"
    assert config.get("docs_dir", "docs") == "docs"
    nav = _nav_pages(config["nav"])
    assert len(nav) == len(set(nav)), f"a page is in the nav twice: {nav}"
    missing = [page for page in nav if not (DOCS / page).is_file()]
    assert not missing, f"the nav names pages that do not exist: {missing}"
    left_out = sorted(set(_doc_pages()) - set(nav))
    assert not left_out, f"pages not in mkdocs.yml's nav: {left_out}"


def test_the_readme_is_the_front_door_short_and_its_links_resolve():
    text = README.read_text()
    lines = text.count("\n") + (not text.endswith("\n"))
    assert lines < README_MAX_LINES, f"README.md has {lines} lines (under {README_MAX_LINES}: details go in docs/)"
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert any(t.startswith("docs/") for t in local), "the README links to no page of the manual"
    broken = [t for t in local if t and not (ROOT / t).exists()]
    assert not broken, f"README.md links to files that do not exist: {broken}"
    linked = {t for t in local if t.startswith("docs/") and t.endswith(".md")}
    unlinked = sorted(f"docs/{p}" for p in _nav_pages(_config()["nav"]) if f"docs/{p}" not in linked)
    assert not unlinked, f"README.md does not link these pages of the manual: {unlinked}"


def _test_function_names() -> set[str]:
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.add(path.stem)
        try:
            tree = ast.parse(path.read_text(), str(path))
        except SyntaxError:  # a test file being edited: its own run reports it
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_the_readme_and_the_manual_name_no_test_function_or_test_file():
    defined = _test_function_names()
    assert NOT_TEST_NAMES.isdisjoint(defined), NOT_TEST_NAMES & defined  # else the allowance would hide one
    found = {}
    for path in [README, MKDOCS_YML, *sorted(DOCS.rglob("*.md"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name in set(TEST_NAME.findall(line)) - NOT_TEST_NAMES:
                found.setdefault(f"{path.relative_to(ROOT)}:{number}", []).append(name)
    assert not found, ("name behaviour, not tests (a test's name rots on rename; say what is checked instead): "
                       f"{found}")
