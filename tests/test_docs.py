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
