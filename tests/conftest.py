"""Shared fixtures: a tiny CLIP ViT registered with open_clip and a small dataset in
CIFAR-10's real on-disk format, so every test runs the real loaders on CPU."""
from __future__ import annotations

import os
import subprocess
import sys

# Bytecode is written (to the git-ignored __pycache__ folders) even where the environment
# sets PYTHONDONTWRITEBYTECODE (this project's development machine does): the suite starts
# dozens of Python processes (xdist workers, main.py, torchrun ranks, scripts) and each
# would compile FineSSL's 13,000 lines again, and each worker would rewrite the
# asserts of every test module again (a third of its collection).
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VIT = os.path.join(REPO, "tests", "assets", "ViT-Tiny-8.json")


def pytest_configure(config):
    """torch and FineSSL, with every built-in plug-in registered (its config keys in the
    tree), load where tests run: not in pytest-xdist's controller, which only hands
    tests out (loading them there held every worker's start back by seconds). Under
    xdist (pytest.ini runs one worker per core) every test process, and every main.py it
    starts, computes on one thread: one core each, not all of them spinning for every
    worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker and config.getoption("numprocesses", None):
        return
    import torch

    from finessl.config_load import import_builtin_plugins
    import_builtin_plugins()
    if worker:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The tests marked ``long`` first, the rest in their order: started last, one of them
    would keep one worker busy while the others have nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture
def forget_plugins():
    """Plug-ins a test imports in this process are forgotten after it: the keys they
    declare would otherwise be in the config.yaml of every later in-process run, which
    a fresh process (main.py) could not read back."""
    import finessl.config as config
    from finessl.algorithms.base import ALGORITHMS
    from finessl.data.base import DATASETS
    from finessl.models.families import BACKBONES
    from finessl.models.methods import PEFT_METHODS
    saved = (config._C.clone(), dict(config.KEYS), list(config.CROSS_CHECKS),
             list(config.PAIR_REWRITES))
    registries = [(r, dict(r._items)) for r in (ALGORITHMS, DATASETS, BACKBONES, PEFT_METHODS)]
    modules = set(sys.modules)
    yield
    config._C = saved[0]
    for live, old in zip((config.KEYS, config.CROSS_CHECKS, config.PAIR_REWRITES), saved[1:]):
        live.clear()
        live.update(old) if isinstance(live, dict) else live.extend(old)
    for r, items in registries:
        r._items = items
    for name in set(sys.modules) - modules:  # the plug-ins: not the libraries they pulled in
        if not _installed(getattr(sys.modules[name], "__file__", None)):
            del sys.modules[name]


def _installed(path: str | None) -> bool:
    """Whether a module's file belongs to an installed library (or is built in): one
    imported again would register its kernels twice (torch's), so only plug-ins are
    forgotten."""
    if path is None:
        return True
    path = os.path.realpath(path)
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    return any(path.startswith(p + os.sep) for p in prefixes) or \
        path.startswith(os.path.join(REPO, "finessl") + os.sep)


@pytest.fixture(autouse=True)
def figures_not_rasterised(request, monkeypatch):
    """No figure is drawn, and a run sends none to tensorboard: matplotlib's Agg drawing
    is most of a tiny run's time and of a report's, and building the trainer's four
    figures after every epoch was a third of a two-epoch run through main(). The
    report's figures are built but not drawn (PNGs 1 x 1). Every test gets it but those
    marked ``figures``, which look at the drawn images; training is the same draw for
    draw. The trainer's figures are built from every algorithm's history in
    tests/algorithms/test_algorithms_e2e.py, and sent to tensorboard in
    tests/report/test_report.py."""
    if request.node.get_closest_marker("figures"):
        return
    no_rasterising(monkeypatch)


def no_rasterising(monkeypatch, epoch_figures: bool = False) -> None:
    """Figures not drawn (:func:`figures_not_rasterised`), for a fixture of a wider scope
    than a test's (``with pytest.MonkeyPatch.context() as mp``). ``epoch_figures``:
    the trainer's figures are built after every epoch and sent to tensorboard as 4 x 4
    black images."""
    import numpy as np
    from PIL import Image

    from finessl.report import figures
    monkeypatch.setattr(figures, "to_rgb", lambda figure, dpi=56: np.zeros((4, 4, 3), np.uint8))
    monkeypatch.setattr(figures, "save_png",
                        lambda figure, path, dpi=90: Image.new("RGB", (1, 1)).save(path, "PNG"))
    if not epoch_figures:
        monkeypatch.setattr(figures, "epoch_images", lambda *args: {})


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> str:
    """Fake CIFAR-10: 40 train and 20 test images per class, learnable patterns."""
    from fakedata import write_fake_cifar
    root = str(tmp_path_factory.mktemp("cifar10"))
    return write_fake_cifar(root, "cifar10", train_per_class=40, test_per_class=20, seed=0)


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory) -> str:
    """A smaller fake CIFAR-10, one per test module: 12 train and 3 test images per class
    (the data tests, tests/data/)."""
    from fakedata import write_fake_cifar
    return write_fake_cifar(str(tmp_path_factory.mktemp("c10")), "cifar10",
                            train_per_class=12, test_per_class=3)


def tiny_args(cifar_root: str, out: str, **overrides) -> list[str]:
    """KEY VALUE pairs for a fast run of the tiny ViT on the fake CIFAR-10."""
    opts = {
        "DATA.NAME": "CIFAR10", "DATA.DATAPATH": cifar_root, "DATA.DOWNLOAD": "False",
        "DATA.NUM_L": "4", "DATA.NUM_U": "36", "DATA.BATCH_SIZE": "8", "DATA.MU_U": "1",
        "backbone": TINY_VIT, "pretrained": "none", "prec": "fp32",
        "vpt_deep": "True", "vpt_len": "4", "num_epochs": "3", "total_steps": "20",
        "num_workers": "0", "seed": "1", "output_dir": out,
    }
    opts.update({k: str(v) for k, v in overrides.items()})
    return [x for kv in opts.items() for x in kv]


def run_main(args: list[str], env: dict | None = None, timeout: float = 300):
    """``python main.py ARGS`` in a subprocess: (returncode, stdout, stderr)."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args],
                          capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=REPO)
    return proc.returncode, proc.stdout, proc.stderr


def main_inprocess(args: list[str], env: dict | None = None, rasterise: bool = True,
                   epoch_figures: bool = False):
    """``main.main(ARGS)`` in this process: (returncode, stdout, stderr) as :func:`run_main`
    gives them, without the ~5 s a fresh interpreter spends importing torch. Use it where
    the process boundary is not what a test is about (signals, torchrun, a lock held by
    another process and import state need :func:`run_main`). An exception main() does not
    turn into an exit code fails the test with its traceback, where a subprocess would
    print one.

    What a run changes in the process is put back after it: the root logger's handlers
    and level (``finessl.logs.setup_logging`` adds console handlers and the run's
    log.txt), the SIGTERM / SIGUSR1 handlers (``signals.handling``), torch's
    deterministic-algorithms flag (``deterministic True``), the Python, numpy and torch
    RNGs, warnings filters, the working directory and ``os.environ`` (``env`` is set for
    the call only). ``rasterise=False``: figures not drawn, as in a test
    (:func:`figures_not_rasterised`), for the module-scoped fixtures that run before it;
    ``epoch_figures`` as :func:`no_rasterising` takes it."""
    if not rasterise:
        with pytest.MonkeyPatch.context() as patch:
            no_rasterising(patch, epoch_figures)
            return main_inprocess(args, env)
    import contextlib
    import io
    import logging
    import random
    import signal
    import warnings

    import numpy as np
    import torch

    import main
    from finessl.engine import signals
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    handlers_of = {s: signal.getsignal(s) for s in signals.SIGNALS}
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    rngs = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cwd, environ = os.getcwd(), dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(HF_HUB_OFFLINE="1", **(env or {}))
        os.chdir(REPO)
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                rc = main.main(list(args))
            except SystemExit as e:  # argparse: --help or a usage error
                rc = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for s, handler in handlers_of.items():
            assert signal.getsignal(s) is handler, f"main() left a handler of {s!r}"
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        random.setstate(rngs[0])
        np.random.set_state(rngs[1])
        torch.set_rng_state(rngs[2])
    return rc, out.getvalue(), err.getvalue()


def wait_for_text(path: str, text: str, timeout: float = 300) -> None:
    """Block until ``text`` appears in the file at ``path`` (e.g. a run's log.txt)."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.01)
    raise TimeoutError(f"{text!r} never appeared in {path}")
