"""The documentation: the config reference in docs/configuration.md is the one
``scripts/config_table.py`` generates, links between pages resolve, and no file names
anything outside the repository."""
from __future__ import annotations

import glob
import os
import re
import subprocess

import pytest

from conftest import REPO
from finessl.config import all_keys, get_cfg_defaults

from scripts import config_table

CONFIG_DOC = os.path.join(REPO, "docs", "configuration.md")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_config_reference_is_current_and_complete():
    table = config_table.rows()
    assert config_table.documented_rows(_read(CONFIG_DOC)) == table, \
        "docs/configuration.md config table is stale: python scripts/config_table.py --write"
    documented = {line.split("`")[1] for line in table[2:]}
    assert set(all_keys(get_cfg_defaults())) == documented


def test_config_table_check_catches_a_stale_or_incomplete_table(tmp_path, monkeypatch):
    text = _read(CONFIG_DOC)
    assert config_table.main(["--check"]) == 0
    row = config_table.rows()[2]
    stale = {"missing row": text.replace(row + "\n", ""),
             "changed default": text.replace(row, row.replace("` |", "X` |", 1)),
             "extra row": text.replace(row, row + "\n| `OLD.KEY` | `1` | gone |")}
    for what, broken in stale.items():
        assert broken != text, what
        doc = tmp_path / "configuration.md"
        doc.write_text(broken, encoding="utf-8")
        monkeypatch.setattr(config_table, "DOC", str(doc))
        assert config_table.main(["--check"]) == 1, what
        assert config_table.main(["--write"]) == 0
        assert doc.read_text(encoding="utf-8") == text, what
    with pytest.raises(ValueError):
        config_table.documented_rows(text.replace(config_table.END, ""))


def test_readme_is_an_overview():
    """The README stays short; the detail lives in docs/."""
    assert os.path.getsize(os.path.join(REPO, "README.md")) < 10240
    assert "| `DATA.NAME` |" not in _read(os.path.join(REPO, "README.md"))


def _doc_pages() -> list[str]:
    return [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _anchors(path: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", _without_code_blocks(_read(path)),
                              flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def test_relative_links_between_pages_resolve():
    """Every relative link in README.md and docs/*.md names an existing file (and, for a
    markdown page, an existing heading when it carries an anchor)."""
    checked = 0
    for page in _doc_pages():
        rel_page = os.path.relpath(page, REPO)
        for target in LINK.findall(_without_code_blocks(_read(page))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            assert full == REPO or full.startswith(REPO + os.sep), f"{rel_page}: {target} leaves the repository"
            assert os.path.exists(full), f"{rel_page}: {target} does not exist"
            if anchor and full.endswith(".md"):
                assert anchor in _anchors(full), f"{rel_page}: {target} names no heading"
            checked += 1
    assert checked > 20


def test_docs_index_lists_every_page():
    index = _read(os.path.join(REPO, "docs", "README.md"))
    for page in glob.glob(os.path.join(REPO, "docs", "*.md")):
        name = os.path.basename(page)
        if name != "README.md":
            assert f"]({name})" in index, f"docs/README.md does not link {name}"


def _tracked_text_files():
    """Tracked files, and new files git does not ignore (they are about to be tracked)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in sorted(set(listed)):
        path = os.path.join(REPO, rel)
        if os.path.isfile(path) and rel.endswith((".py", ".md", ".yaml", ".yml", ".sh", ".txt",
                                                  ".json", ".toml", ".ini")):
            yield rel, _read(path)


def test_docs_the_code_cites_exist_and_nothing_points_outside_the_repository():
    """Code and docs cite the project's own docs/, never a file beside the checkout."""
    # Spelled in pieces, so this file names none of them either.
    outside = tuple(f"{stem}.md" for stem in ("METHOD", "REFERENCE", "ASSETS", "STYLE")) + (
        "../" + "shared", "/" + "work/", "the " + "brief", "brief" + "'s", "the bar " + "we set")
    cited = set()
    for rel, text in _tracked_text_files():
        for word in outside:
            assert word not in text.replace("docs/method.md", ""), f"{rel} names {word!r}"
        if "docs/method.md" in text or "docs/differences.md" in text:
            cited.add(rel)
    assert len(cited) > 20  # the code points at its specification
    for doc in ("docs/method.md", "docs/differences.md"):
        assert os.path.isfile(os.path.join(REPO, doc)), doc


def test_method_sections_cited_exist():
    """Every 'docs/method.md §N' in the code names a section the page has."""
    method = _read(os.path.join(REPO, "docs", "method.md"))
    sections = set(re.findall(r"^## §(\d)", method, flags=re.M))
    for rel, text in _tracked_text_files():
        for number in re.findall(r"docs/method\.md §(\d)", text):
            assert number in sections, f"{rel} cites docs/method.md §{number}"
