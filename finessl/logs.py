"""Logging: messages on stderr, and the same with timestamps in ``<run>/log.txt``."""
from __future__ import annotations

import logging
import os
import sys


class _QuietLibraries(logging.Filter):
    """Hide open_clip's INFO chatter (it logs through the root logger) on the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}open_clip{os.sep}" not in record.pathname


def setup_logging(run_dir: str | None = None) -> None:
    """Console handler once; with ``run_dir``, also append to ``run_dir/log.txt``
    (appending keeps the history of a resumed run)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(getattr(h, "finessl", None) == "console" for h in root.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        console.addFilter(_QuietLibraries())
        console.finessl = "console"
        root.addHandler(console)
    if run_dir:
        path = os.path.abspath(os.path.join(run_dir, "log.txt"))
        if any(getattr(h, "baseFilename", None) == path for h in root.handlers):
            return
        handler = logging.FileHandler(path, mode="a")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
