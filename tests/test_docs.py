"""The README's config reference lists every key of the defaults tree."""
from __future__ import annotations

import os
import re

from conftest import REPO
from finessl.config import get_cfg_defaults


def _keys(node, prefix=""):
    for k, v in node.items():
        if hasattr(v, "items"):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_readme_config_table_has_every_key():
    readme = open(os.path.join(REPO, "README.md")).read()
    documented = set(re.findall(r"^\| `([\w.]+)` \| `", readme, flags=re.M))
    assert set(_keys(get_cfg_defaults())) <= documented
