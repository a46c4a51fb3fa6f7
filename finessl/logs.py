"""Logging: progress and results on stdout, warnings and errors on stderr (the
progress bar stays on stderr, as tqdm does), and all of it with timestamps in
``<run>/log.txt``."""
from __future__ import annotations

import logging
import os
import sys


PROGRESS = "finessl.progress"  # per-step lines: log.txt only, the console has the bar


class _ConsoleFilter(logging.Filter):
    """Keep the console readable: no per-step lines, no open_clip INFO chatter (it
    logs through the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == PROGRESS:
            return False
        return record.levelno >= logging.WARNING or f"{os.sep}open_clip{os.sep}" not in record.pathname


class _Console(logging.StreamHandler):
    """One side of the console: records below WARNING (``errors`` False) on stdout, the
    others on stderr. The stream is looked up at each record, so a redirected
    ``sys.stdout`` (a test's capture, a wrapper) gets what follows."""

    def __init__(self, errors: bool):
        super().__init__()
        self.errors = errors
        self.addFilter(lambda record: (record.levelno >= logging.WARNING) == errors)

    @property
    def stream(self):
        return sys.stderr if self.errors else sys.stdout

    @stream.setter
    def stream(self, value):  # logging.StreamHandler sets it; the property decides
        pass


def setup_logging(run_dir: str | None = None, quiet: bool = False) -> None:
    """Console handler once; with ``run_dir``, also append to ``run_dir/log.txt``
    (appending keeps the history of a resumed run). ``quiet``: warnings only (the
    ranks other than 0 of a multi-process run)."""
    root = logging.getLogger()
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(getattr(h, "finessl", None) == "console" for h in root.handlers):
        for errors in (False, True):
            console = _Console(errors)
            console.setFormatter(logging.Formatter("%(message)s"))
            console.addFilter(_ConsoleFilter())
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


def detach_run_log(run_dir: str) -> None:
    """Stop appending to ``run_dir/log.txt`` (the folder of a run that failed in its
    setup is removed)."""
    path = os.path.abspath(os.path.join(run_dir, "log.txt"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "baseFilename", None) == path:
            root.removeHandler(handler)
            handler.close()
