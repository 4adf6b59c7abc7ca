"""Every reference in the repository resolves in a clone: a citation of ``docs/<file>.md#<anchor>``
names a file and a heading that exist, links between the documents resolve, and nothing cites a
document or a tracker entry that lives outside the repository (the product brief's and the house
style's section numbers, or an issue number). See docs/design/layout.md#comments-and-references.

The forbidden patterns are built from parts, so this file does not match itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT as ROOT, tracked_files

_BRIEF, _STYLE, _SECTION = "SP" + "EC", "CONVEN" + "TIONS", "\u00a7"
OUTSIDE = re.compile(
    "|".join(
        [
            rf"\b{_BRIEF}\s*{_SECTION}",  # a section of the product brief, also across a line break
            rf"\b{_BRIEF}\.md\b",
            rf"\b{_STYLE}\s*{_SECTION}",
            r"\b[Ii]ssues?\s+#?\d+",  # a tracker entry by number
        ]
    )
)
# docs/<path>.md, optionally #anchor, cited from anywhere (code, templates, the README, the docs).
CITATION = re.compile(r"(?<![\w/.-])(docs/[\w./-]*?\.md)(?:#([\w-]+))?")
# A relative Markdown link in a Markdown file: [text](path.md#anchor), [text](#anchor).
LINK = re.compile(r"\]\((?!https?:|mailto:)([^)\s#]*)(?:#([^)\s]*))?\)")
BINARY = {".png", ".jpg", ".ico", ".gz", ".sqlite3", ".woff", ".woff2"}


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: a link keeps its text; lower case; everything but
    letters, digits, ``_``, ``-`` and spaces dropped; spaces become ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors_of(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown document (a repeated heading gets ``-1``, ``-2``…)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def _texts(paths: list[Path]) -> dict[Path, str]:
    texts = {}
    for path in paths:
        if path.suffix in BINARY or not path.is_file():
            continue
        try:
            texts[path] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


class Documents:
    """The repository's Markdown files and their anchors, read once per check."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._anchors: dict[Path, set[str] | None] = {}

    def anchors(self, path: Path) -> set[str] | None:
        """The anchors of ``path``, or None when there is no such file."""
        path = path.resolve()
        if path not in self._anchors:
            self._anchors[path] = anchors_of(path.read_text(encoding="utf-8")) if path.is_file() else None
        return self._anchors[path]

    def problem(self, target: Path, anchor: str | None) -> str | None:
        anchors = self.anchors(target)
        if anchors is None:
            return "no such file"
        if anchor and anchor not in anchors:
            return f"no heading with the anchor #{anchor}"
        return None


def unresolved(texts: dict[Path, str], root: Path) -> list[str]:
    """Each citation or Markdown link in ``texts`` that does not resolve, as ``file:line: …``."""
    documents = Documents(root)
    problems = []
    for path, text in texts.items():
        where = path.relative_to(root)
        for match in CITATION.finditer(text):
            problem = documents.problem(root / match.group(1), match.group(2))
            if problem:
                problems.append(f"{where}:{_line(text, match.start())}: {match.group(0)}: {problem}")
        if path.suffix != ".md":
            continue
        for match in LINK.finditer(text):
            target, anchor = match.group(1), match.group(2)
            if target and not target.endswith(".md"):
                continue  # a link to code or a directory: not a document anchor
            problem = documents.problem(path.parent / target if target else path, anchor)
            if problem:
                problems.append(f"{where}:{_line(text, match.start())}: ({match.group(1)}#{anchor}): {problem}")
    return problems


def outside_references(texts: dict[Path, str], root: Path) -> list[str]:
    return [
        f"{path.relative_to(root)}:{_line(text, match.start())}: {match.group(0)!r}"
        for path, text in texts.items()
        for match in OUTSIDE.finditer(text)
    ]


def test_every_docs_citation_and_link_resolves():
    problems = unresolved(_texts(tracked_files()), ROOT)
    assert not problems, "these references do not resolve:\n" + "\n".join(problems)


def test_nothing_cites_a_document_or_an_issue_outside_the_repository():
    offenders = outside_references(_texts(tracked_files()), ROOT)
    assert not offenders, "cite docs/<file>.md#<anchor>, an RFC or an AWS page instead:\n" + "\n".join(offenders)


def test_the_code_cites_the_docs():
    """The docs are what the code leans on: a check that found no citation at all would pass vacuously."""
    texts = _texts(tracked_files())
    cited = {
        match.group(1) for path, text in texts.items() if path.suffix == ".py" for match in CITATION.finditer(text)
    }
    assert {"docs/errors.md", "docs/rules.md", "docs/design/pipeline.md"} <= cited


# --- the checks themselves catch what they are for ---------------------------------------------------


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "docs" / "design").mkdir(parents=True)
    (tmp_path / "docs" / "errors.md").write_text(
        "# Errors\n\n## Error responses\n\n```\n# not a heading\n```\n\n## Rate limits\n\n## Rate limits\n"
        "\n### The `aws_tag` function (CEL)\n\n"
        "See [pipeline](design/pipeline.md#the-steps) and [here](#rate-limits-1).\n"
    )
    (tmp_path / "docs" / "design" / "pipeline.md").write_text(
        "# Pipeline\n\n## The steps\n\n[up](../errors.md#errors)\n"
    )
    return tmp_path


def test_slugs_follow_github():
    assert slug("Where the contract is silent: our choices") == "where-the-contract-is-silent-our-choices"
    assert slug("The `aws_tag` function (CEL)") == "the-aws_tag-function-cel"
    assert slug("RFC 8693 token exchange") == "rfc-8693-token-exchange"
    assert slug("Health, metrics and logs") == "health-metrics-and-logs"


def test_resolving_citations_and_links(repo):
    docs = "do" + "cs/"  # built from parts: the repository's own check must not read these as citations
    good = {repo / "code.py": f"# see {docs}errors.md#rate-limits-1 and {docs}errors.md#the-aws_tag-function-cel.\n"}
    good[repo / "docs" / "errors.md"] = (repo / "docs" / "errors.md").read_text()
    good[repo / "docs" / "design" / "pipeline.md"] = (repo / "docs" / "design" / "pipeline.md").read_text()
    assert unresolved(good, repo) == []

    bad = {
        repo / "code.py": f"# {docs}errors.md#not-a-heading, {docs}errors.md#rate-limits-2, {docs}missing.md\n"
        "url = 'https://docs.aws.amazon.com/x.md'  # not ours\n",
        repo / "docs" / "design" / "pipeline.md": "[gone](../errors.md#nope) [file](../nothing.md) [self](#nowhere)\n",
    }
    problems = unresolved(bad, repo)
    assert len(problems) == 6, problems
    assert any("#not-a-heading" in p for p in problems) and any(
        f"{docs}missing.md: no such file" in p for p in problems
    )


def test_outside_references_are_found(repo):
    section = "\u00a7"
    texts = {
        repo / "a.py": f"# as the {'SP' + 'EC'} {section}3 says\n",
        repo / "b.py": f'"""see {"SP" + "EC"}\n    {section}11 and {"CONVEN" + "TIONS"} {section}4"""\n',
        repo / "c.html": f"<!-- {'SP' + 'EC'}.md -->\n",
        repo / "d.py": "# found in " + "issue" + " 17, and " + "Issue" + " 8 " + section + "3\n",
        repo / "e.py": "# an issuer 3 times; the issues list; SPEC_EXAMPLE; KEY_SPECS; https://docs.aws.amazon.com/\n",
    }
    found = outside_references(texts, repo)
    assert len(found) == 6, found
    assert not [f for f in found if f.startswith("e.py")]
