"""Every relative link in README.md and docs/**/*.md resolves to a file, and its #anchor to a
heading of that page (GitHub's slugs), so moving a page cannot silently break the docs."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CODE_BLOCK = re.compile(r"```.*?```", flags=re.S)


def slug(heading: str) -> str:
    heading = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
    out, seen = set(), {}
    for heading in re.findall(r"^#+\s+(.*)$", CODE_BLOCK.sub("", page.read_text()), flags=re.M):
        s = slug(heading)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def broken_links(page: pathlib.Path) -> list[str]:
    bad = []
    for link in re.findall(r"\]\(([^)\s]+)\)", CODE_BLOCK.sub("", page.read_text())):
        if re.match(r"^[a-z]+://", link) or link.startswith("mailto:"):
            continue
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page.resolve()
        if not target.exists():
            bad.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            bad.append(f"{link}: no heading #{fragment}")
    return bad


def test_the_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) [bad anchor](#nope)\n")
    assert broken_links(page) == ["missing.md: no such file", "#nope: no heading #nope"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_no_machine_paths_in_the_docs():
    machine = re.compile(r"(?<![\w.])/(?:tmp|work|check|home)/")
    found = [f"{p.relative_to(ROOT)}:{i + 1}" for p in PAGES
             for i, line in enumerate(p.read_text().splitlines()) if machine.search(line)]
    assert found == []
