"""The README's config reference is the one ``scripts/config_table.py`` prints."""
from __future__ import annotations

import os
import sys

from conftest import REPO
from finessl.config import all_keys, get_cfg_defaults

sys.path.insert(0, os.path.join(REPO, "scripts"))
from config_table import rows  # noqa: E402


def test_readme_config_table_is_current_and_complete():
    table = rows()
    assert "\n".join(table) in open(os.path.join(REPO, "README.md")).read(), \
        "README config table is stale: python scripts/config_table.py"
    documented = {line.split("`")[1] for line in table[2:]}
    assert set(all_keys(get_cfg_defaults())) == documented


def _tracked_text_files():
    import subprocess
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.split()
    for rel in listed:
        if rel.endswith((".py", ".md", ".yaml", ".yml", ".sh", ".txt", ".json", ".toml", ".ini")):
            yield rel, open(os.path.join(REPO, rel), encoding="utf-8").read()


def test_docs_the_code_cites_exist_and_nothing_points_outside_the_repository():
    """Code and docs cite the project's own docs/, never a file beside the checkout."""
    outside = ("METHOD.md", "REFERENCE.md", "ASSETS.md", "STYLE.md", "../shared", "/work/",
               "the brief", "brief's", "the bar we set")
    cited = set()
    for rel, text in _tracked_text_files():
        if rel == "tests/test_docs.py":
            continue
        for word in outside:
            assert word not in text.replace("docs/method.md", ""), f"{rel} names {word!r}"
        if "docs/method.md" in text or "docs/differences.md" in text:
            cited.add(rel)
    assert len(cited) > 20  # the code points at its specification
    for doc in ("docs/method.md", "docs/differences.md"):
        assert os.path.isfile(os.path.join(REPO, doc)), doc


def test_method_sections_cited_exist():
    """Every 'docs/method.md §N' in the code names a section the page has."""
    import re
    method = open(os.path.join(REPO, "docs", "method.md"), encoding="utf-8").read()
    sections = set(re.findall(r"^## §(\d)", method, flags=re.M))
    for rel, text in _tracked_text_files():
        for number in re.findall(r"docs/method\.md §(\d)", text):
            assert number in sections, f"{rel} cites docs/method.md §{number}"
