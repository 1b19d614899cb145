"""The documents the code cites ship with the repository, and nothing cites a file the repository lacks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Names of documents that live outside the repository (team notes); users never see them.
UNSHIPPED = re.compile(r"DATA_FORMATS|DESIGN\.md|STYLE\.md|DEVELOPERS\.md|component_architecture|\bshared/")
#: A quoted bare name (``"DESIGN.md"``) lists a forbidden word, as tests of messages do; it cites nothing.
BARE_NAME = re.compile(r"([\"'])(?:DATA_FORMATS|DESIGN\.md|STYLE\.md|DEVELOPERS\.md)\1")
#: A cited document of the repository: ``docs/<name>.md``.
DOC_PATH = re.compile(r"docs/[\w.-]+\.md")
#: Relative Markdown links, ``[text](target)`` without a scheme.
MD_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)#\s]+)")


def _tracked_text_files() -> list[Path]:
    """Return the repository's text files: git's list in a clone, else the tree minus build and cache folders."""
    suffixes = {".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".yml", ".yaml"}
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode == 0:
        paths = [ROOT / name for name in listed.stdout.split()]
    else:  # an unpacked archive
        skip = {".venv", ".git", "cache", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis"}
        paths = [path for path in ROOT.rglob("*") if not skip & set(path.relative_to(ROOT).parts)]
    return [path for path in paths if path.suffix in suffixes and path.is_file() and ".egg-info" not in str(path)]


FILES = _tracked_text_files()


def test_the_contract_sources_and_build_report_docs_ship():
    for name in ("dataset.md", "sources.md", "build_report.md"):
        text = (ROOT / "docs" / name).read_text()
        assert text.startswith("# "), name
    # the section numbers the code cites exist in the documents
    assert "## 2. The Dataset contract" in (ROOT / "docs" / "dataset.md").read_text()
    sources = (ROOT / "docs" / "sources.md").read_text()
    for heading in ("## 4. W&B stores", "**4.3 JSONL export", "## 6. Linking rules", "## 8. Data-quality checklist"):
        assert heading in sources


def test_no_file_cites_a_document_outside_the_repository():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in FILES
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if UNSHIPPED.search(BARE_NAME.sub("", line))
    ]
    assert offenders == []


def test_every_cited_document_and_markdown_link_exists():
    missing = []
    for path in FILES:
        text = path.read_text(errors="replace")
        missing += [
            f"{path.relative_to(ROOT)}: {cited}" for cited in DOC_PATH.findall(text) if not (ROOT / cited).is_file()
        ]
        if path.suffix == ".md":
            links = MD_LINK.findall(text)
            missing += [f"{path.relative_to(ROOT)}: {link}" for link in links if not (path.parent / link).exists()]
    assert missing == []
