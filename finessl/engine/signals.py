"""Preemption: SIGTERM and SIGUSR1, the signals Slurm, Kubernetes and cloud schedulers
send before they stop a job, end a training run cleanly.

``main.py`` installs the handlers (:func:`handling`). While the trainer's loop runs
(:func:`deferred`) a signal is only recorded: the loop finishes the step it is in,
writes a mid-epoch checkpoint and raises :class:`Preempted`; ``main.py`` exits with
128 + the signal number (143 for SIGTERM, 138 for SIGUSR1), what a shell reports for
a process that signal stopped. Outside the loop (building the model, evaluating a
saved run, predicting) there is nothing to save and the signal stops the process at
once, with the same exit code. SIGINT (Ctrl-C) is left alone: KeyboardInterrupt,
exit 130. Standard library only: ``main.py`` imports it before anything heavy.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class Preempted(Exception):
    """The run stopped on a signal; ``exit_code`` is 128 + its number."""

    def __init__(self, signum: int, message: str):
        self.signum, self.exit_code = signum, 128 + signum
        super().__init__(message)


class _State:
    signum: int | None = None  # the first signal received, until the loop acts on it
    listening = False  # inside the training loop: record, do not interrupt


_state = _State()


def name(signum: int) -> str:
    return signal.Signals(signum).name


def requested() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _state.signum


def _handler(signum, frame) -> None:
    if _state.signum is None:
        _state.signum = signum
    if not _state.listening:
        raise Preempted(signum, f"stopped by {name(signum)} (nothing to save at this point)")


@contextmanager
def handling():
    """Install the handlers for SIGTERM and SIGUSR1 (main thread only), restore the
    previous ones on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.signum, _state.listening = None, False


@contextmanager
def deferred():
    """The training loop: signals are recorded, and :func:`requested` says so at the
    next step boundary."""
    _state.signum, _state.listening = None, True
    try:
        yield
    finally:
        _state.listening = False
