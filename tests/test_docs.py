"""The README and docs/ pages: every relative link points to a file that exists (and a heading
that exists, for `page.md#anchor`), every repository path they name exists, every page is linked
from the README, and the README stays a front door (under 300 lines)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
# A file path in the repository's own source folders (or a top-level file), wherever a page
# names one: `stdformer/numerics.py`, `python benchmarks/predict.py`, `tests/test_x.py::test_y`.
# Placeholders (`gpu-<device>.json`) and generated folders (`data/`, `plots/`) are not paths.
SOURCE_FILE = re.compile(
    r"(?<![\w./<-])((?:stdformer|stages|flows|tests|benchmarks|configs|docs|\.ci)/[\w./-]*?"
    r"\.(?:py|yaml|yml|sh|md|toml|txt|json|png))(?![\w/<>*-])")
SOURCE_DIR = re.compile(r"(?<![\w./<-])((?:stdformer|stages|flows)/[\w/]*/)(?![\w<>*-])")
TOP_FILE = re.compile(r"(?<![\w./-])(params\.yaml|dvc\.yaml|dvc\.lock|Makefile|pyproject\.toml|"
                      r"constraints\.txt|LICENSE)(?![\w./-])")


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def code_spans(text: str) -> list[str]:
    """Inline code and fenced blocks: where a page names paths and commands."""
    fenced = FENCE.findall(text)
    return fenced + re.findall(r"`([^`\n]+)`", without_code_blocks(text))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)       # a link's text only
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, title in HEADING.findall(without_code_blocks(page.read_text())):
        anchor = github_anchor(title)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(without_code_blocks(page.read_text())):
        if re.match(r"[a-z]+:", target):                         # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no such heading")
    return broken


def missing_paths(page: Path) -> list[str]:
    named = set()
    for span in code_spans(page.read_text()):
        named.update(SOURCE_FILE.findall(span) + SOURCE_DIR.findall(span) + TOP_FILE.findall(span))
    return sorted(p for p in named if not (REPO / p).exists())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_existing_files_and_headings(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_repository_paths_exist(page):
    assert missing_paths(page) == []


def test_every_docs_page_is_linked_from_the_readme_which_stays_short():
    readme = (REPO / "README.md").read_text()
    linked = {(REPO / t.partition("#")[0]).resolve() for t in LINK.findall(readme)}
    assert [p.name for p in PAGES[1:] if p not in linked] == []
    assert len(readme.splitlines()) < 300


def test_the_checks_find_what_they_look_for(tmp_path):
    """The checkers themselves: a missing file, a missing heading and a missing path (in inline
    code or a code block) are found; URLs, links inside code blocks and placeholders are not."""
    (tmp_path / "other.md").write_text("# Other page\n\n## Same bytes: `dvc.lock` on any CPU\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#same-bytes-dvclock-on-any-cpu) [self](#page) "
        "[web](https://example.org/x) [gone](missing.md) [no anchor](other.md#nowhere)\n\n"
        "`stdformer/numerics.py`, `python benchmarks/nothere.py --x`, `tests/test_docs.py::t`, "
        "`benchmarks/results/gpu-<device>.json`, `flows/nowhere/`, `params.yaml`\n\n"
        "```bash\n[not a link](missing2.md)\npython stages/ghost.py\n```\n")
    assert broken_links(page) == ["missing.md: no such file", "other.md#nowhere: no such heading"]
    assert missing_paths(page) == ["benchmarks/nothere.py", "flows/nowhere/", "stages/ghost.py"]
