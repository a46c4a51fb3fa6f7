"""Preemption: SIGTERM or SIGUSR1 (what Slurm and cloud schedulers send before they stop
a job) ends a run after the step in progress, with a mid-epoch checkpoint, a line in
log.txt and exit code 128 + the signal; resuming from it ends bit-identical to a run
never interrupted. Outside the training loop the signal stops the process at once."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from conftest import main_inprocess, tiny_args
from finessl.config_load import load_config
from finessl.engine import signals
from finessl.engine.checkpoint import LAST, PREV
from finessl.engine.run import restore
from finessl.engine.trainer import Trainer


def assert_same(a, b, where="state"):
    """Equal to the bit: tensors by torch.equal, containers entry by entry."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_run(a: dict, b: dict) -> None:
    for key in ("epoch", "step", "global_step", "model", "optimizer", "scheduler", "algorithm"):
        assert_same(a[key], b[key], key)
    assert [r["top1"] for r in a["history"]] == [r["top1"] for r in b["history"]]


def load(path) -> dict:
    return torch.load(path, weights_only=True)


def test_outside_the_training_loop_a_signal_stops_at_once_and_sigint_is_left_alone():
    before, term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with signals.handling():
        assert signal.getsignal(signal.SIGINT) is before
        with pytest.raises(signals.Preempted) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between two bytecodes
                pass
    assert e.value.exit_code == 143 and "stopped by SIGTERM" in str(e.value)
    assert signal.getsignal(signal.SIGTERM) is term  # put back as it was
    assert signals.requested() is None


def _trainer(cifar_root, folder, write_split=True):
    cfg = load_config(None, tiny_args(cifar_root, str(folder), num_epochs=2, total_steps=6,
                                      seed=3, print_freq=4))
    return Trainer(cfg, str(folder), seed=3, write_split=write_split)


@pytest.mark.slow  # three short runs in this process
@pytest.mark.parametrize("when, saved", [("mid-epoch", (1, 2)), ("last step", (0, 6)),
                                         ("evaluation", (1, 0))])
def test_sigusr1_in_process_stops_cleanly_and_resume_is_exact(cifar_root, tmp_path, when,
                                                               saved):
    reference = _trainer(cifar_root, tmp_path / "reference")
    reference.fit()

    stopped = _trainer(cifar_root, tmp_path / "stopped")
    step, calls = stopped.algorithm.train_step, [0]

    def signal_at(batch):
        calls[0] += 1
        if calls[0] == {"mid-epoch": 8, "last step": 6}.get(when):
            os.kill(os.getpid(), signal.SIGUSR1)
        return step(batch)
    stopped.algorithm.train_step = signal_at
    if when == "evaluation":
        evaluate = stopped.evaluate

        def signal_in_evaluation():
            os.kill(os.getpid(), signal.SIGUSR1)
            return evaluate()
        stopped.evaluate = signal_in_evaluation
    with signals.handling(), pytest.raises(signals.Preempted) as e:
        stopped.fit()
    assert e.value.exit_code == 138 and "stopped by SIGUSR1" in str(e.value)
    state = load(tmp_path / "stopped" / LAST)
    assert (state["epoch"], state["step"]) == saved

    resumed = _trainer(cifar_root, tmp_path / "stopped", write_split=False)
    restore(resumed, str(tmp_path / "stopped"))
    resumed.fit()
    assert_same_run(load(tmp_path / "reference" / LAST), load(tmp_path / "stopped" / LAST))


@pytest.mark.slow  # three short runs in this process
def test_sigterm_mid_epoch_two_then_resume_is_bit_identical(cifar_root, tmp_path, monkeypatch,
                                                           figures_not_rasterised):
    """main() stopped by SIGTERM after step 7 of epoch 2: exit code 143, the last line
    on stderr and in log.txt, a mid-epoch checkpoint; resumed (with loader workers), the
    run ends bit-identical to one never stopped. (The signal from outside a real
    process, and its exit status in the shell: the quick start of
    tests/test_first_hour.py.)"""
    settings = dict(num_epochs=2, total_steps=20, seed=5, print_freq=5)
    reference = tmp_path / "reference"
    code, _, err = main_inprocess(tiny_args(cifar_root, str(reference), **settings))
    assert code == 0, err

    real, steps = Trainer.optimizer_step, [0]

    def sigterm_in_step(self, *args, **kwargs):  # in step 7 of epoch 2: it ends, then the stop
        steps[0] += 1
        if steps[0] == 20 + 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "optimizer_step", sigterm_in_step)
    run = tmp_path / "preempted"
    code, _, err = main_inprocess(tiny_args(cifar_root, str(run), **settings))
    monkeypatch.setattr(Trainer, "optimizer_step", real)
    assert code == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM at epoch 2/2 step 7/20:") and f"'resume {run}'" in last
    assert f"WARNING {last}" in (run / "log.txt").read_text()
    state = load(run / LAST)
    assert (state["epoch"], state["step"]) == (1, 7)
    assert (load(run / PREV)["epoch"], load(run / PREV)["step"]) == (1, 0)
    assert not (run / "results.json").exists()

    # resume with loader workers: the skipped batches and the augmentations do not depend on them
    code, out, err = main_inprocess(tiny_args(cifar_root, str(run), **settings, num_workers=2)
                                    + ["resume", str(run)])
    assert code == 0, err
    assert f"resumed from {run / LAST} at epoch 1 step {state['step']}" in out  # progress: stdout
    assert_same_run(load(reference / LAST), load(run / LAST))
    assert (run / "results.json").exists()
