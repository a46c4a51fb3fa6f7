"""Shared fixtures: a tiny CLIP ViT registered with open_clip and a small dataset in
CIFAR-10's real on-disk format, so every test runs the real loaders on CPU."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import finessl.config as config
from finessl.algorithms.base import ALGORITHMS
from finessl.config_load import import_builtin_plugins
from finessl.data.base import DATASETS
from finessl.models.families import BACKBONES
from finessl.models.methods import PEFT_METHODS
from fakedata import write_fake_cifar

import_builtin_plugins()  # every built-in plug-in registered, its config keys in the tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VIT = os.path.join(REPO, "tests", "assets", "ViT-Tiny-8.json")

# Under pytest-xdist (pytest.ini runs one worker per core) every test process, and every
# main.py it starts, computes on one thread: one core each, not all of them spinning
# for every worker.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture
def forget_plugins():
    """Plug-ins a test imports in this process are forgotten after it: the keys they
    declare would otherwise be in the config.yaml of every later in-process run, which
    a fresh process (main.py) could not read back."""
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
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> str:
    """Fake CIFAR-10: 40 train and 20 test images per class, learnable patterns."""
    root = str(tmp_path_factory.mktemp("cifar10"))
    return write_fake_cifar(root, "cifar10", train_per_class=40, test_per_class=20, seed=0)


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


def wait_for_text(path: str, text: str, timeout: float = 300) -> None:
    """Block until ``text`` appears in the file at ``path`` (e.g. a run's log.txt)."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.01)
    raise TimeoutError(f"{text!r} never appeared in {path}")
