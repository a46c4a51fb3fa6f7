"""Logging: progress and results on stdout, warnings and errors on stderr (the
progress bar stays on stderr, as tqdm does), and all of it with timestamps in
``<run>/log.txt``."""
from __future__ import annotations

import contextlib
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
    (appending keeps the history of a resumed run; the file is created by the first
    record, so a run refused before it logs anything leaves none). ``quiet``: warnings only (the
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
        handler = logging.FileHandler(path, mode="a", delay=True)  # made at the first record:
        # a command refused before it logs anything leaves no empty log.txt
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


class _LineEnds:
    """``sys.stderr`` as it was, remembering the last character written through it: a
    progress bar leaves its line unended (``\\r``), and a final line must not be glued
    to it in a log file. Everything else is the wrapped stream's."""

    def __init__(self, stream):
        self._stream = stream
        self.last = "\n"

    def write(self, text):
        if text:
            self.last = text[-1]
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def console_lines():
    """For the life of a command, ``sys.stderr`` remembers how it ends (progress bars and
    the console log write through it); yields :func:`final_line`'s writer."""
    previous = sys.stderr
    if previous is None:  # no console at all (pythonw): nothing to end
        yield lambda text: None
        return
    sys.stderr = tracked = _LineEnds(previous)
    try:
        yield lambda text: final_line(text, tracked)
    finally:
        if sys.stderr is tracked:
            sys.stderr = previous


def final_line(text: str, stream=None) -> None:
    """Print the line a command ends with (``error: ...``, a stop) on stderr as a line of
    its own: live tqdm bars are closed first, and a line left unended is ended (a
    terminal shows a bar's ``\\r`` as a cleared line; a file keeps it as text)."""
    tqdm_std = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(tqdm_std, "tqdm", None), "_instances", ())):
        bar.close()
    stream = stream or sys.stderr
    last = getattr(stream, "last", "\n")
    tty = getattr(stream, "isatty", lambda: False)()
    if last != "\n" and not (last == "\r" and tty):
        stream.write("\n")
    stream.write(text + "\n")
    stream.flush()
