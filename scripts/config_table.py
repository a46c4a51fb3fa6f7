"""Print the README's config reference (a markdown table) from finessl/config.py.

    python scripts/config_table.py > /tmp/table.md   # paste under "## Configuration"

Each ``_C.<key> = <default>  # <meaning>`` line of the defaults tree is one row;
tests/test_docs.py checks the README lists every key.
"""
from __future__ import annotations

import os
import re

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "finessl", "config.py")


def rows() -> list[str]:
    out = ["| key | default | meaning |", "|---|---|---|"]
    for line in open(CONFIG):
        m = re.match(r"_C\.([\w.]+) = (.*?)\s+# (.*)$", line.rstrip())
        if m:
            out.append(f"| `{m.group(1)}` | `{m.group(2)}` | {m.group(3)} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
