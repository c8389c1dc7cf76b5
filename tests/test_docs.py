"""The documentation a user reads: every relative link resolves (file and heading anchor), the
README stays a page for users, and no internal development history leaks into it."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from .conftest import REPO

DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "benchmarks").glob("*.md")),
    REPO / "examples" / "README.md",
]
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (code lines become empty: numbering is kept)."""
    out, fence = [], None
    for line in text.splitlines():
        m = re.match(r"^\s*(```+|~~~+)", line)
        if m:
            if fence is None:
                fence = m.group(1)[:3]
            elif line.strip().startswith(fence):
                fence = None
            out.append("")
            continue
        out.append("" if fence else line)
    return out


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    h = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    h = "".join(c for c in h if c in " -_" or unicodedata.category(c)[0] in "LN")
    return h.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(2))
            seen[slug] = seen.get(slug, 0) + 1
    return {s if i == 0 else f"{s}-{i}" for s, n in seen.items() for i in range(n)}


def test_slugs_follow_github():
    assert (
        _slug("`gpt2chat serve`: an OpenAI-compatible API")
        == "gpt2chat-serve-an-openai-compatible-api"
    )
    assert _slug("Several processes, GPUs and machines") == "several-processes-gpus-and-machines"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for number, line in enumerate(_prose_lines(page.read_text(encoding="utf-8")), 1):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"line {number}: {target} (no such file)")
            elif anchor and (dest.suffix != ".md" or anchor not in _anchors(dest)):
                broken.append(f"line {number}: {target} (no such heading)")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_readme_is_a_page_for_users():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400
    assert text.index("## Quick start") < text.index("## Python API")
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_numbers_name_a_machine_and_date_not_a_development_round(page):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"\b(session|round|iteration) \d+\b", text, re.IGNORECASE)
    assert not re.search(r"\b(earlier|previous|last) sessions?\b", text, re.IGNORECASE)
